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
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <pthread.h>

#include <nlohmann/json.hpp>

#include "models/layout.h"
#include "runtime/algorithms/gossip.h"
#include "runtime/checkpoint.h"

namespace adasync {
// ------------------------------------------------------------------ engine
struct SwarmConfig {
  GraphKind graph = GraphKind::Complete;
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
  int64_t by_message = 0;         // interactions with a node reached through messages (over MPI, another host)
  int64_t out_of_range = 0;       // decoded coordinates off by more than e/2
  int64_t coordinates_sent = 0;
  int64_t blocks_sent = 0, fallback_blocks = 0;  // quantised blocks; those sent again at full precision
  int64_t fallback_bytes = 0;                     // NACKs and blocks sent again (in bytes_sent too)
  int64_t nonfinite = 0;            // local steps not taken: the gradient was not finite
  std::vector<int64_t> bytes_sent;  // per node
  std::vector<int64_t> steps_by_node;  // steps taken or not (a PS worker's pushes)
  std::vector<int64_t> taken_by_node;  // steps taken (its counted gradients)
  int64_t bytes_total() const;
  // Counters of other nodes (another process's), summed in.
  SwarmStats& operator+=(const SwarmStats& o);
};
// Checkpoints keep the counters under these names.
// (A key missing from an older checkpoint keeps its default.)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE_WITH_DEFAULT(SwarmStats, local_steps, interactions, out_of_range, coordinates_sent,
                                                blocks_sent, fallback_blocks, fallback_bytes, bytes_sent, nonfinite,
                                                steps_by_node, taken_by_node, by_message)

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

// A node's arrays in memory that other processes map too (SwarmSGD over MPI,
// ranks on one host): its model, published copy and learnt distances, and a
// process-shared, robust lock guarding them. An exchange with such a node,
// here or on another process, averages in place as in one process.
struct SwarmSharedNode {
  pthread_mutex_t* lock = nullptr;  // null: the node is in no shared memory here
  float* x = nullptr;
  float* pub = nullptr;
  float* dist = nullptr;  // SwarmCodec::blocks(n) floats
};
// Makes *m a SwarmSharedNode's lock: process-shared, and robust (a killed
// holder leaves it to the next owner). Throws std::system_error.
void init_shared_lock(pthread_mutex_t* m);

// What a run reads of SwarmSGD's nodes: the engine in one process, or rank 0
// gathering from the worker ranks (MpiSwarm).
class SwarmState {
 public:
  virtual ~SwarmState() = default;
  // The state as JSON, large arrays into `c` as blobs (see SwarmEngine::save).
  virtual nlohmann::json save(Checkpoint* c) = 0;
  // Each node's sampler position (consistent with save()).
  virtual std::vector<uint64_t> positions() = 0;
  // x_bar = mean_i x_i, and the consensus distance mean_i ||x_i - x_bar||^2,
  // over the nodes whose worker has not failed.
  virtual void average(float* out, double* consensus) = 0;
  // The counters over every node.
  virtual SwarmStats stats() = 0;
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

// The algorithm: every local node's model, published copy and learnt
// distances, the interactions, the counters and the state a checkpoint holds.
// The drivers (drivers/swarm_drivers.h) run the nodes' steps, each the worker
// step every algorithm shares, and hand each result here: apply() takes it,
// after_step() has the node interact when due, leave() takes out a node whose
// worker failed.
class SwarmEngine : public SwarmState {
 public:
  // Over MPI a process holds nodes [first, last) of the graph's `nodes` and
  // reaches the others through `peers`, or, for nodes with a lock in
  // `shared` (indexed by node, its local ones included), in place; in one
  // process, every node.
  SwarmEngine(const SwarmConfig& cfg, const float* init, size_t n, int nodes, int first = 0, int last = -1,
              SwarmPeers* peers = nullptr, const std::vector<SwarmSharedNode>* shared = nullptr);
  ~SwarmEngine();

  // --- a node's step, for the drivers ---
  // The model a step computes at: node i's own (virtual: one thread), or a
  // copy taken under its lock (real clock: others may average it meanwhile).
  const float* model(int i);
  void copy_model(int i, float* out);
  float* gradient(int i);  // where the step's gradient goes
  // The step's gradient: SGD on x_i and its batch statistics into the
  // buffers, or, when not finite, not taken (counted).
  void apply(int i, bool finite);
  // After node i's step: its interaction when due.
  void after_step(int i);
  // Node i's worker failed: it leaves the graph (no partner of anyone, not
  // in the average); the listener's word on going on.
  bool leave(int i, const std::string& what, double now, SwarmListener& l);
  bool gone(int i);
  // Node i's sampler position after its last draw (checkpoints read it).
  void set_position(int i, uint64_t p);
  // Virtual clock: a node's step in flight, kept with the node so that a
  // checkpoint continues it bit for bit (its loss and finiteness, when it is
  // due, its place in the event queue), and its computations started (faults
  // count them); and the clock: now, the queue's counter, the node whose step
  // was the last one (its interaction and next start still to come).
  struct InFlight {
    bool has_event = false;
    double due = 0;
    uint64_t seq = 0;
    float loss = 0;
    bool finite = true;
    int64_t computations = 0;
  };
  struct VirtualClock {
    bool on = false;  // a virtual run is running (or ran): checkpoints hold all of the above
    double now = 0;
    uint64_t seq = 0;
    int pending = -1;
    bool resumed = false;
  };
  InFlight& in_flight(int i);
  VirtualClock& virtual_clock() { return vc_; }
  int first() const { return first_; }
  int last() const { return last_; }
  size_t size() const { return n_; }

  // --- over MPI ---
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

  // Sets node i's model (and its published copy); before running.
  void set_model(int i, const float* x);
  // Node i's worker failed: before running (a resumed checkpoint's), or, for
  // a node of another process, when that process reports it (any time):
  // nobody here picks it as a partner again.
  void set_failed(int i);
  void average(float* out, double* consensus) override;
  SwarmStats stats() override;
  const GossipGraph& graph() const { return graph_; }

  // Checkpoints. Virtual clock: the whole state, so a resumed run continues
  // bit for bit: every node's model, published copy, learnt distances, RNG,
  // steps left and step in flight with its gradient, and the clock. Real
  // clock: the models, published copies and distances. Large arrays go into
  // `c` as blobs. Safe while a real-clock run goes on.
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
  class NodeLock;
  int draw_steps(int i);
  int draw_partner(int i);  // -1: every neighbour has left
  void interact(int i);
  void interact_far(int i, int j);
  void adopt(Node& a, const float* q);
  void estimate_bound(const Node& sender, float* bound) const;
  void account(const TransferCount& t, int sender, int receiver);

  SwarmConfig cfg_;
  size_t n_;
  GossipGraph graph_;
  SwarmCodec codec_;
  size_t blocks_;
  double margin_;
  std::vector<std::unique_ptr<Node>> nodes_;
  // Nodes of other processes in shared memory (by node; null elsewhere).
  std::vector<std::unique_ptr<Node>> views_;
  std::mutex stats_mu_;
  SwarmStats stats_;
  VirtualClock vc_;
  int first_ = 0, last_ = 0;
  SwarmPeers* peers_ = nullptr;
  std::atomic<int> live_{0};  // local nodes whose worker has not failed
  // Per node, here or on another process: its worker failed (no more steps
  // here, nobody's partner anywhere).
  std::unique_ptr<std::atomic<bool>[]> gone_;
  std::atomic<int> gone_count_{0};
  Node& node(int i) { return *nodes_[size_t(i - first_)]; }
  // A partner reached in place: local, or in shared memory; null otherwise.
  Node* near(int j);
};

}  // namespace adasync
