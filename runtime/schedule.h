// Synchronicity schedules (K over time) and learning-rate rules
// (ALGORITHMS.md sections 4 and 5).
//
// A KSchedule is consulted after every update with the clock time and a
// training-loss estimate; it returns a change of K (never below the previous
// K for AdaSync), with the numbers that caused it, or nothing.
//
//   fixed      K never changes
//   adasync    every T_0 seconds of clock time, from F_0 (the loss at the
//              start) and F_t (the current estimate):
//                sqrt:       K = min(P, max(K_prev, ceil(K_0 sqrt(F_0 / F_t))))
//                order-stat: the smallest K with K^2 / (P - K) >=
//                            (F_0 / F_t) K_0^2 / (P - K_0), capped at P
//   piecewise  "0:1,30s:2,60s:4": K = 1 from time 0, 2 from 30 s, 4 from 60 s
//
// Learning-rate rules turn the counted gradients of one update into a base
// rate and per-gradient weights (w_{j+1} = rule(w_j, sum_l c_l g_l)):
//   const      c_l = 1/K
//   staleness  eta_l = eta / max(1, s_l)            (s_l = j - tau_l)
//   distance   eta_l = min(C / ||w_j - w_tau_l||^2, eta_max)
// For `distance` the squared distance is computed exactly from the two
// snapshots, or estimated from per-version sketches (DistanceSketch) that keep
// O(m) floats per version instead of the parameters themselves.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runtime/variant.h"

namespace adasync {

struct KChange {
  int k_prev = 0, k = 0;
  double time = 0;
  double loss_start = 0, loss_now = 0;  // F_0, F_t (NaN for piecewise)
  std::string reason;                   // e.g. "sqrt rule, F0/Ft = 3.77"
};

class KSchedule {
 public:
  virtual ~KSchedule() = default;
  virtual std::string describe() const = 0;
  virtual int initial_k() const = 0;
  // After an update at clock time `now`; `loss` returns the current training
  // loss estimate (called only when the schedule needs it).
  virtual std::optional<KChange> after_update(double now, int k_now, const std::function<double()>& loss) = 0;
  // Sets F_0 (AdaSync); ignored by the others.
  virtual void set_start_loss(double f0) {}
  virtual bool needs_start_loss() const { return false; }
  // Checkpoint state: (next decision time, F_0).
  virtual std::vector<double> state() const { return {}; }
  virtual void set_state(const std::vector<double>&) {}
};

struct ScheduleConfig {
  std::string kind = "fixed";  // fixed | adasync | piecewise
  int k = 1;                   // fixed: K; adasync: K_0 (>= 1)
  int workers = 1;             // P
  double interval = 0;         // adasync: T_0 (clock seconds, > 0)
  std::string rule = "sqrt";   // adasync: sqrt | order-stat
  std::string points;          // piecewise: "0:1,30s:2,60s:4"
};

// Throws UsageError naming the flag on bad input.
std::unique_ptr<KSchedule> make_schedule(const ScheduleConfig& c);

// The order-statistic rule on its own: smallest K with
// K^2/(P-K) >= ratio * K0^2/(P-K0), capped at P.
int order_stat_k(double ratio, int k0, int workers);
int sqrt_rule_k(double ratio, int k0, int k_prev, int workers);

// ------------------------------------------------------------------ sketches
// Count-sketch of the parameters with m buckets: S_c = sum_r sigma_r w[r*m + c]
// with random signs sigma_r per row of m coordinates, so that
// E ||S(x) - S(y)||^2 = ||x - y||^2 (pairs sharing a bucket lie in different
// rows, whose signs are independent). Relative error about sqrt(2/m).
class DistanceSketch {
 public:
  DistanceSketch(size_t n, size_t m, uint64_t seed, size_t versions);
  // Records the sketch of version v (call once per published version).
  void record(int64_t version, const float* w);
  // Estimated ||w_a - w_b||^2; false when either version is no longer kept.
  bool distance2(int64_t a, int64_t b, double* out) const;
  size_t buckets() const { return m_; }
  // The kept sketches (checkpoints): versions, and their m values each.
  std::vector<int64_t> versions() const;
  std::vector<float> values() const;
  void restore(const std::vector<int64_t>& versions, const std::vector<float>& values);

 private:
  size_t n_, m_, keep_;
  std::vector<float> sign_;  // per row of m coordinates
  std::deque<std::pair<int64_t, std::vector<float>>> ring_;
};

double exact_distance2(const float* a, const float* b, size_t n);

struct LrConfig {
  std::string rule = "const";  // const | staleness | distance
  double lr = 0.05;            // eta (const, staleness) or eta_max (distance)
  double c = 0.0;              // C for distance (> 0 required)
  std::string distance = "sketch";  // exact | sketch
  size_t sketch_buckets = 4096;
};

// Learning rate and weights for the counted gradients of the next update.
class LrRule {
 public:
  LrRule(const LrConfig& c, size_t n, uint64_t seed);
  const LrConfig& config() const { return cfg_; }
  // Called with each newly published snapshot (distance rule bookkeeping).
  void on_publish(const Snapshot& s);
  UpdateRates rates(const Aggregator& agg, const Snapshot& current);
  // Mean per-gradient rate of the last update (for metrics).
  double last_mean_rate() const { return last_mean_rate_; }
  DistanceSketch* sketch() { return sketch_.get(); }

 private:
  LrConfig cfg_;
  size_t n_;
  std::unique_ptr<DistanceSketch> sketch_;
  double last_mean_rate_ = 0;
};

void validate(const LrConfig& c);

}  // namespace adasync
