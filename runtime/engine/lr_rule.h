// Learning-rate rules (ALGORITHMS.md section 4) and the run's lr schedule.
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
#include <string>
#include <utility>
#include <vector>

#include "runtime/config/settings.h"
#include "runtime/engine/aggregator.h"

namespace adasync {

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


// lr's multiplier at `epoch` under c's schedule.
double lr_multiplier(const LrConfig& c, double epoch);

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


}  // namespace adasync
