#include "runtime/engine/noise.h"

#include <cmath>
#include <limits>

#include "kernels/context.h"

namespace adasync {

NoiseSums noise_sums(const float* const* grads, int k, size_t n, ThreadPool* pool) {
  EXPECTS(k >= 1, "noise_sums of " << k << " gradients");
  const size_t grain = 1 << 14;
  const int chunks = pool != nullptr ? pool->chunks_for(n, grain) : 1;
  std::vector<double> sq(size_t(chunks), 0.0), mean_sq(size_t(chunks), 0.0);
  auto body = [&](int c, size_t b, size_t e) {
    double s_sq = 0, s_mean = 0;
    for (size_t i = b; i < e; ++i) {
      double sum = 0;
      for (int l = 0; l < k; ++l) {
        const double g = grads[l][i];
        sum += g;
        s_sq += g * g;
      }
      s_mean += sum * sum;
    }
    sq[size_t(c)] = s_sq;
    mean_sq[size_t(c)] = s_mean;
  };
  if (pool != nullptr) pool->parallel_chunks(n, grain, body);
  else body(0, 0, n);
  NoiseSums s;
  s.k = k;
  for (int c = 0; c < chunks; ++c) {
    s.mean_sq_norm += sq[size_t(c)];
    s.sq_norm_of_mean += mean_sq[size_t(c)];
  }
  s.mean_sq_norm /= double(k);
  s.sq_norm_of_mean /= double(k) * double(k);
  return s;
}

NoiseEstimate estimate_noise(const NoiseSums& s, int batch) {
  EXPECTS(s.k >= 2 && batch >= 1, "a noise estimate needs two gradients or more, found " << s.k);
  const double bs = batch, bb = double(s.k) * batch;
  NoiseEstimate e;
  e.g2 = (bb * s.sq_norm_of_mean - bs * s.mean_sq_norm) / (bb - bs);
  e.trace = (s.mean_sq_norm - s.sq_norm_of_mean) / (1.0 / bs - 1.0 / bb);
  return e;
}

void NoiseScale::add(const NoiseEstimate& e) {
  g2_ = decay_ * g2_ + (1 - decay_) * e.g2;
  trace_ = decay_ * trace_ + (1 - decay_) * e.trace;
  weight_ = decay_ * weight_ + (1 - decay_);
  ++count_;
}

double NoiseScale::g2() const { return count_ > 0 ? g2_ / weight_ : std::numeric_limits<double>::quiet_NaN(); }
double NoiseScale::trace() const { return count_ > 0 ? trace_ / weight_ : std::numeric_limits<double>::quiet_NaN(); }

double NoiseScale::b_noise() const {
  if (count_ == 0) return std::numeric_limits<double>::quiet_NaN();
  // The bias corrections cancel in the ratio.
  return g2_ > 0 ? trace_ / g2_ : std::numeric_limits<double>::infinity();
}

void NoiseScale::set_state(const std::vector<double>& s) {
  EXPECTS(s.size() == 4, "noise scale state of " << s.size() << " values");
  g2_ = s[0], trace_ = s[1], weight_ = s[2], count_ = int64_t(s[3]);
}

void Secant::add(double diff_sq, double step_sq, double cross) {
  diff_ = decay_ * diff_ + (1 - decay_) * diff_sq;
  step_ = decay_ * step_ + (1 - decay_) * step_sq;
  cross_ = decay_ * cross_ + (1 - decay_) * cross;
  ++count_;
}

double Secant::curvature() const {
  // L solves L^2 step + 2 L cross = diff (the bias corrections cancel).
  if (count_ == 0 || !(step_ > 0)) return std::numeric_limits<double>::quiet_NaN();
  if (!(diff_ > 0)) return 0.0;
  return (std::sqrt(cross_ * cross_ + step_ * diff_) - cross_) / step_;
}

void Secant::set_state(const std::vector<double>& s) {
  EXPECTS(s.size() == 4, "secant state of " << s.size() << " values");
  diff_ = s[0], step_ = s[1], cross_ = s[2], count_ = int64_t(s[3]);
}

std::vector<double> NoiseMeter::secant_state() const {
  std::vector<double> s = secant_.state();
  s.push_back(mean_step_);
  s.push_back(double(mean_k_));
  s.push_back(mean_sq_);
  s.push_back(double(mean_all_k_));
  for (double x : fresh_noise_.state()) s.push_back(x);
  return s;
}

void NoiseMeter::set_secant_state(const std::vector<double>& s) {
  EXPECTS(s.size() == 12, "noise meter secant state of " << s.size() << " values");
  secant_.set_state({s[0], s[1], s[2], s[3]});
  mean_step_ = s[4], mean_k_ = int(s[5]), mean_sq_ = s[6], mean_all_k_ = int(s[7]);
  fresh_noise_.set_state({s[8], s[9], s[10], s[11]});
}

void NoiseMeter::measure(const std::vector<const float*>& grads, double step, const std::vector<int64_t>& staleness,
                         bool secant) {
  if (grads.empty()) return;
  NoiseSums all;
  if (grads.size() >= 2) {
    prev_.clear();
    all = noise_sums(grads.data(), int(grads.size()), n_, pool_);
    scale_.add(estimate_noise(all, batch_));
  } else {
    if (!prev_.empty()) {
      const float* pair[2] = {prev_.data(), grads[0]};
      scale_.add(estimate_noise(noise_sums(pair, 2, n_, pool_), batch_));
    }
    prev_.assign(grads[0], grads[0] + n_);
  }
  if (!secant) {  // no longer asked for: the next pair would span a gap
    mean_.clear();
    return;
  }
  // The secant: the mean of this update's fresh gradients (computed at the
  // parameters it updates) against the last update's, whose step was the last
  // update's step along the mean of all it applied (fixed-order double sums).
  const int k = int(grads.size());
  std::vector<const float*> fresh;
  for (int l = 0; l < k; ++l)
    if (staleness.empty() || staleness[size_t(l)] == 0) fresh.push_back(grads[size_t(l)]);
  const int kf = int(fresh.size());
  // The noise term from the fresh gradients' own spread (stale ones differ
  // by their drift, not only by noise).
  if (kf >= 2) fresh_noise_.add(estimate_noise(kf == k ? all : noise_sums(fresh.data(), kf, n_, pool_), batch_));
  std::vector<float> mean;
  if (kf > 0) mean.resize(n_);
  double diff_sq = 0, all_sq = 0;
  for (size_t i = 0; i < n_; ++i) {
    double g = 0;
    for (int l = 0; l < k; ++l) g += grads[size_t(l)][i];
    all_sq += (g / k) * (g / k);
    if (kf == 0) continue;
    double f = 0;
    for (int l = 0; l < kf; ++l) f += fresh[size_t(l)][i];
    mean[i] = float(f / kf);
    if (!mean_.empty()) {
      const double d = double(mean[i]) - mean_[i];
      diff_sq += d * d;
    }
  }
  const double trace = fresh_noise_.trace();
  if (kf > 0 && !mean_.empty() && mean_step_ > 0 && std::isfinite(trace) && mean_k_ > 0)
    secant_.add(diff_sq - trace / (double(kf) * batch_) - trace / (double(mean_k_) * batch_),
                mean_step_ * mean_step_ * mean_sq_, mean_step_ * trace / (double(mean_all_k_) * batch_));
  // The next pair needs this update's fresh mean; none breaks the chain.
  mean_ = std::move(mean);
  mean_step_ = step;
  mean_k_ = kf;
  mean_sq_ = all_sq;
  mean_all_k_ = k;
}

}  // namespace adasync
