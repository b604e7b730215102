// SwarmSGD (ALGORITHMS.md section 7): decentralised training with local
// steps and lattice-quantised pairwise averaging. No parameter server: node i
// keeps its own model x_i and samples its own shard.
//
//   loop: take H local SGD steps on x_i (H fixed, or geometric with mean H)
//         pick a neighbour j uniformly on the graph
//         blocking:     x_i, x_j <- (x_i + Q(x_j)) / 2, (x_j + Q(x_i)) / 2
//         non-blocking: x_i <- (s_i + Q(p_j)) / 2 + (x_i - s_i), with p_j the
//                       partner's last published copy and s_i the
//                       initiator's own at its last publication (our rule)
//
// Q is lattice quantisation relative to the receiver's model: the sender
// encodes c = round(x / e) mod q, the receiver with model b decodes
// e c + q e round((b - e c) / (q e)); exact to e/2 per coordinate while
// |x - b| < q e / 2. Messages go in blocks with their own step e and a check
// of the lattice indices (SwarmCodec, our rule): a block the receiver cannot
// decode is sent again at full precision, so nothing is decoded wrongly.
// Messages travel through host buffers, so workers on any device exchange the
// same way. The engine counts every byte each node sends (headers, NACKs and
// blocks sent again included) and how many decoded coordinates still left
// the safe range (zero unless a 32-bit check collides).
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "datasets/sampler.h"
#include "models/layout.h"
#include "runtime/algorithms/gossip.h"
#include "runtime/drivers/driver.h"
#include "runtime/drivers/worker.h"
#include "runtime/faults.h"
#include "runtime/checkpoint.h"
#include "runtime/straggler.h"

namespace adasync {
// ------------------------------------------------------------------ engine
struct SwarmConfig {
  std::string graph = "complete";
  int degree = 4;             // random r-regular graphs
  double local_steps = 4;     // H
  bool geometric = false;     // H geometric with mean H instead of fixed
  bool blocking = true;
  int bits = 0;               // 0: full precision
  double quant_step = 0;      // fixed e; 0: adaptive per block
  size_t quant_block = 1024;  // coordinates per block
  double quant_margin = 0;    // adaptive: the sender's guess at max |x - b| times this (0: 2 blocking, 4 non-blocking)
  float lr = 0.05f;
  uint64_t seed = 1;
  // Which values are batch-norm buffers: a local step folds its own batch
  // statistics into them; an exchange averages them with the model.
  ParamLayout layout;
};

struct SwarmStats {
  int64_t local_steps = 0, interactions = 0;
  int64_t out_of_range = 0;       // decoded coordinates off by more than e/2
  int64_t coordinates_sent = 0;
  int64_t blocks_sent = 0, fallback_blocks = 0;  // quantised blocks; those sent again at full precision
  int64_t fallback_bytes = 0;                     // NACKs and blocks sent again (in bytes_sent too)
  int64_t nonfinite = 0;            // local steps not taken: the gradient was not finite
  std::vector<int64_t> bytes_sent;  // per node
  std::vector<int64_t> steps_by_node;  // steps taken or not (a PS worker's pushes)
  int64_t bytes_total() const;
  // Counters of other nodes (another process's), summed in.
  SwarmStats& operator+=(const SwarmStats& o);
};
// Checkpoints keep the counters under these names.
// (A key missing from an older checkpoint keeps its default.)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SwarmStats, local_steps, interactions, out_of_range, coordinates_sent,
                                                blocks_sent, fallback_blocks, fallback_bytes, bytes_sent, nonfinite,
                                                steps_by_node)

// The far side of exchanges with nodes on other processes (SwarmSGD over
// MPI): the whole protocol of transfer() in each direction, the bytes counted
// as transfer() counts them (out_of_range stays 0: it needs both ends).
class SwarmPeers {
 public:
  virtual ~SwarmPeers() = default;
  // Blocking: node i (here) sends Q(s), s being x_i as it was when the
  // exchange began, with its guess `bound` per block, to node j; receives
  // Q(x_j) decoded relative to s into q, and its bound per block into d.
  virtual void exchange(int i, int j, const float* s, const float* bound, float* q, float* d, TransferCount* to_j,
                        TransferCount* from_j) = 0;
  // Non-blocking: Q(p_j), node j's last published copy, decoded relative to b.
  virtual void fetch(int i, int j, const float* b, float* q, float* d, TransferCount* from_j) = 0;
};

// What a checkpoint takes of a SwarmSGD run: the engine in one process, or
// rank 0 gathering from the worker ranks (MpiSwarm).
class SwarmState {
 public:
  virtual ~SwarmState() = default;
  // The state as JSON, large arrays into `c` as blobs (see SwarmEngine::save).
  virtual nlohmann::json save(Checkpoint* c) = 0;
  // Each node's sampler position (consistent with save()).
  virtual std::vector<uint64_t> positions() = 0;
};

// Callbacks into the trainer: evaluation times and stop conditions.
class SwarmListener {
 public:
  virtual ~SwarmListener() = default;
  // Clock reached `now`; false stops. May call SwarmEngine::average().
  virtual bool on_time(double now) = 0;
  // After each step: the loss of its mini-batch, and whether its gradient
  // was finite (if not, the step was not taken). False stops.
  virtual bool after_step(int node, float loss, bool finite, double now) = 0;
  // Node `node`'s worker failed (its computation threw): the node leaves the
  // graph, `left` nodes of this process go on. False stops.
  virtual bool node_failed(int node, const std::string& what, int left, double now) { return left > 0; }
  // Over MPI: a rank holding nodes [first, last] was lost.
  virtual void rank_lost(int, int, int, const std::string&, double) {}
};

class SwarmEngine : public SwarmState {
 public:
  // workers: one per node (real clock) or one shared (virtual clock).
  // Over MPI a process holds nodes [first, last) of the graph's `nodes`
  // (workers and samplers for those alone) and reaches the others through
  // `peers`; in one process, every node.
  SwarmEngine(const SwarmConfig& cfg, std::vector<GradientWorker*> workers, std::vector<Sampler>* samplers,
              Straggler* straggler, const float* init, size_t n, int nodes, int first = 0, int last = -1,
              SwarmPeers* peers = nullptr);
  ~SwarmEngine();

  double run_virtual(SwarmListener& l);
  double run_real(SwarmListener& l);
  // run_real in parts: start() runs a thread per local node, stop() tells
  // them to stop and waits for them; running() is false once all have ended.
  void start(SwarmListener& l);
  void stop();
  void request_stop() { stop_ = true; }
  bool running() const { return alive_.load() > 0; }
  // A node thread's error (it stops them all): rethrown here, and by run_real.
  void rethrow_error();

  // The far side of an exchange a peer started with local node j: a copy of
  // x_j (blocking) or of its published copy with j's guess at the bound per
  // block (non-blocking; bound may be null with a fixed step).
  void far_state(int j, bool published, float* copy, float* bound);
  // Blocking, either side: x_i moves as if averaged from s, its value when
  // the exchange began, with q: x_i += (s + q) / 2 - s (steps and exchanges
  // since then are kept); published, with d its bound per block.
  void far_average(int i, const float* s, const float* q, const float* d);
  // The models of the local nodes whose worker has not failed, one after
  // another (consistent: all locked).
  std::vector<float> copy_models();
  int first() const { return first_; }
  int last() const { return last_; }

  // Fault injection (--inject): node i's n-th computation is worker i's. Before running.
  void set_faults(const FaultPlan* f) { faults_ = f; }
  // Node i's worker failed before this run (a resumed checkpoint's); before running.
  void set_failed(int i);

  // Sets node i's model (and its published copy); before running.
  void set_model(int i, const float* x);
  // x_bar = mean_i x_i, and the consensus distance mean_i ||x_i - x_bar||^2,
  // over the nodes whose worker has not failed.
  void average(float* out, double* consensus);
  SwarmStats stats();
  const GossipGraph& graph() const { return graph_; }

  // Checkpoints. Virtual clock: the whole state, so a resumed run continues
  // bit for bit: every node's model, published copy, learnt distances, RNG,
  // steps left and pending gradient with its event, the queue's counter, and
  // the node whose step was the last one (its interaction and next start are
  // still to come). Real clock: the models, published copies and distances.
  // Large arrays go into `c` as blobs. Safe while a real-clock run goes on.
  nlohmann::json save(Checkpoint* c) override;
  // Before running.
  void restore(const nlohmann::json& j, const Checkpoint& c);
  // Each local node's sampler position (consistent with save()).
  std::vector<uint64_t> positions() override;
  // A local node's model, published copy and learnt distances (blocks()
  // floats), copied out or in (in: before running).
  void node_state(int i, float* x, float* pub, float* dist);
  void set_node_state(int i, const float* x, const float* pub, const float* dist);
  size_t blocks() const { return blocks_; }
  const SwarmCodec& codec() const { return codec_; }

 private:
  struct Node;
  int draw_steps(int i);
  void interact(int i, double now);
  void interact_far(int i, int j);
  void adopt(Node& a);
  void estimate_bound(const Node& sender, float* bound) const;
  void account(const TransferCount& t, int sender, int receiver);
  int draw_partner(int i);  // -1: every neighbour has left
  // Node i leaves (its worker failed); the listener's word on going on.
  bool fail_node(int i, const std::string& what, double now);

  SwarmConfig cfg_;
  size_t n_;
  GossipGraph graph_;
  SwarmCodec codec_;
  size_t blocks_;
  double margin_;
  std::vector<GradientWorker*> workers_;
  std::vector<Sampler>* samplers_;
  Straggler* straggler_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::mutex stats_mu_;
  SwarmStats stats_;
  bool virtual_ = false;   // run_virtual is running (or ran)
  double vnow_ = 0;        // virtual: the clock and the queue's counter
  uint64_t vseq_ = 0;
  int pending_ = -1;       // virtual: the node that stepped last, its interaction and start to come
  bool resumed_ = false;
  int first_ = 0, last_ = 0;
  SwarmPeers* peers_ = nullptr;
  const FaultPlan* faults_ = nullptr;
  std::atomic<int> live_{0};  // local nodes whose worker has not failed
  CancelSource cancel_;       // stop() cancels the computations (and injected delays) under way
  uint64_t gen_ = 0;          // the generation start() saw
  Node& node(int i) { return *nodes_[size_t(i - first_)]; }
  // start() / stop()
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<int> alive_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
  WallTimer clock_;
  SwarmListener* listener_ = nullptr;
};

}  // namespace adasync
