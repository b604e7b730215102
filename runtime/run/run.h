// Run: everything a run is made of, set up by the trainer and shared by its
// algorithm (the parameter server, device sync or SwarmSGD), replay, the
// supervisor's actions and the checkpoint state.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/dataset.h"
#include "datasets/sampler.h"
#include "runtime/algorithms/algorithm.h"
#include "runtime/config/config.h"
#include "runtime/drivers/driver.h"
#include "runtime/drivers/worker.h"
#include "runtime/engine/update_loop.h"
#include "runtime/faults.h"
#include "runtime/output.h"
#include "runtime/run/registry.h"
#include "runtime/run/reporter.h"
#include "runtime/run/supervisor.h"
#include "runtime/straggler.h"

namespace adasync {

class MpiWorld;

struct Run {
  TrainConfig cfg;  // momentum and the AdaSync rule resolved
  std::shared_ptr<const DataSplit> data;
  bool use_cuda = false;
  bool device_sync = false;  // sync steps on the GPUs (NCCL), not through the PS
  bool virtual_clock = false;
  int threads = 1;
  std::unique_ptr<ThreadPool> compute_pool, apply_pool;
  std::vector<std::unique_ptr<Context>> contexts;
  std::vector<std::unique_ptr<ModelWorker>> replicas;
  std::unique_ptr<Context> eval_ctx, sample_ctx;
  std::unique_ptr<Evaluator> evaluator, sample_eval;
  std::unique_ptr<Dataset> loss_sample_set;
  std::unique_ptr<ParamServer> ps;
  std::unique_ptr<Aggregator> agg;
  std::unique_ptr<Policy> policy;
  std::unique_ptr<UpdateLoop> loop;
  std::unique_ptr<Straggler> straggler;
  std::vector<Sampler> samplers;
  std::unique_ptr<std::vector<std::atomic<uint64_t>>> positions;  // threads: sampler positions
  FaultPlan faults;
  WallTimer wall;
  int64_t max_samples = 0;
  std::unique_ptr<Reporter> reporter;
  std::unique_ptr<Supervisor> supervisor;
  DirLock dir_lock;
  // Resume.
  double resume_time = 0;
  std::unique_ptr<VirtualState> resume_state;
  std::map<int64_t, SnapshotPtr> resume_snapshots;
  nlohmann::json resume_swarm;  // SwarmSGD's state, read when it is set up
  std::unique_ptr<Checkpoint> resumed;
  MpiWorld* mpi = nullptr;  // --transport mpi, rank 0: the workers are on the other ranks
  StateRegistry registry;  // each part's checkpoint state (register_state)
  std::unique_ptr<Algorithm> algorithm;  // what trains: set up once, read by the supervisor's actions and the end
  bool nothing_ran = false;          // resumed at a limit
  std::string output_error;          // the metrics or trace failed to commit
  std::string run_id;                // written into every checkpoint: the directory's owner
  AggregatorStats stats() const { return algorithm ? algorithm->counts() : agg->stats(); }

  int workers() const { return cfg.workers; }
  // Evaluates `s` (all test samples when final) and reports it.
  EvalResult evaluate(const SnapshotPtr& s, double now, bool final, const nlohmann::json& extra = nlohmann::json::object());
  // The same with the samples counted when `s` was published (-1: now).
  EvalResult evaluate_at(const SnapshotPtr& s, double now, int64_t samples);
};

// Worker w's sampler (the same on whichever rank the worker runs).
Sampler make_sampler(const TrainConfig& c, size_t train_size, int w);
// --augment's settings for this data (off without the flag): the fill is each
// channel's normalised black.
Augmentation make_augmentation(const TrainConfig& c, const DataSplit& d);

// A fixed sample of `images` training images (the loss estimate `sample`).
std::unique_ptr<Dataset> training_sample(const Dataset& train, int images, uint64_t seed);

// The algorithms, set up on a run whose state is restored (resume).
std::unique_ptr<Algorithm> make_ps(Run& r);
std::unique_ptr<Algorithm> make_device_sync(Run& r);
std::unique_ptr<Algorithm> make_swarm(Run& r);
struct SwarmConfig;
SwarmConfig swarm_config(const TrainConfig& c);
// Replay: the settings a trace's header fixes, then its updates re-applied
// (returns the last version).
struct Trace;
void replay_config(const Trace& t, const std::string& file, TrainConfig* cfg);
int64_t replay_trace(Run& r, const Trace& t);

// --transport mpi. start_mpi initialises MPI and checks, on every rank, what
// must hold before any set-up (two or more ranks, the same flags everywhere,
// a worker for every worker rank); null when it does not (rank 0 said why).
// run_worker_rank is the whole life of ranks 1..: set-up, then computing
// until rank 0 says stop; it returns the exit code.
std::unique_ptr<MpiWorld> start_mpi(const TrainConfig& c, int argc, char** argv);
int run_worker_rank(const TrainConfig& c, MpiWorld& world);

}  // namespace adasync
