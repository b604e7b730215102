// The gradient noise scale B_noise = tr(S) / |G|^2 (ALGORITHMS.md §5.1;
// McCandlish et al. 2018, appendix A.1), measured from the gradients each
// update already aggregates: no extra computation, one pass over them.
//
// From K gradients g_l of batch m each and their mean G_K (batch K m), with
// |g|^2 the mean of |g_l|^2, B_s = m and B_b = K m, unbiased estimates are
//   |G|^2 ~ (B_b |G_K|^2 - B_s |g|^2) / (B_b - B_s)
//   tr(S) ~ (|g|^2 - |G_K|^2) / (1/B_s - 1/B_b)
// (S the covariance of one sample's gradient). Each is averaged on its own
// (an exponential moving average, bias-corrected), and B_noise is the ratio of
// the averages, never the average of ratios. An update of one gradient pairs
// it with the previous update's (K = 1: two workers' gradients, or one
// worker's two, a step apart).
//
// The curvature along the steps, from the same gradients (the secant, §5.1):
// the means F_j, F_{j+1} of consecutive updates' fresh gradients (computed at
// w_j, w_{j+1}; k_j, k_{j+1} of them) differ by H (w_{j+1} - w_j) plus their
// noise, and w_{j+1} - w_j = -s_j G_j (G_j the mean of the K_j gradients
// update j applied, s_j its step: the rate over 1 - momentum). On a quadratic
// of curvature L, with V = tr(S) / m,
//   E|F_{j+1} - F_j|^2 - V / k_j - V / k_{j+1} = L^2 E[s_j^2 |G_j|^2] + 2 L s_j V / K_j,
// the last term because F_j's noise is part of G_j's, which moved w. Averaged
// apart, the three give L as the positive root; V from the fresh gradients'
// spread. Stale gradients are left out of F and V: a gradient computed
// before w_j moved says nothing of the move, and differs by its drift.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/thread_pool.h"

namespace adasync {

struct NoiseSums {
  double mean_sq_norm = 0;    // mean over l of |g_l|^2
  double sq_norm_of_mean = 0;  // |mean_l g_l|^2
  int k = 0;
};

// One pass over k gradients of n floats (double sums in fixed chunks: the
// result depends on the pool's size, never on timing).
NoiseSums noise_sums(const float* const* grads, int k, size_t n, ThreadPool* pool);

// The unbiased |G|^2 and tr(S) of one update (k >= 2, batch m per gradient).
struct NoiseEstimate {
  double g2 = 0, trace = 0;
};
NoiseEstimate estimate_noise(const NoiseSums& s, int batch);

// The moving averages and their ratio.
class NoiseScale {
 public:
  explicit NoiseScale(double decay = 0.95) : decay_(decay) {}
  void add(const NoiseEstimate& e);
  int64_t count() const { return count_; }
  double g2() const;     // NaN before the first estimate
  double trace() const;  // NaN before the first estimate
  // tr(S) / |G|^2; NaN before any estimate, +inf while |G|^2 <= 0 (all noise).
  double b_noise() const;
  std::vector<double> state() const { return {g2_, trace_, weight_, double(count_)}; }
  void set_state(const std::vector<double>& s);

 private:
  double decay_;
  double g2_ = 0, trace_ = 0, weight_ = 0;  // weight_: 1 - decay^count (the bias correction)
  int64_t count_ = 0;
};

// The secant's moving averages (same decay and bias correction as NoiseScale).
class Secant {
 public:
  explicit Secant(double decay = 0.95) : decay_(decay) {}
  // One pair: |F_{j+1} - F_j|^2 less its noise, |w_{j+1} - w_j|^2, and s_j V / K_j.
  void add(double diff_sq, double step_sq, double cross);
  // L: NaN before a pair, 0 while the noise swamps the difference (too flat to see).
  double curvature() const;
  int64_t count() const { return count_; }
  std::vector<double> state() const { return {diff_, step_, cross_, double(count_)}; }
  void set_state(const std::vector<double>& s);

 private:
  double decay_;
  double diff_ = 0, step_ = 0, cross_ = 0;
  int64_t count_ = 0;
};

// What the parameter server does with each update's gradients: their sums,
// paired with the previous gradient when the update has one, and the secant
// against the previous update's mean.
class NoiseMeter {
 public:
  NoiseMeter(size_t n, int batch, ThreadPool* pool) : n_(n), batch_(batch), pool_(pool) {}
  // `step`: the step this update takes along the gradients' mean;
  // `staleness`: each gradient's (empty: all fresh); `secant`: whether to
  // measure the secant (a second pass; only a measured K_0's warm-up reads it).
  void measure(const std::vector<const float*>& grads, double step = 0, const std::vector<int64_t>& staleness = {},
               bool secant = true);
  const NoiseScale& scale() const { return scale_; }
  NoiseScale& scale() { return scale_; }
  const Secant& secant() const { return secant_; }
  // The secant's state with the last update's step, fresh count, |G|^2 and K (checkpoints).
  std::vector<double> secant_state() const;
  void set_secant_state(const std::vector<double>& s);
  const std::vector<float>& last_mean() const { return mean_; }  // its fresh mean
  void set_last_mean(std::vector<float> g) { mean_ = std::move(g); }
  // The gradient waiting for its pair (checkpoints: a resumed run pairs as
  // the uninterrupted one); empty when none.
  const std::vector<float>& waiting() const { return prev_; }
  void set_waiting(std::vector<float> g) { prev_ = std::move(g); }

 private:
  size_t n_;
  int batch_;
  ThreadPool* pool_;
  NoiseScale scale_;
  std::vector<float> prev_;  // the last single gradient (K = 1), empty when none
  Secant secant_;
  std::vector<float> mean_;  // the last update's fresh gradients' mean, empty when none
  double mean_step_ = 0;     // the last update's step
  int mean_k_ = 0;           // its fresh gradients
  double mean_sq_ = 0;       // |G|^2 of all it applied
  int mean_all_k_ = 0;       // their number
  NoiseScale fresh_noise_;   // tr(S) from fresh gradients alone (the secant's noise terms)
};

}  // namespace adasync
