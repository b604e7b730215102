#include "kernels/cpu/ops_cpu.h"

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/conv_winograd.h"

#include "kernels/cpu/simd.h"

#include <cblas.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

namespace adasync::cpu {
namespace simd {
namespace {
#include "kernels/cpu/simd_kernels.inc"
}  // namespace
}  // namespace simd

namespace {

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

simd::ConvGeom geom(const ConvShape& s) {
  return {s.c, s.h, s.w, s.r, s.s, s.pad_h, s.pad_w, s.stride_h, s.stride_w, s.out_h(), s.out_w()};
}

// Float runs the leaf kernels of the CPU path in use; double (the oracle and
// the gradient checks) the same templates compiled here.
template <typename T>
void im2col_one(const ConvShape& s, const T* x, T* pad, T* col) {
  if constexpr (std::is_same_v<T, float>) simd::kernels().im2col(geom(s), x, pad, col);
  else simd::im2col_one<T>(geom(s), x, pad, col);
}

template <typename T>
void col2im_one(const ConvShape& s, const T* dcol, T* pad, T* dx) {
  if constexpr (std::is_same_v<T, float>) simd::kernels().col2im(geom(s), dcol, pad, dx);
  else simd::col2im_one<T>(geom(s), dcol, pad, dx);
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

// Runs f(slot, i) for i in [0, n), one image at a time to whichever thread
// comes free; `slot` < threads names the running thread, for its scratch.
template <typename F>
void for_each_image(Context& ctx, int n, F&& f) {
  parallel_pieces(ctx.pool(), size_t(std::max(n, 0)), 1, [&](int slot, size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) f(slot, int(i));
  });
}

// A Winograd convolution over the batch: pack(ws) writes the weights in the
// direct kernels' layout (wn floats), transformed once, then each image.
template <typename Pack>
void winograd_batch(Context& ctx, const winograd::Plan& p, int n, size_t wn, Pack&& pack, const float* in,
                    size_t in_img, const float* bias, float* out, size_t out_img) {
  const size_t un = p.filter_floats(), sc = p.scratch_floats();
  float* ws = static_cast<float*>(ctx.workspace(sizeof(float) * (wn + un + sc * size_t(pool_threads(ctx)))));
  pack(ws);
  winograd::transform_filter(p, ws, ws + wn);
  for_each_image(ctx, n, [&](int slot, int i) {
    winograd::image(p, ws + wn, in + size_t(i) * in_img, bias, ws + wn + un + size_t(slot) * sc,
                    out + size_t(i) * out_img);
  });
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

std::string blas_core() {
  const char* core = openblas_get_corename();
  return core != nullptr ? core : "";
}

std::string blas_core_note(const std::string& core, bool avx2) {
  if (!avx2 || core != "Prescott") return "";
  return "; OpenBLAS runs its SSE3 Prescott kernels here (OPENBLAS_CORETYPE=Haswell picks AVX2 ones)";
}

namespace {
// Terms per k-block of the path's GEMM: b's panel (256 x 64 floats) stays in L2.
constexpr int kSimdGemmK = 256;

// The rows x cols matrix a (row stride lda) transposed into the workspace
// (cols x rows, packed), the threads sharing its columns.
const float* transposed(Context& ctx, const float* a, int rows, int cols, int lda) {
  float* at = static_cast<float*>(ctx.workspace(sizeof(float) * size_t(rows) * size_t(cols)));
  parallel_for(ctx.pool(), size_t(cols), 256, [&](size_t c0, size_t c1) {
    direct::transpose(a + c0, rows, c1 - c0, size_t(lda), at + c0 * size_t(rows), size_t(rows));
  });
  return at;
}

// The linear layers' products (alpha 1, beta 0) on the AVX paths: the
// GemmPanel tiles, whose sums run over k in order whatever the vector width
// or thread split. The lanes run along a dimension with unit stride, in whole
// multiples of 16 (the same cut on both paths, so they agree bit for bit);
// the last m % 16 rows (or n % 16 columns), products with fewer than 16, and
// the scalar path go to OpenBLAS. (OpenBLAS may not know the CPU: 0.3.21 runs
// its SSE3 kernels on some AVX-512 Xeons, and the evaluation's batches of 500
// took ten times as long there as here.)
bool simd_gemm(Context& ctx, bool ta, bool tb, int m, int n, int k, const float* a, int lda, const float* b, int ldb,
               float* c, int ldc) {
  const auto& kern = simd::kernels();
  if (kern.gemm_panel == nullptr || (ta && tb) || k == 0) return false;
  simd::GemmPanel p{};
  if (!ta && tb) {
    // C^T = B A^T: lanes along C's rows (the batch), A packed transposed.
    const int rest = m % 16;
    if (m < 16) return false;
    if (rest != 0) {
      blas(false, true, rest, n, k, 1.f, a + size_t(m - rest) * lda, lda, b, ldb, 0.f, c + size_t(m - rest) * ldc,
           ldc);
      m -= rest;
    }
    const float* at = transposed(ctx, a, m, k, lda);
    // One k-block: C's tiles are stored transposed, and reloading them per
    // block would cost a quarter of the FMAs' time.
    p = {0, n, 0, m, k, k, b, size_t(ldb), 1, at, size_t(m), c, size_t(ldc), true};
  } else {
    const int rest = n % 16;
    if (n < 16) return false;
    if (rest != 0) {
      blas(ta, false, m, rest, k, 1.f, a, lda, b + (n - rest), ldb, 0.f, c + (n - rest), ldc);
      n -= rest;
    }
    if (ta) {
      // A^T packed row-major: its rows' terms adjacent, not one per row of A
      // (the first linear layer's weight gradient: 4 KB apart, one L1 set).
      a = transposed(ctx, a, k, m, lda), lda = k;
    }
    p = {0, m, 0, n, k, kSimdGemmK, a, size_t(lda), 1, b, size_t(ldb), c, size_t(ldc), false};
  }
  // Split the longer way in whole tiles: 30 rows (tiles are 6 or 5 rows), or
  // 64 columns.
  constexpr int kRows = 30, kCols = 64;
  const int row_units = (p.r1 + kRows - 1) / kRows, col_units = (p.c1 + kCols - 1) / kCols;
  const bool by_rows = row_units >= col_units;
  parallel_pieces(ctx.pool(), size_t(by_rows ? row_units : col_units), 1, [&](int, size_t u0, size_t u1) {
    simd::GemmPanel q = p;
    if (by_rows) q.r0 = int(u0) * kRows, q.r1 = std::min(p.r1, int(u1) * kRows);
    else q.c0 = int(u0) * kCols, q.c1 = std::min(p.c1, int(u1) * kCols);
    kern.gemm_panel(q);
  });
  return true;
}
}  // namespace

template <typename T>
void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc) {
  if (m == 0 || n == 0) return;
  if constexpr (std::is_same_v<T, float>)
    if (alpha == 1.f && beta == 0.f && simd_gemm(ctx, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc)) return;
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
    if constexpr (std::is_same_v<T, float>) simd::kernels().bias_add(y + r0 * cols, b, r1 - r0, cols);
    else simd::bias_add<T>(y + r0 * cols, b, r1 - r0, cols);
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
    if (winograd::forward_ok(s)) {
      winograd_batch(ctx, winograd::Plan(s.c, s.h, s.w, s.pad_h, s.pad_w, s.k, s.r, true), s.n, crs * size_t(s.k),
                     [&](float* ws) { direct::pack_forward(s, w, ws); }, x, in_img, b, y, out_img);
      return;
    }
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
    if (winograd::backward_data_ok(s)) {
      // The forward convolution of dy (padded by R-1-pad) with the flipped, transposed weights.
      winograd_batch(ctx, winograd::Plan(s.k, s.out_h(), s.out_w(), s.r - 1 - s.pad_h, s.s - 1 - s.pad_w, s.c, s.r, false), s.n,
                     crs * size_t(s.k), [&](float* ws) { direct::pack_backward_data(s, w, ws); }, dy, out_img, nullptr,
                     dx, in_img);
      return;
    }
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
  const size_t direct_scratch = size_t(s.c) * hp * wp + ohw * size_t(s.k) + size_t(s.k);
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
        // The bias sums from dyt: every channel's sum runs over the pixels in
        // order as below, and the loop over channels vectorises (one serial
        // chain per channel took as long as conv1's filter gradient).
        float* bias_acc = dyt + ohw * size_t(s.k);
        std::fill(bias_acc, bias_acc + s.k, 0.f);
        for (size_t q = 0; q < ohw; ++q) {
          const float* dq = dyt + q * size_t(s.k);
          for (int k = 0; k < s.k; ++k) bias_acc[k] += dq[k];
        }
        for (int k = 0; k < s.k; ++k) pb[k] += bias_acc[k];
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
  // Sum the group partials in group order (thread-count independent); the
  // direct kernels' weight partials are [c][r][s][k].
  parallel_for(ctx.pool(), part, 4096, [&](size_t b0, size_t b1) {
    for (size_t j = b0; j < b1; ++j) {
      T acc = partials[j];
      for (int g = 1; g < groups; ++g) acc += partials[size_t(g) * part + j];
      if (j >= wn) {
        if (db != nullptr) db[j - wn] = acc;
      } else if (use_direct) {
        dw[(j % size_t(s.k)) * crs + j / size_t(s.k)] = acc;
      } else {
        dw[j] = acc;
      }
    }
  });
}

template <typename T>
void maxpool2d_forward(Context& ctx, const PoolShape& s, const T* x, T* y, int32_t* argmax, bool relu) {
  const int OH = s.out_h(), OW = s.out_w();
  const size_t planes = size_t(s.n) * s.c, in_plane = size_t(s.h) * s.w, out_plane = size_t(OH) * OW;
  parallel_for(ctx.pool(), planes, 16, [&](size_t p0, size_t p1) {
    const T* xp = x + p0 * in_plane;
    T* yp = y + p0 * out_plane;
    int32_t* ap = argmax + p0 * out_plane;
    if constexpr (std::is_same_v<T, float>)
      simd::kernels().maxpool_forward(xp, yp, ap, p1 - p0, s.h, s.w, s.size, s.stride, OH, OW, relu);
    else simd::maxpool_forward<T>(xp, yp, ap, p1 - p0, s.h, s.w, s.size, s.stride, OH, OW, relu);
  });
}

template <typename T>
void maxpool2d_backward(Context& ctx, const PoolShape& s, const T* dy, const int32_t* argmax, T* dx) {
  const size_t planes = size_t(s.n) * s.c, in_plane = size_t(s.h) * s.w;
  const size_t out_plane = size_t(s.out_h()) * s.out_w();
  parallel_for(ctx.pool(), planes, 8, [&](size_t p0, size_t p1) {
    const T* dyp = dy + p0 * out_plane;
    const int32_t* ap = argmax + p0 * out_plane;
    T* dxp = dx + p0 * in_plane;
    if constexpr (std::is_same_v<T, float>)
      simd::kernels().maxpool_backward(dyp, ap, dxp, p1 - p0, in_plane, out_plane);
    else simd::maxpool_backward<T>(dyp, ap, dxp, p1 - p0, in_plane, out_plane);
  });
}

template <typename T>
void relu_forward(Context& ctx, const T* x, T* y, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    if constexpr (std::is_same_v<T, float>) simd::kernels().relu_forward(x + b, y + b, e - b);
    else simd::relu_forward<T>(x + b, y + b, e - b);
  });
}

template <typename T>
void relu_backward(Context& ctx, const T* y, const T* dy, T* dx, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    if constexpr (std::is_same_v<T, float>) simd::kernels().relu_backward(y + b, dy + b, dx + b, e - b);
    else simd::relu_backward<T>(y + b, dy + b, dx + b, e - b);
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
    simd::kernels().sgd_update(w + b, g + b, velocity == nullptr ? nullptr : velocity + b, e - b, lr, mu,
                               weight_decay, nesterov);
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
    if constexpr (std::is_same_v<T, float>) simd::kernels().axpy(a, x + b, y + b, e - b);
    else simd::axpy<T>(a, x + b, y + b, e - b);
  });
}

template <typename T>
void scale(Context& ctx, T a, const T* x, T* y, size_t n) {
  parallel_for(ctx.pool(), n, kGrain, [&](size_t b, size_t e) {
    if constexpr (std::is_same_v<T, float>) simd::kernels().scale(a, x + b, y + b, e - b);
    else simd::scale<T>(a, x + b, y + b, e - b);
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
