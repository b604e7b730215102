#include "kernels/cpu/ops_cpu.h"

#include "kernels/cpu/conv_direct.h"

#include <cblas.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace adasync::cpu {
namespace {

// Elementwise loops are split in chunks of this many items.
constexpr size_t kGrain = 1 << 15;
// Columns (or rows) per block of a split GEMM.
constexpr int kGemmBlock = 256;

void blas(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
          float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
              lda, b, ldb, beta, c, ldc);
}
void blas(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda, const double* b,
          int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, alpha, a,
              lda, b, ldb, beta, c, ldc);
}

// Short runs (an output row of a convolution: 14 or 28 values in the zoo) are
// copied and accumulated with AVX-512 masked loads and stores when the build
// has them: one instruction pair per 16 values and no scalar remainder.
template <typename T>
inline void copy_run(T* __restrict dst, const T* __restrict src, int n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, _mm512_loadu_ps(src + i));
    if (i < n) {
      const __mmask16 m = __mmask16((1u << (n - i)) - 1);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
    }
    return;
  }
#endif
  for (int i = 0; i < n; ++i) dst[i] = src[i];
}

template <typename T>
inline void add_run(T* __restrict dst, const T* __restrict src, int n) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float>) {
    int i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_add_ps(_mm512_loadu_ps(dst + i), _mm512_loadu_ps(src + i)));
    if (i < n) {
      const __mmask16 m = __mmask16((1u << (n - i)) - 1);
      _mm512_mask_storeu_ps(dst + i, m,
                            _mm512_add_ps(_mm512_maskz_loadu_ps(m, dst + i), _mm512_maskz_loadu_ps(m, src + i)));
    }
    return;
  }
#endif
  for (int i = 0; i < n; ++i) dst[i] += src[i];
}

// The image (C planes) staged with its zero border: the im2col rows then copy
// plain runs of OW values with no bounds tests. `pad` has C*(H+2ph)*(W+2pw) room.
template <typename T>
void stage_padded(const ConvShape& s, const T* x, T* pad) {
  const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  std::fill(pad, pad + size_t(s.c) * hp * wp, T(0));
  for (int c = 0; c < s.c; ++c)
    for (int ih = 0; ih < s.h; ++ih) {
      const T* src = x + (size_t(c) * s.h + ih) * s.w;
      T* dst = pad + (size_t(c) * hp + ih + s.pad_h) * wp + s.pad_w;
      copy_run(dst, src, s.w);
    }
}

// One image: col[(c*R + r)*S + s][oh*OW + ow] = x[c][oh*sh - ph + r][ow*sw - pw + s] (0 outside),
// read from the padded staging copy.
template <typename T>
void im2col_one(const ConvShape& s, const T* x, T* pad, T* col) {
  const int OH = s.out_h(), OW = s.out_w();
  const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  const size_t ohw = size_t(OH) * OW;
  stage_padded(s, x, pad);
  for (int c = 0; c < s.c; ++c)
    for (int rr = 0; rr < s.r; ++rr)
      for (int ss = 0; ss < s.s; ++ss) {
        T* __restrict out = col + ((size_t(c) * s.r + rr) * s.s + ss) * ohw;
        const T* in = pad + (size_t(c) * hp + rr) * wp + ss;
        for (int oh = 0; oh < OH; ++oh) {
          const T* __restrict src = in + size_t(oh) * s.stride_h * wp;
          T* __restrict o = out + size_t(oh) * OW;
          if (s.stride_w == 1) {
            copy_run(o, src, OW);
          } else {
            for (int ow = 0; ow < OW; ++ow) o[ow] = src[ow * s.stride_w];
          }
        }
      }
}

// One image: dx (overwritten) = scatter-add of dcol rows, accumulated in a
// padded plane (no bounds tests) whose interior is then copied out.
template <typename T>
void col2im_one(const ConvShape& s, const T* dcol, T* pad, T* dx) {
  const int OH = s.out_h(), OW = s.out_w();
  const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  const size_t ohw = size_t(OH) * OW;
  std::fill(pad, pad + size_t(s.c) * hp * wp, T(0));
  for (int c = 0; c < s.c; ++c)
    for (int rr = 0; rr < s.r; ++rr)
      for (int ss = 0; ss < s.s; ++ss) {
        const T* in = dcol + ((size_t(c) * s.r + rr) * s.s + ss) * ohw;
        T* out = pad + (size_t(c) * hp + rr) * wp + ss;
        for (int oh = 0; oh < OH; ++oh) {
          T* __restrict dst = out + size_t(oh) * s.stride_h * wp;
          const T* __restrict src = in + size_t(oh) * OW;
          if (s.stride_w == 1) {
            add_run(dst, src, OW);
          } else {
            for (int ow = 0; ow < OW; ++ow) dst[ow * s.stride_w] += src[ow];
          }
        }
      }
  for (int c = 0; c < s.c; ++c)
    for (int ih = 0; ih < s.h; ++ih) {
      const T* src = pad + (size_t(c) * hp + ih + s.pad_h) * wp + s.pad_w;
      T* dst = dx + (size_t(c) * s.h + ih) * s.w;
      copy_run(dst, src, s.w);
    }
}

// Scratch floats per thread for one image: its im2col matrix and padded copy.
size_t conv_scratch(const ConvShape& s) {
  return size_t(s.c) * s.r * s.s * s.out_h() * s.out_w() +
         size_t(s.c) * (s.h + 2 * s.pad_h) * (s.w + 2 * s.pad_w);
}

// A 1x1, stride-1, unpadded convolution reads its input as the im2col matrix.
bool is_pointwise(const ConvShape& s) {
  return s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Images per backward-filter group: partial weight gradients are formed per
// fixed group of images and summed in group order, so the result does not
// depend on the thread count.
constexpr int kFilterGroup = 8;

int pool_threads(Context& ctx) { return ctx.pool() != nullptr ? ctx.pool()->size() : 1; }

// Runs f(slot, i) for i in [0, n), spread over the pool; `slot` < threads
// identifies the running chunk so it can own a scratch area.
template <typename F>
void for_each_image(Context& ctx, int n, F&& f) {
  if (ctx.pool() != nullptr && ctx.pool()->size() > 1 && n > 1) {
    ctx.pool()->parallel_chunks(size_t(n), 1, [&](int slot, size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) f(slot, int(i));
    });
  } else {
    for (int i = 0; i < n; ++i) f(0, i);
  }
}

}  // namespace

void set_blas_threads(int threads) { openblas_set_num_threads(std::max(1, threads)); }
namespace {
// OpenBLAS starts with all cores; adasync threads its own loops, so BLAS runs
// single-threaded unless someone asks otherwise.
const bool blas_single = [] {
  openblas_set_num_threads(1);
  return true;
}();
}  // namespace
int blas_threads() { return openblas_get_num_threads(); }

template <typename T>
void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) c[size_t(i) * ldc + j] = beta == T(0) ? T(0) : beta * c[size_t(i) * ldc + j];
    return;
  }
  // OpenBLAS runs single-threaded (its idle threads would spin against ours).
  // Large products are cut into blocks of kGemmBlock columns (or rows) that
  // threads share; the cut depends on the shape alone, so every thread count
  // makes the same BLAS calls and gets bit-identical results.
  const double flops = 2.0 * m * n * k;
  const bool split_n = n >= m;
  const int extent = split_n ? n : m;
  if (flops < 4e6 || extent < 2 * kGemmBlock) {
    blas(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  const int blocks = (extent + kGemmBlock - 1) / kGemmBlock;
  parallel_for(ctx.pool(), size_t(blocks), 1, [&](size_t b0, size_t b1) {
    for (size_t blk = b0; blk < b1; ++blk) {
      const int lo = int(blk) * kGemmBlock, hi = std::min(extent, lo + kGemmBlock);
      if (split_n) {
        const T* bj = trans_b ? b + size_t(lo) * ldb : b + lo;
        blas(trans_a, trans_b, m, hi - lo, k, alpha, a, lda, bj, ldb, beta, c + lo, ldc);
      } else {
        const T* ai = trans_a ? a + lo : a + size_t(lo) * lda;
        blas(trans_a, trans_b, hi - lo, n, k, alpha, ai, lda, b, ldb, beta, c + size_t(lo) * ldc, ldc);
      }
    }
  });
}

template <typename T>
void bias_add(Context& ctx, T* y, const T* b, int rows, int cols) {
  parallel_for(ctx.pool(), size_t(rows), std::max<size_t>(1, kGrain / std::max(cols, 1)), [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; ++r) {
      T* yr = y + r * cols;
      for (int c = 0; c < cols; ++c) yr[c] += b[c];
    }
  });
}

template <typename T>
void bias_grad(Context& ctx, const T* dy, T* db, int rows, int cols) {
  parallel_for(ctx.pool(), size_t(cols), 64, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; ++c) db[c] = T(0);
    for (int r = 0; r < rows; ++r) {
      const T* dr = dy + size_t(r) * cols;
      for (size_t c = c0; c < c1; ++c) db[c] += dr[c];
    }
  });
}

template <typename T>
void conv2d_forward(Context& ctx, const ConvShape& s, const T* x, const T* w, const T* b, T* y) {
  const size_t ohw = size_t(s.out_h()) * s.out_w(), crs = size_t(s.c) * s.r * s.s;
  const size_t in_img = size_t(s.c) * s.h * s.w, out_img = size_t(s.k) * ohw;
  if constexpr (std::is_same_v<T, float>) {
    if (direct::forward_ok(s)) {
      // Direct kernels: packed weights once, each image padded in cache.
      const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
      const size_t pad = size_t(s.c) * hp * wp, wn = crs * size_t(s.k);
      float* ws = static_cast<float*>(ctx.workspace(sizeof(float) * (wn + pad * size_t(pool_threads(ctx)))));
      direct::pack_forward(s, w, ws);
      for_each_image(ctx, s.n, [&](int slot, int i) {
        float* pi = ws + wn + size_t(slot) * pad;
        direct::pad_planes(x + size_t(i) * in_img, s.c, s.h, s.w, s.pad_h, s.pad_w, pi);
        direct::conv_image(pi, s.c, hp, wp, s.r, s.s, ws, s.k, b, y + size_t(i) * out_img);
      });
      return;
    }
  }
  const bool direct = is_pointwise(s);
  const size_t scratch = conv_scratch(s);
  T* ws = direct ? nullptr : static_cast<T*>(ctx.workspace(sizeof(T) * scratch * size_t(pool_threads(ctx))));
  // Per image: y_i[K, OHW] = W[K, CRS] * col_i[CRS, OHW] + b, with col_i built in cache.
  for_each_image(ctx, s.n, [&](int slot, int i) {
    const T* col = x + size_t(i) * in_img;
    if (!direct) {
      T* c = ws + size_t(slot) * scratch;
      im2col_one(s, x + size_t(i) * in_img, c + crs * ohw, c);
      col = c;
    }
    T* yi = y + size_t(i) * out_img;
    blas(false, false, s.k, int(ohw), int(crs), T(1), w, int(crs), col, int(ohw), T(0), yi, int(ohw));
    if (b != nullptr)
      for (int k = 0; k < s.k; ++k) {
        T* row = yi + size_t(k) * ohw;
        const T bk = b[k];
        for (size_t q = 0; q < ohw; ++q) row[q] += bk;
      }
  });
}

template <typename T>
void conv2d_backward_data(Context& ctx, const ConvShape& s, const T* dy, const T* w, T* dx) {
  const size_t ohw = size_t(s.out_h()) * s.out_w(), crs = size_t(s.c) * s.r * s.s;
  const size_t in_img = size_t(s.c) * s.h * s.w, out_img = size_t(s.k) * ohw;
  if constexpr (std::is_same_v<T, float>) {
    if (direct::backward_data_ok(s)) {
      // dx is the convolution of dy (padded by R-1-pad) with the flipped,
      // transposed weights: the forward kernel with K and C swapped.
      const int ph = s.r - 1 - s.pad_h, pw = s.s - 1 - s.pad_w;
      const int hp = s.out_h() + 2 * ph, wp = s.out_w() + 2 * pw;
      const size_t pad = size_t(s.k) * hp * wp, wn = crs * size_t(s.k);
      float* ws = static_cast<float*>(ctx.workspace(sizeof(float) * (wn + pad * size_t(pool_threads(ctx)))));
      direct::pack_backward_data(s, w, ws);
      for_each_image(ctx, s.n, [&](int slot, int i) {
        float* pi = ws + wn + size_t(slot) * pad;
        direct::pad_planes(dy + size_t(i) * out_img, s.k, s.out_h(), s.out_w(), ph, pw, pi);
        direct::conv_image(pi, s.k, hp, wp, s.r, s.s, ws, s.c, nullptr, dx + size_t(i) * in_img);
      });
      return;
    }
  }
  const bool direct = is_pointwise(s);
  const size_t scratch = conv_scratch(s);
  T* ws = direct ? nullptr : static_cast<T*>(ctx.workspace(sizeof(T) * scratch * size_t(pool_threads(ctx))));
  // Per image: dcol_i[CRS, OHW] = W^T * dy_i[K, OHW], scattered back into dx_i.
  for_each_image(ctx, s.n, [&](int slot, int i) {
    T* dxi = dx + size_t(i) * in_img;
    T* dcol = direct ? dxi : ws + size_t(slot) * scratch;
    blas(true, false, int(crs), int(ohw), s.k, T(1), w, int(crs), dy + size_t(i) * out_img, int(ohw), T(0), dcol,
         int(ohw));
    if (!direct) col2im_one(s, dcol, dcol + crs * ohw, dxi);
  });
}

template <typename T>
void conv2d_backward_filter(Context& ctx, const ConvShape& s, const T* x, const T* dy, T* dw, T* db) {
  const size_t ohw = size_t(s.out_h()) * s.out_w(), crs = size_t(s.c) * s.r * s.s;
  const size_t in_img = size_t(s.c) * s.h * s.w, out_img = size_t(s.k) * ohw, wn = size_t(s.k) * crs;
  const bool direct = is_pointwise(s);
  const int groups = (s.n + kFilterGroup - 1) / kFilterGroup;
  const int threads = pool_threads(ctx);
  bool use_direct = false;
  if constexpr (std::is_same_v<T, float>) use_direct = direct::backward_filter_ok(s);
  // Workspace: per-thread im2col (or padded image and transposed dy), then
  // per-group partial dW and db.
  const int hp = s.h + 2 * s.pad_h, wp = s.w + 2 * s.pad_w;
  const size_t direct_scratch = size_t(s.c) * hp * wp + ohw * size_t(s.k);
  const size_t scratch = use_direct ? direct_scratch : conv_scratch(s);
  const size_t col_floats = direct && !use_direct ? 0 : scratch * size_t(threads);
  const size_t part = wn + size_t(s.k);
  T* ws = static_cast<T*>(ctx.workspace(sizeof(T) * (col_floats + part * size_t(groups))));
  T* partials = ws + col_floats;
  auto direct_group = [&](int slot, int g) {
    if constexpr (std::is_same_v<T, float>) {
      T* pw_ = partials + size_t(g) * part;
      T* pb = pw_ + wn;
      std::fill(pb, pb + s.k, T(0));
      float* padded = ws + size_t(slot) * scratch;
      float* dyt = padded + size_t(s.c) * hp * wp;
      const int i0 = g * kFilterGroup, i1 = std::min(s.n, i0 + kFilterGroup);
      for (int i = i0; i < i1; ++i) {
        direct::pad_planes(x + size_t(i) * in_img, s.c, s.h, s.w, s.pad_h, s.pad_w, padded);
        const T* dyi = dy + size_t(i) * out_img;
        direct::transpose(dyi, s.k, ohw, dyt);
        direct::filter_image(padded, s.c, hp, wp, s.r, s.s, dyt, s.k, pw_, i != i0);
        for (int k = 0; k < s.k; ++k) {
          const T* row = dyi + size_t(k) * ohw;
          T acc = T(0);
          for (size_t q = 0; q < ohw; ++q) acc += row[q];
          pb[k] += acc;
        }
      }
    }
  };
  auto group_body = [&](int slot, int g) {
    T* pw = partials + size_t(g) * part;
    T* pb = pw + wn;
    std::fill(pb, pb + s.k, T(0));
    const int i0 = g * kFilterGroup, i1 = std::min(s.n, i0 + kFilterGroup);
    for (int i = i0; i < i1; ++i) {
      const T* col = x + size_t(i) * in_img;
      if (!direct) {
        T* c = ws + size_t(slot) * scratch;
        im2col_one(s, x + size_t(i) * in_img, c + crs * ohw, c);
        col = c;
      }
      const T* dyi = dy + size_t(i) * out_img;
      // dW_g += dy_i[K, OHW] * col_i^T[OHW, CRS]
      blas(false, true, s.k, int(crs), int(ohw), T(1), dyi, int(ohw), col, int(ohw), i == i0 ? T(0) : T(1), pw,
           int(crs));
      for (int k = 0; k < s.k; ++k) {
        const T* row = dyi + size_t(k) * ohw;
        T acc = T(0);
        for (size_t q = 0; q < ohw; ++q) acc += row[q];
        pb[k] += acc;
      }
    }
  };
  if (use_direct) for_each_image(ctx, groups, direct_group);
  else for_each_image(ctx, groups, group_body);
  // Sum the group partials in group order (thread-count independent).
  parallel_for(ctx.pool(), part, 4096, [&](size_t b0, size_t b1) {
    for (size_t j = b0; j < b1; ++j) {
      T acc = partials[j];
      for (int g = 1; g < groups; ++g) acc += partials[size_t(g) * part + j];
      if (j < wn) dw[j] = acc;
      else if (db != nullptr) db[j - wn] = acc;
    }
  });
}

template <typename T>
void maxpool2d_forward(Context& ctx, const PoolShape& s, const T* x, T* y, int32_t* argmax, bool relu) {
  const int OH = s.out_h(), OW = s.out_w();
  const size_t planes = size_t(s.n) * s.c, in_plane = size_t(s.h) * s.w, out_plane = size_t(OH) * OW;
  parallel_for(ctx.pool(), planes, 16, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      const T* xp = x + p * in_plane;
      T* yp = y + p * out_plane;
      int32_t* ap = argmax + p * out_plane;
      if (s.size == 2 && s.stride == 2) {
        // The common case, branch-free (a mispredicted branch per window costs
        // more than the loads): first maximum of (0,0), (0,1), (1,0), (1,1).
        for (int oh = 0; oh < OH; ++oh) {
          const T* r0 = xp + size_t(2 * oh) * s.w;
          const T* r1 = r0 + s.w;
          T* yo = yp + size_t(oh) * OW;
          int32_t* ao = ap + size_t(oh) * OW;
          const int32_t base = 2 * oh * s.w;
          for (int ow = 0; ow < OW; ++ow) {
            const T v00 = r0[2 * ow], v01 = r0[2 * ow + 1], v10 = r1[2 * ow], v11 = r1[2 * ow + 1];
            // std::max(a, b) keeps a unless b > a: first-maximum order, no branch.
            const T mt = std::max(v00, v01), mb = std::max(v10, v11);
            const int32_t it = int32_t(v01 > v00), ib = s.w + int32_t(v11 > v10);
            const int32_t bottom = int32_t(mb > mt);
            T v = std::max(mt, mb);
            int32_t a = base + 2 * ow + it + bottom * (ib - it);
            if (relu) {
              const int32_t pos = int32_t(v > T(0));
              a = (a + 1) * pos - 1;
              v = std::max(v, T(0));
            }
            yo[ow] = v;
            ao[ow] = a;
          }
        }
        continue;
      }
      for (int oh = 0; oh < OH; ++oh) {
        for (int ow = 0; ow < OW; ++ow) {
          int32_t a = (oh * s.stride) * s.w + ow * s.stride;
          T v = xp[a];
          for (int i = 0; i < s.size; ++i)
            for (int j = 0; j < s.size; ++j) {
              const int32_t idx = (oh * s.stride + i) * s.w + ow * s.stride + j;
              if (xp[idx] > v) v = xp[idx], a = idx;
            }
          if (relu && !(v > T(0))) v = T(0), a = -1;
          yp[size_t(oh) * OW + ow] = v;
          ap[size_t(oh) * OW + ow] = a;
        }
      }
    }
  });
}

template <typename T>
void maxpool2d_backward(Context& ctx, const PoolShape& s, const T* dy, const int32_t* argmax, T* dx) {
  const size_t planes = size_t(s.n) * s.c, in_plane = size_t(s.h) * s.w;
  const size_t out_plane = size_t(s.out_h()) * s.out_w();
  parallel_for(ctx.pool(), planes, 8, [&](size_t p0, size_t p1) {
    for (size_t p = p0; p < p1; ++p) {
      T* dxp = dx + p * in_plane;
      std::fill(dxp, dxp + in_plane, T(0));
      const int32_t* ap = argmax + p * out_plane;
      const T* dyp = dy + p * out_plane;
      for (size_t o = 0; o < out_plane; ++o)
        if (ap[o] >= 0) dxp[ap[o]] += dyp[o];
    }
  });
}

template <typename T>
void relu_forward(Context& ctx, const T* x, T* y, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) y[i] = x[i] > T(0) ? x[i] : T(0);
  });
}

template <typename T>
void relu_backward(Context& ctx, const T* y, const T* dy, T* dx, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const T d = dy[i];  // unconditional load: the select vectorises
      dx[i] = y[i] > T(0) ? d : T(0);
    }
  });
}

template <typename T>
void softmax_xent(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes, T* loss,
                  T* dlogits) {
  double total = 0;
  for (int r = 0; r < rows; ++r) {
    const T* z = logits + size_t(r) * classes;
    const int y = labels[r];
    EXPECTS(y >= 0 && y < classes, "label " << y << " of row " << r << " outside [0, " << classes << ")");
    T mx = z[0];
    for (int c = 1; c < classes; ++c) mx = std::max(mx, z[c]);
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += std::exp(double(z[c] - mx));
    const double lse = double(mx) + std::log(sum);
    total += lse - double(z[y]);
    if (dlogits != nullptr) {
      T* d = dlogits + size_t(r) * classes;
      for (int c = 0; c < classes; ++c) {
        const double p = std::exp(double(z[c]) - lse);
        d[c] = T((p - (c == y ? 1.0 : 0.0)) / rows);
      }
    }
  }
  *loss = T(total / rows);
}

template <typename T>
void count_correct(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct) {
  int32_t n = 0;
  for (int r = 0; r < rows; ++r) {
    const T* z = logits + size_t(r) * classes;
    int best = 0;
    for (int c = 1; c < classes; ++c)
      if (z[c] > z[best]) best = c;
    n += best == labels[r];
  }
  *correct = n;
}

void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      const float gi = g[i] + weight_decay * w[i];
      if (velocity == nullptr) {
        w[i] -= lr * gi;
      } else {
        const float v = mu * velocity[i] + gi;
        velocity[i] = v;
        w[i] -= lr * (nesterov ? gi + mu * v : v);
      }
    }
  });
}

void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count,
                 size_t dim, float* out, int32_t* out_labels) {
  parallel_for(ctx.pool(), size_t(count), 8, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      std::memcpy(out + i * dim, rows + size_t(idx[i]) * dim, sizeof(float) * dim);
      out_labels[i] = labels[idx[i]];
    }
  });
}

void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count) {
  const int chunks = ctx.pool() ? ctx.pool()->chunks_for(n, kGrain) : 1;
  std::vector<int64_t> part(size_t(std::max(chunks, 1)), 0);
  auto body = [&](int c, size_t b, size_t e) {
    int64_t bad = 0;
    for (size_t i = b; i < e; ++i) bad += !std::isfinite(x[i]);
    part[size_t(c)] = bad;
  };
  if (ctx.pool() && chunks > 1) ctx.pool()->parallel_chunks(n, kGrain, body);
  else body(0, 0, n);
  int64_t total = 0;
  for (int64_t p : part) total += p;
  *count = int32_t(std::min<int64_t>(total, INT32_MAX));
}

template <typename T>
void fill(Context& ctx, T* x, T value, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) { std::fill(x + b, x + e, value); });
}

template <typename T>
void axpy(Context& ctx, T a, const T* x, T* y, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) y[i] += a * x[i];
  });
}

template <typename T>
void scale(Context& ctx, T a, const T* x, T* y, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) y[i] = a * x[i];
  });
}

#define ADASYNC_CPU_INSTANTIATE(T)                                                                             \
  template void gemm<T>(Context&, bool, bool, int, int, int, T, const T*, int, const T*, int, T, T*, int);    \
  template void bias_add<T>(Context&, T*, const T*, int, int);                                                 \
  template void bias_grad<T>(Context&, const T*, T*, int, int);                                                \
  template void conv2d_forward<T>(Context&, const ConvShape&, const T*, const T*, const T*, T*);               \
  template void conv2d_backward_data<T>(Context&, const ConvShape&, const T*, const T*, T*);                   \
  template void conv2d_backward_filter<T>(Context&, const ConvShape&, const T*, const T*, T*, T*);             \
  template void maxpool2d_forward<T>(Context&, const PoolShape&, const T*, T*, int32_t*, bool);                \
  template void maxpool2d_backward<T>(Context&, const PoolShape&, const T*, const int32_t*, T*);               \
  template void relu_forward<T>(Context&, const T*, T*, size_t);                                               \
  template void relu_backward<T>(Context&, const T*, const T*, T*, size_t);                                    \
  template void softmax_xent<T>(Context&, const T*, const int32_t*, int, int, T*, T*);                         \
  template void count_correct<T>(Context&, const T*, const int32_t*, int, int, int32_t*);                      \
  template void fill<T>(Context&, T*, T, size_t);                                                              \
  template void axpy<T>(Context&, T, const T*, T*, size_t);                                                    \
  template void scale<T>(Context&, T, const T*, T*, size_t);

ADASYNC_CPU_INSTANTIATE(float)
ADASYNC_CPU_INSTANTIATE(double)

}  // namespace adasync::cpu
