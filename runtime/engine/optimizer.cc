#include "runtime/engine/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/context.h"

namespace adasync {
namespace {
constexpr size_t kBlock = 2048;             // elements per inner block: K gradient streams stay in L1/L2
constexpr size_t kGrain = size_t(1) << 16;  // elements per piece a thread takes

// The block kernels take restrict pointers so each loop is one vectorised
// stream; w_out may alias w_in, which is safe element by element.
// acc[j] (= acc[j] if Init is false, else 0) + sum_l c[l] g[l][j], summed left
// to right. K is a compile-time count so the loop reads K streams side by side
// (the prefetchers follow them all) and vectorises over j.
template <int K, bool Init>
void accumulate_fixed(float* __restrict acc, const float* const* g, const float* c, size_t off, size_t len) {
  const float* __restrict p[K];
  float cc[K];
  for (int l = 0; l < K; ++l) p[l] = g[l] + off, cc[l] = c[l];
  for (size_t j = 0; j < len; ++j) {
    float s = Init ? cc[0] * p[0][j] : acc[j] + cc[0] * p[0][j];
#pragma GCC unroll 8
    for (int l = 1; l < K; ++l) s += cc[l] * p[l][j];
    acc[j] = s;
  }
}

template <bool Init>
void accumulate_some(float* acc, const float* const* g, const float* c, int k, size_t off, size_t len) {
  switch (k) {
    case 1: return accumulate_fixed<1, Init>(acc, g, c, off, len);
    case 2: return accumulate_fixed<2, Init>(acc, g, c, off, len);
    case 3: return accumulate_fixed<3, Init>(acc, g, c, off, len);
    case 4: return accumulate_fixed<4, Init>(acc, g, c, off, len);
    case 5: return accumulate_fixed<5, Init>(acc, g, c, off, len);
    case 6: return accumulate_fixed<6, Init>(acc, g, c, off, len);
    case 7: return accumulate_fixed<7, Init>(acc, g, c, off, len);
    default: return accumulate_fixed<8, Init>(acc, g, c, off, len);
  }
}

// acc = sum_l c[l] g[l][off..off+len), in l order, eight streams at a time.
void accumulate(float* acc, const float* const* g, const float* c, int k, size_t off, size_t len) {
  accumulate_some<true>(acc, g, c, std::min(k, 8), off, len);
  for (int l = 8; l < k; l += 8) accumulate_some<false>(acc, g + l, c + l, std::min(k - l, 8), off, len);
}

void add_decay(float* __restrict acc, const float* w, float wd, size_t len) {
  for (size_t j = 0; j < len; ++j) acc[j] += wd * w[j];
}
// Decay on [off, off + len) except the ranges in `skip` (sorted by offset).
void add_decay_except(float* acc, const float* w_in, float wd, size_t off, size_t len,
                      const std::vector<ParamLayout::Range>& skip) {
  size_t at = off;
  const size_t end = off + len;
  for (const auto& r : skip) {
    if (r.offset + r.count <= at) continue;
    if (r.offset >= end) break;
    if (r.offset > at) add_decay(acc + (at - off), w_in + at, wd, r.offset - at);
    at = std::min(end, r.offset + r.count);
  }
  if (at < end) add_decay(acc + (at - off), w_in + at, wd, end - at);
}
void sgd_block(const float* __restrict acc, const float* wi, float* wo, float lr, size_t len) {
  for (size_t j = 0; j < len; ++j) wo[j] = wi[j] - lr * acc[j];
}
void momentum_block(const float* __restrict acc, float* __restrict v, const float* wi, float* wo, float lr, float mu,
                    bool nesterov, size_t len) {
  if (nesterov) {
    for (size_t j = 0; j < len; ++j) {
      const float vj = mu * v[j] + acc[j];
      v[j] = vj;
      wo[j] = wi[j] - lr * (acc[j] + mu * vj);
    }
  } else {
    for (size_t j = 0; j < len; ++j) {
      const float vj = mu * v[j] + acc[j];
      v[j] = vj;
      wo[j] = wi[j] - lr * vj;
    }
  }
}
void adam_block(const float* __restrict acc, float* __restrict m, float* __restrict v, float* __restrict vh,
                const float* wi, float* wo, float a, float b1, float b2, float eps, size_t len) {
  if (vh != nullptr) {
    for (size_t j = 0; j < len; ++j) {
      const float g = acc[j];
      const float mj = b1 * m[j] + (1.f - b1) * g;
      const float vj = b2 * v[j] + (1.f - b2) * g * g;
      const float hj = vh[j] > vj ? vh[j] : vj;
      m[j] = mj;
      v[j] = vj;
      vh[j] = hj;
      wo[j] = wi[j] - a * mj / (std::sqrt(hj) + eps);
    }
  } else {
    for (size_t j = 0; j < len; ++j) {
      const float g = acc[j];
      const float mj = b1 * m[j] + (1.f - b1) * g;
      const float vj = b2 * v[j] + (1.f - b2) * g * g;
      m[j] = mj;
      v[j] = vj;
      wo[j] = wi[j] - a * mj / (std::sqrt(vj) + eps);
    }
  }
}
}  // namespace


void fold_buffers(const ParamLayout& layout, const float* w_in, float* w_out, const float* const* stats, int k) {
  const float mom = float(layout.bn_momentum);
  for (const auto& r : layout.buffers)
    for (size_t j = r.offset; j < r.offset + r.count; ++j) {
      if (r.kind == TensorKind::Count) {
        w_out[j] = w_in[j] + 1.f;
        continue;
      }
      double s = 0;
      for (int l = 0; l < k; ++l) s += double(stats[l][j]);
      w_out[j] = (1.f - mom) * w_in[j] + mom * float(s / k);
    }
}

HostOptimizer::HostOptimizer(const OptimizerConfig& config, size_t n, ThreadPool* pool)
    : cfg_(config), n_(n), layout_(ParamLayout::plain(n)), pool_(pool) {
  validate(cfg_);
  if (cfg_.name == OptimizerKind::Adam) kind_ = Kind::Adam;
  else if (cfg_.name == OptimizerKind::AmsGrad) kind_ = Kind::AmsGrad;
  else kind_ = Kind::Sgd;
  if (kind_ == Kind::Sgd) {
    if (cfg_.momentum > 0) m_.assign(n, 0.f);
  } else {
    m_.assign(n, 0.f);
    v_.assign(n, 0.f);
    if (kind_ == Kind::AmsGrad) vh_.assign(n, 0.f);
  }
}

void HostOptimizer::set_layout(const ParamLayout& layout) {
  EXPECTS(layout.total == n_ && layout.trainable <= n_, "layout of " << layout.total << " values for an optimizer of " << n_);
  layout_ = layout;
}

size_t HostOptimizer::state_floats() const {
  return (m_.empty() ? 0 : 1) + (v_.empty() ? 0 : 1) + (vh_.empty() ? 0 : 1);
}

std::vector<std::pair<std::string, std::vector<float>*>> HostOptimizer::state() {
  std::vector<std::pair<std::string, std::vector<float>*>> s;
  if (!m_.empty()) s.emplace_back(kind_ == Kind::Sgd ? "velocity" : "m", &m_);
  if (!v_.empty()) s.emplace_back("v", &v_);
  if (!vh_.empty()) s.emplace_back("vhat", &vh_);
  return s;
}

void HostOptimizer::step(const float* w_in, float* w_out, const float* const* grads, const float* c, int k,
                         float lr) {
  EXPECTS(k >= 1, "an update needs at least one gradient, got " << k);
  ++steps_;
  const float wd = float(cfg_.weight_decay);
  const float mu = float(cfg_.momentum);
  const bool nesterov = cfg_.nesterov;
  const float b1 = float(cfg_.beta1), b2 = float(cfg_.beta2), eps = float(cfg_.eps);
  float a = lr;
  if (kind_ != Kind::Sgd && cfg_.bias_correction) {
    const double kk = double(steps_);
    a = float(double(lr) * std::sqrt(1.0 - std::pow(cfg_.beta2, kk)) / (1.0 - std::pow(cfg_.beta1, kk)));
  }
  float* m = m_.empty() ? nullptr : m_.data();
  float* v = v_.empty() ? nullptr : v_.data();
  float* vh = vh_.empty() ? nullptr : vh_.data();
  const Kind kind = kind_;
  const bool skip = cfg_.no_decay_bn && !layout_.no_decay.empty();
  const auto& no_decay = layout_.no_decay;

  // Element by element, so pieces taken as threads come free give the same bits.
  auto body = [&](int, size_t b, size_t e) {
    alignas(64) float acc[kBlock];
    for (size_t off = b; off < e; off += kBlock) {
      const size_t len = std::min(kBlock, e - off);
      accumulate(acc, grads, c, k, off, len);
      if (wd != 0.f) {
        if (skip) add_decay_except(acc, w_in, wd, off, len, no_decay);
        else add_decay(acc, w_in + off, wd, len);
      }
      if (kind == Kind::Sgd) {
        if (m == nullptr) sgd_block(acc, w_in + off, w_out + off, lr, len);
        else momentum_block(acc, m + off, w_in + off, w_out + off, lr, mu, nesterov, len);
      } else {
        adam_block(acc, m + off, v + off, vh == nullptr ? nullptr : vh + off, w_in + off, w_out + off, a, b1, b2, eps,
                   len);
      }
    }
  };
  parallel_pieces(pool_, layout_.trainable, kGrain, body);
  if (layout_.has_buffers()) fold_buffers(layout_, w_in, w_out, grads, k);
}

}  // namespace adasync
