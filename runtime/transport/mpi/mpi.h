// The MPI transport: the parameter server on rank 0, a worker group on every
// other rank (--transport mpi, under mpirun).
//
// Messages (MPI_COMM_WORLD, bytes: every rank runs the same build):
//   worker rank -> 0   push      header (worker, tau, batch, loss, finite),
//                                then the flat gradient as one contiguous
//                                message on the worker's own tag
//                      failed    a worker's error text
//                      pull      "worker w wants the latest parameters"
//                      draw      a computation starts (its drawn time, the
//                                sampler's position: the runtime rule and
//                                checkpoints read them)
//                      cancelled a computation was abandoned on a cancel
//                      done      the rank's workers have stopped
//   0 -> worker rank   start     the parameter count and sampler positions
//                      snapshot  the version pulled; then its parameters (one
//                                contiguous message) when the rank does not
//                                hold that version yet
//                      word      pull now, continue, cancel, stop
// SwarmSGD (--variant swarm) has no parameter server: every worker rank holds
// its share of the nodes and exchanges with the others' directly (requests to
// the partner's rank, served by its main thread; see mpi_swarm_rank.cc; rank 0 in mpi_swarm.cc); its nodes report
// each local step to rank 0, which counts them, evaluates the average model it
// gathers, and says when to stop.
// Rank 0 keeps one thread receiving (in arrival order, from any rank), so no
// rank waits on the parameter server while it applies; the update itself is
// the same update loop as in one process. A worker rank's main thread
// receives, its worker threads compute and send.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "runtime/algorithms/swarm.h"
#include "runtime/drivers/driver.h"

namespace adasync {


class MpiWorld {
 public:
  // True when this build has MPI.
  static bool available();
  // MPI_Init_thread (MPI_THREAD_MULTIPLE). Throws UsageError without MPI or
  // without the thread level.
  MpiWorld();
  ~MpiWorld();  // MPI_Finalize
  MpiWorld(const MpiWorld&) = delete;
  MpiWorld& operator=(const MpiWorld&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int worker_ranks() const { return size_ - 1; }
  const std::string& host() const { return host_; }
  // Workers [first, last) of worker rank r (1-based): P spread as evenly as they go.
  std::pair<int, int> workers_of(int r, int P) const;
  int rank_of(int w, int P) const;

  // Collective: true when every rank passes ok.
  bool agree(bool ok);
  // Collective: the ranks whose `s` differs from rank 0's (empty on the others).
  std::vector<int> ranks_differing(const std::string& s);

  // Rank 0: worker ranks are told to stop once, by the run or by this.
  bool workers_stopped = false;
  // Rank 0: a worker rank never confirmed the stop, or a transfer with one was
  // abandoned: the destructor ends the job with MPI_Abort(exit_code), not MPI_Finalize.
  bool unclean = false;
  int exit_code = 1;
  // Rank 0: tells worker ranks that never started to stop, and waits for
  // them (a run that ended before training, or failed). Idempotent.
  void stop_workers();

 private:
  int rank_ = 0, size_ = 1;
  std::string host_;
};

// Rank 0: a real-time run whose workers live on the other ranks (the threads
// driver's counterpart). `positions` are every worker's sampler positions at
// the start (resume).
double run_mpi_ps(DriverSetup& s, MpiWorld& world, const std::vector<uint64_t>& positions);

// A worker rank's group: its workers, global ids first, first + 1, ...
struct WorkerGroup {
  int first = 0;
  std::vector<GradientWorker*> workers;
  std::vector<Sampler>* samplers = nullptr;  // one per local worker
  Straggler* straggler = nullptr;
  const FaultPlan* faults = nullptr;
  Variant variant = Variant::Sync;
  size_t params = 0;
  ParamServer* local = nullptr;  // slots and received snapshots
};
// Waits for rank 0's start, computes until it says stop.
void serve_worker_group(WorkerGroup& g, MpiWorld& world);

// Rank 0 of a SwarmSGD job.
class MpiSwarm : public SwarmState {
 public:
  MpiSwarm(MpiWorld& world, const SwarmConfig& cfg, int nodes, size_t params);
  ~MpiSwarm() override;
  // Before start(): the state a checkpoint holds (SwarmEngine::save's form).
  void restore(const nlohmann::json& j, const Checkpoint& c);
  // Sends every rank the starting model (or its nodes' restored state) and
  // its nodes' sampler positions (every node's, by global id).
  void start(const float* init, const std::vector<uint64_t>& positions);
  // Checkpoints: gathered from the ranks (the nodes go on meanwhile).
  nlohmann::json save(Checkpoint* c) override;
  std::vector<uint64_t> positions() override;
  // Counts the nodes' steps as they are reported until the listener says
  // stop, then stops the nodes (their ranks keep answering until release()).
  double run(SwarmListener& l);
  // x_bar = mean_i x_i and the consensus distance, gathered from the ranks.
  void average(float* out, double* consensus) override;
  // The counters summed over the ranks, as of the last gather (or the stop).
  SwarmStats stats() override;
  // The ranks may end.
  void release();
  // Ranks that did not confirm the stop (run() reported them): their nodes
  // are gone, so neither average() nor save() may be called after.
  const std::vector<int>& lost() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A worker rank's share of the SwarmSGD nodes: global ids first, first + 1, ...
struct SwarmGroup {
  const SwarmConfig* cfg = nullptr;
  int first = 0, nodes = 0;
  std::vector<GradientWorker*> workers;
  std::vector<Sampler>* samplers = nullptr;  // one per local node
  Straggler* straggler = nullptr;
  const FaultPlan* faults = nullptr;  // --inject (node i is worker i)
  size_t params = 0;
  bool shared_memory = true;  // nodes of ranks on this host: averaged in place, not through messages
};
// Waits for rank 0's start, runs its nodes until rank 0 says stop, and serves
// the other ranks' exchanges until rank 0 releases it.
void serve_swarm_group(SwarmGroup& g, MpiWorld& world);

}  // namespace adasync
