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
// |x - b| < q e / 2. Messages travel through host buffers, so workers on any
// device exchange the same way. The engine counts the bytes every node sends
// and how many decoded coordinates left the safe range.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/straggler.h"
#include "runtime/worker.h"

namespace adasync {

// ------------------------------------------------------------------ graphs
// Undirected communication graph on P nodes; neighbours(i) sorted.
class GossipGraph {
 public:
  // kind: complete | ring | torus (2-D, rows x cols = P, as square as P
  // allows, both >= 2) | regular (random r-regular, from the seed).
  static GossipGraph make(const std::string& kind, int nodes, int degree, uint64_t seed);
  int nodes() const { return int(adj_.size()); }
  const std::vector<int>& neighbours(int i) const { return adj_[size_t(i)]; }
  std::string describe() const { return desc_; }
  bool connected() const;

 private:
  std::vector<std::vector<int>> adj_;
  std::string desc_;
};

// ------------------------------------------------------------------ quantizer
class LatticeQuantizer {
 public:
  // bits: 0 (full precision, no quantisation), 8 or 16; step: e.
  LatticeQuantizer(int bits, double step);
  int bits() const { return bits_; }
  double step() const { return e_; }
  // Bytes of one encoded message of n coordinates.
  size_t message_bytes(size_t n) const;
  // Encodes x into msg (message_bytes(n) bytes).
  void encode(const float* x, size_t n, unsigned char* msg) const;
  // Decodes msg relative to the receiver's model b into out.
  void decode(const unsigned char* msg, const float* b, size_t n, float* out) const;
  // |x - b| bound within which decoding is exact to e/2.
  double safe_radius() const;

 private:
  int bits_;
  double e_;
  uint32_t q_;
};

// Number of coordinates whose decoded value misses the sent one by more than
// e/2 (the safe range was left): what the engine reports.
size_t count_out_of_range(const float* sent, const float* decoded, size_t n, double step);

// ------------------------------------------------------------------ engine
struct SwarmConfig {
  std::string graph = "complete";
  int degree = 4;             // random r-regular graphs
  double local_steps = 4;     // H
  bool geometric = false;     // H geometric with mean H instead of fixed
  bool blocking = true;
  int bits = 0;               // 0: full precision
  double quant_step = 1e-4;   // e
  float lr = 0.05f;
  uint64_t seed = 1;
};

struct SwarmStats {
  int64_t local_steps = 0, interactions = 0;
  int64_t out_of_range = 0;       // decoded coordinates off by more than e/2
  int64_t coordinates_sent = 0;
  std::vector<int64_t> bytes_sent;  // per node
  int64_t bytes_total() const;
};

// Callbacks into the trainer: evaluation times and stop conditions.
class SwarmListener {
 public:
  virtual ~SwarmListener() = default;
  // Clock reached `now`; false stops. May call SwarmEngine::average().
  virtual bool on_time(double now) = 0;
  // After each local step (loss of its mini-batch); false stops.
  virtual bool after_step(int node, float loss, double now) = 0;
};

class SwarmEngine {
 public:
  // workers: one per node (real clock) or one shared (virtual clock).
  SwarmEngine(const SwarmConfig& cfg, std::vector<GradientWorker*> workers, std::vector<Sampler>* samplers,
              Straggler* straggler, const float* init, size_t n, int nodes);
  ~SwarmEngine();

  double run_virtual(SwarmListener& l);
  double run_real(SwarmListener& l);

  // Sets node i's model (and its published copy); before running.
  void set_model(int i, const float* x);
  // x_bar = mean_i x_i, and the consensus distance mean_i ||x_i - x_bar||^2.
  void average(float* out, double* consensus);
  SwarmStats stats();
  const GossipGraph& graph() const { return graph_; }
  const LatticeQuantizer& quantizer() const { return q_; }

 private:
  struct Node;
  int draw_steps(int i);
  void interact(int i, double now);
  void exchange_into(const float* sender, const float* receiver_model, float* out, int sender_id, unsigned char* msg);

  SwarmConfig cfg_;
  size_t n_;
  GossipGraph graph_;
  LatticeQuantizer q_;
  std::vector<GradientWorker*> workers_;
  std::vector<Sampler>* samplers_;
  Straggler* straggler_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::mutex stats_mu_;
  SwarmStats stats_;
};

}  // namespace adasync
