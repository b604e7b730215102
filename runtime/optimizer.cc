#include "runtime/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/context.h"

namespace adasync {
namespace {
constexpr size_t kBlock = 512;          // elements per inner block (fits L1 with K gradients streaming)
constexpr size_t kGrain = size_t(1) << 16;  // elements per thread chunk at least

// acc[0..len) = sum_l c[l] * g[l][off..off+len)
inline void accumulate(float* __restrict acc, const float* const* g, const float* c, int k, size_t off,
                       size_t len) {
  const float* __restrict g0 = g[0] + off;
  const float c0 = c[0];
  for (size_t j = 0; j < len; ++j) acc[j] = c0 * g0[j];
  for (int l = 1; l < k; ++l) {
    const float* __restrict gl = g[l] + off;
    const float cl = c[l];
    for (size_t j = 0; j < len; ++j) acc[j] += cl * gl[j];
  }
}
}  // namespace

void validate(const OptimizerConfig& c) {
  if (c.name != "sgd" && c.name != "momentum" && c.name != "adam" && c.name != "amsgrad")
    throw UsageError("--optimizer: expected sgd, momentum, adam or amsgrad, found '" + c.name + "'");
  if (!(c.momentum >= 0 && c.momentum < 1)) throw UsageError("--momentum: expected a value in [0, 1), found " + std::to_string(c.momentum));
  if (!(c.beta1 >= 0 && c.beta1 < 1)) throw UsageError("--beta1: expected a value in [0, 1), found " + std::to_string(c.beta1));
  if (!(c.beta2 >= 0 && c.beta2 < 1)) throw UsageError("--beta2: expected a value in [0, 1), found " + std::to_string(c.beta2));
  if (!(c.eps > 0)) throw UsageError("--eps: expected a positive value, found " + std::to_string(c.eps));
  if (!(c.weight_decay >= 0)) throw UsageError("--weight-decay: expected >= 0, found " + std::to_string(c.weight_decay));
}

HostOptimizer::HostOptimizer(const OptimizerConfig& config, size_t n, ThreadPool* pool)
    : cfg_(config), n_(n), pool_(pool) {
  validate(cfg_);
  if (cfg_.name == "adam") kind_ = Kind::Adam;
  else if (cfg_.name == "amsgrad") kind_ = Kind::AmsGrad;
  else kind_ = Kind::Sgd;
  if (kind_ == Kind::Sgd) {
    if (cfg_.momentum > 0) m_.assign(n, 0.f);
  } else {
    m_.assign(n, 0.f);
    v_.assign(n, 0.f);
    if (kind_ == Kind::AmsGrad) vh_.assign(n, 0.f);
  }
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

  parallel_for(pool_, n_, kGrain, [&](size_t b, size_t e) {
    alignas(64) float acc[kBlock];
    for (size_t off = b; off < e; off += kBlock) {
      const size_t len = std::min(kBlock, e - off);
      accumulate(acc, grads, c, k, off, len);
      const float* __restrict wi = w_in + off;
      float* wo = w_out + off;  // may alias wi
      if (wd != 0.f)
        for (size_t j = 0; j < len; ++j) acc[j] += wd * wi[j];
      if (kind == Kind::Sgd) {
        if (m == nullptr) {
          for (size_t j = 0; j < len; ++j) wo[j] = wi[j] - lr * acc[j];
        } else {
          float* __restrict mv = m + off;
          if (nesterov) {
            for (size_t j = 0; j < len; ++j) {
              const float vj = mu * mv[j] + acc[j];
              mv[j] = vj;
              wo[j] = wi[j] - lr * (acc[j] + mu * vj);
            }
          } else {
            for (size_t j = 0; j < len; ++j) {
              const float vj = mu * mv[j] + acc[j];
              mv[j] = vj;
              wo[j] = wi[j] - lr * vj;
            }
          }
        }
      } else {
        float* __restrict mm = m + off;
        float* __restrict vv = v + off;
        if (kind == Kind::AmsGrad) {
          float* __restrict hh = vh + off;
          for (size_t j = 0; j < len; ++j) {
            const float g = acc[j];
            const float mj = b1 * mm[j] + (1.f - b1) * g;
            const float vj = b2 * vv[j] + (1.f - b2) * g * g;
            const float hj = std::max(hh[j], vj);
            mm[j] = mj;
            vv[j] = vj;
            hh[j] = hj;
            wo[j] = wi[j] - a * mj / (std::sqrt(hj) + eps);
          }
        } else {
          for (size_t j = 0; j < len; ++j) {
            const float g = acc[j];
            const float mj = b1 * mm[j] + (1.f - b1) * g;
            const float vj = b2 * vv[j] + (1.f - b2) * g * g;
            mm[j] = mj;
            vv[j] = vj;
            wo[j] = wi[j] - a * mj / (std::sqrt(vj) + eps);
          }
        }
      }
    }
  });
}

}  // namespace adasync
