// CPU twins of the normalisation and residual ops: batch norm, global average
// pooling, the option-A shortcut, dropout and the running-buffer update.
// Per-channel reductions are summed in double in a fixed order by one thread
// each, so the bits do not depend on the thread count.
#include <algorithm>
#include <cmath>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/mix_hash.h"

namespace adasync::cpu {
namespace {

// Per-channel sums go to kLanes double accumulators, element q of a plane to
// lane q % kLanes, folded pairwise at the end: one accumulator would wait an
// add's latency per element, and the order (so the bits) is the same at any
// vector width.
constexpr int kLanes = 16;
struct Lanes {
  double a[kLanes] = {};
  // a[q % kLanes] += f(q) for q < n.
  template <typename F>
  void add(size_t n, F&& f) {
    size_t q = 0;
    for (; q + kLanes <= n; q += kLanes)
      for (int j = 0; j < kLanes; ++j) a[j] += f(q + size_t(j));
    for (int j = 0; q < n; ++q, ++j) a[j] += f(q);
  }
  double total() const {
    double t[kLanes];
    std::copy(a, a + kLanes, t);
    for (int w = kLanes / 2; w >= 1; w /= 2)
      for (int j = 0; j < w; ++j) t[j] += t[j + w];
    return t[0];
  }
};

// f(channel) for every channel, channels split over the pool.
template <typename F>
void for_each_channel(Context& ctx, int c, F&& f) {
  parallel_pieces(ctx.pool(), size_t(c), 1, [&](int, size_t b, size_t e) {
    for (size_t k = b; k < e; ++k) f(int(k));
  });
}
}  // namespace

template <typename T>
void batchnorm_forward_train(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta, double eps,
                             T* y, T* mean, T* invstd, T* var_unbiased, const T* add, bool relu) {
  const size_t hw = size_t(s.hw), stride = size_t(s.c) * hw;
  const double m = double(s.n) * double(hw);
  for_each_channel(ctx, s.c, [&](int k) {
    Lanes sum;
    for (int i = 0; i < s.n; ++i) {
      const T* p = x + size_t(i) * stride + size_t(k) * hw;
      sum.add(hw, [p](size_t q) { return double(p[q]); });
    }
    const double mu = sum.total() / m;
    Lanes sq;
    for (int i = 0; i < s.n; ++i) {
      const T* p = x + size_t(i) * stride + size_t(k) * hw;
      sq.add(hw, [p, mu](size_t q) {
        const double d = double(p[q]) - mu;
        return d * d;
      });
    }
    const double ss = sq.total(), var = ss / m;
    const double is = 1.0 / std::sqrt(var + eps);
    mean[k] = T(mu);
    invstd[k] = T(is);
    if (var_unbiased != nullptr) var_unbiased[k] = T(m > 1 ? ss / (m - 1) : var);
    // (x - mean) first: with a mean far from 0, x * scale + shift would cancel.
    // One rounding (fma) whatever the build contracts: on a nearly constant
    // channel (large scale) two roundings flipped the following ReLU's mask
    // at many elements (the float resnet20 gradients came out 1% from double).
    const T scale = T(double(gamma[k]) * is), m0 = T(mu), b0 = beta[k];
    for (int i = 0; i < s.n; ++i) {
      const size_t off = size_t(i) * stride + size_t(k) * hw;
      const T* p = x + off;
      T* o = y + off;
      // One loop per epilogue, each vectorised.
      if (add == nullptr && !relu) {
        for (size_t q = 0; q < hw; ++q) o[q] = std::fma(p[q] - m0, scale, b0);
      } else if (add == nullptr) {
        for (size_t q = 0; q < hw; ++q) {
          const T v = std::fma(p[q] - m0, scale, b0);
          o[q] = v > T(0) ? v : T(0);
        }
      } else {
        const T* r = add + off;
        for (size_t q = 0; q < hw; ++q) {
          const T v = std::fma(p[q] - m0, scale, b0) + r[q];
          o[q] = !relu || v > T(0) ? v : T(0);
        }
      }
    }
  });
}

template <typename T>
void batchnorm_forward_eval(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, double eps, T* y) {
  const size_t hw = size_t(s.hw), stride = size_t(s.c) * hw;
  for_each_channel(ctx, s.c, [&](int k) {
    const double is = 1.0 / std::sqrt(double(running_var[k]) + eps);
    const T scale = T(double(gamma[k]) * is), m0 = running_mean[k], b0 = beta[k];
    for (int i = 0; i < s.n; ++i) {
      const T* p = x + size_t(i) * stride + size_t(k) * hw;
      T* o = y + size_t(i) * stride + size_t(k) * hw;
      for (size_t q = 0; q < hw; ++q) o[q] = std::fma(p[q] - m0, scale, b0);
    }
  });
}

// One channel of batchnorm_backward; Masked: dy where relu_y > 0 (its own
// instantiation, so that each loop vectorises), staged in dx by the first
// pass so that the second reads two of the channel's arrays, as unmasked (the
// channel's slices of three at batch 128 and 32x32 would not stay in L2).
template <typename T, bool Masked>
void batchnorm_backward_channel(const BnShape& s, int k, const T* x, const T* dy, const T* relu_y, const T* gamma,
                                const T* mean, const T* invstd, T* dx, T* dgamma, T* dbeta) {
  const size_t hw = size_t(s.hw), stride = size_t(s.c) * hw;
  const double m = double(s.n) * double(hw);
  const double mu = double(mean[k]), is = double(invstd[k]);
  Lanes ly, lyx;
  for (int i = 0; i < s.n; ++i) {
    const size_t off = size_t(i) * stride + size_t(k) * hw;
    const T *g = dy + off, *p = x + off;
    if constexpr (Masked) {
      T* staged = dx + off;
      const T* r = relu_y + off;
      if (dx != nullptr) {
        for (size_t q = 0; q < hw; ++q) {
          const T d = g[q];
          staged[q] = r[q] > T(0) ? d : T(0);
        }
        g = staged;
      } else {
        ly.add(hw, [g, r](size_t q) { return r[q] > T(0) ? double(g[q]) : 0.0; });
        lyx.add(hw, [g, p, r, mu, is](size_t q) { return (r[q] > T(0) ? double(g[q]) : 0.0) * (double(p[q]) - mu) * is; });
        continue;
      }
    }
    {
      ly.add(hw, [g](size_t q) { return double(g[q]); });
      lyx.add(hw, [g, p, mu, is](size_t q) { return double(g[q]) * (double(p[q]) - mu) * is; });
    }
  }
  const double sdy = ly.total(), sdyx = lyx.total();
  dgamma[k] = T(sdyx);
  dbeta[k] = T(sdy);
  if (dx == nullptr) return;
  // dx = a * dy + b * (x - mean) + c, the per-channel constants folded once;
  // in double: the three terms nearly cancel (in float the gradients came
  // out 4x further from float64 PyTorch's, as far as PyTorch float32's own).
  const double gi = double(gamma[k]) * is;
  const double a = gi, b = -gi * is * sdyx / m, c = -gi * sdy / m;
  for (int i = 0; i < s.n; ++i) {
    const size_t off = size_t(i) * stride + size_t(k) * hw;
    const T *g = Masked ? dx + off : dy + off, *p = x + off;
    T* o = dx + off;
    for (size_t q = 0; q < hw; ++q) o[q] = T(a * double(g[q]) + b * (double(p[q]) - mu) + c);
  }
}

template <typename T>
void batchnorm_backward(Context& ctx, const BnShape& s, const T* x, const T* dy, const T* gamma, const T* mean,
                        const T* invstd, T* dx, T* dgamma, T* dbeta, const T* relu_y) {
  for_each_channel(ctx, s.c, [&](int k) {
    if (relu_y != nullptr)
      batchnorm_backward_channel<T, true>(s, k, x, dy, relu_y, gamma, mean, invstd, dx, dgamma, dbeta);
    else
      batchnorm_backward_channel<T, false>(s, k, x, dy, relu_y, gamma, mean, invstd, dx, dgamma, dbeta);
  });
}

template <typename T>
void global_avgpool_forward(Context& ctx, int n, int c, int hw, const T* x, T* y) {
  const size_t planes = size_t(n) * c;
  parallel_for(ctx.pool(), planes, std::max<size_t>(1, kGrain / size_t(std::max(hw, 1))), [&](size_t b, size_t e) {
    for (size_t p = b; p < e; ++p) {
      const T* xp = x + p * size_t(hw);
      double sum = 0;
      for (int q = 0; q < hw; ++q) sum += double(xp[q]);
      y[p] = T(sum / hw);
    }
  });
}

template <typename T>
void global_avgpool_backward(Context& ctx, int n, int c, int hw, const T* dy, T* dx) {
  const size_t planes = size_t(n) * c;
  parallel_for(ctx.pool(), planes, std::max<size_t>(1, kGrain / size_t(std::max(hw, 1))), [&](size_t b, size_t e) {
    for (size_t p = b; p < e; ++p) {
      const T g = T(double(dy[p]) / hw);
      T* o = dx + p * size_t(hw);
      for (int q = 0; q < hw; ++q) o[q] = g;
    }
  });
}

template <typename T>
void shortcut_add(Context& ctx, const ShortcutShape& s, const T* x, T* y) {
  const int oh = s.out_h(), ow = s.out_w(), pad = s.pad();
  const size_t planes = size_t(s.n) * s.c_in;
  parallel_for(ctx.pool(), planes, 16, [&](size_t b, size_t e) {
    for (size_t p = b; p < e; ++p) {
      const size_t i = p / size_t(s.c_in), c = p % size_t(s.c_in);
      const T* xp = x + p * size_t(s.h) * s.w;
      T* yp = y + ((i * size_t(s.c_out) + c + size_t(pad)) * oh) * ow;
      for (int r = 0; r < oh; ++r)
        for (int q = 0; q < ow; ++q) yp[size_t(r) * ow + q] += xp[size_t(r) * s.stride * s.w + size_t(q) * s.stride];
    }
  });
}

template <typename T>
void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const T* dy, T* dx) {
  const int oh = s.out_h(), ow = s.out_w(), pad = s.pad();
  const size_t planes = size_t(s.n) * s.c_in;
  parallel_for(ctx.pool(), planes, 16, [&](size_t b, size_t e) {
    for (size_t p = b; p < e; ++p) {
      const size_t i = p / size_t(s.c_in), c = p % size_t(s.c_in);
      T* xp = dx + p * size_t(s.h) * s.w;
      const T* yp = dy + ((i * size_t(s.c_out) + c + size_t(pad)) * oh) * ow;
      for (int r = 0; r < oh; ++r)
        for (int q = 0; q < ow; ++q) xp[size_t(r) * s.stride * s.w + size_t(q) * s.stride] += yp[size_t(r) * ow + q];
    }
  });
}

template <typename T>
void dropout_forward(Context& ctx, const T* x, T* y, size_t n, float p, const uint64_t* key) {
  const uint64_t k = *key;
  const T keep = T(1) / (T(1) - T(p));
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) y[i] = dropout_uniform(k, i) < p ? T(0) : x[i] * keep;
  });
}

template <typename T>
void dropout_backward(Context& ctx, const T* dy, T* dx, size_t n, float p, const uint64_t* key) {
  dropout_forward<T>(ctx, dy, dx, n, p, key);  // the same mask and scale
}

void batch_key(Context&, const int32_t* idx, int n, uint64_t seed, uint64_t* key) {
  uint64_t h = mix64(seed);
  for (int i = 0; i < n; ++i) h = batch_key_step(h, idx[i]);
  *key = h;
}

void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale) {
  for (size_t i = 0; i < n; ++i) r[i] = (1.f - momentum) * r[i] + momentum * (scale * stat[i]);
}

void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill) {
  const uint64_t e = uint64_t(uint32_t(epoch[0])) | uint64_t(uint32_t(epoch[1])) << 32;
  const size_t plane = size_t(h) * w, img = size_t(c) * plane;
  parallel_pieces(ctx.pool(), size_t(n), 1, [&](int, size_t b, size_t end) {
    for (size_t s = b; s < end; ++s) {
      AugmentDraw d = augment_draw(seed, e, idx[s], pad);
      d.flip = d.flip && flip;
      for (int ch = 0; ch < c; ++ch) {
        const float* xp = x + s * img + size_t(ch) * plane;
        float* yp = y + s * img + size_t(ch) * plane;
        for (int i = 0; i < h; ++i)
          for (int j = 0; j < w; ++j) {
            int si = 0, sj = 0;
            yp[size_t(i) * w + j] = augment_source(d, i, j, h, w, &si, &sj) ? xp[size_t(si) * w + sj] : fill[ch];
          }
      }
    }
  });
}

#define ADASYNC_NORM_INSTANTIATE(T)                                                                             \
  template void batchnorm_forward_train<T>(Context&, const BnShape&, const T*, const T*, const T*, double, T*,  \
                                           T*, T*, T*, const T*, bool);                                       \
  template void batchnorm_forward_eval<T>(Context&, const BnShape&, const T*, const T*, const T*, const T*,     \
                                          const T*, double, T*);                                             \
  template void batchnorm_backward<T>(Context&, const BnShape&, const T*, const T*, const T*, const T*,         \
                                      const T*, T*, T*, T*, const T*);                                        \
  template void global_avgpool_forward<T>(Context&, int, int, int, const T*, T*);                              \
  template void global_avgpool_backward<T>(Context&, int, int, int, const T*, T*);                             \
  template void shortcut_add<T>(Context&, const ShortcutShape&, const T*, T*);                                 \
  template void shortcut_add_backward<T>(Context&, const ShortcutShape&, const T*, T*);                        \
  template void dropout_forward<T>(Context&, const T*, T*, size_t, float, const uint64_t*);                    \
  template void dropout_backward<T>(Context&, const T*, T*, size_t, float, const uint64_t*);
ADASYNC_NORM_INSTANTIATE(float)
ADASYNC_NORM_INSTANTIATE(double)
#undef ADASYNC_NORM_INSTANTIATE

}  // namespace adasync::cpu
