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

void NoiseMeter::measure(const std::vector<const float*>& grads) {
  if (grads.size() >= 2) {
    prev_.clear();
    scale_.add(estimate_noise(noise_sums(grads.data(), int(grads.size()), n_, pool_), batch_));
    return;
  }
  if (grads.empty()) return;
  if (!prev_.empty()) {
    const float* pair[2] = {prev_.data(), grads[0]};
    scale_.add(estimate_noise(noise_sums(pair, 2, n_, pool_), batch_));
  }
  prev_.assign(grads[0], grads[0] + n_);
}

}  // namespace adasync
