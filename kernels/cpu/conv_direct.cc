#include "kernels/cpu/conv_direct.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace adasync::cpu::direct {

#if defined(__AVX512F__)
bool available() {
  static const bool on = std::getenv("ADASYNC_NO_DIRECT_CONV") == nullptr;
  return on;
}
#else
bool available() { return false; }
#endif

namespace {
bool small_square(const ConvShape& s) { return s.r == s.s && (s.r == 3 || s.r == 5) && s.stride_h == 1 && s.stride_w == 1; }
}  // namespace

bool forward_ok(const ConvShape& s) { return available() && small_square(s) && s.k % 16 == 0; }
bool backward_data_ok(const ConvShape& s) {
  return available() && small_square(s) && s.c % 16 == 0 && s.pad_h <= s.r - 1 && s.pad_w <= s.s - 1;
}
bool backward_filter_ok(const ConvShape& s) { return available() && small_square(s) && s.k % 16 == 0; }

void pack_forward(const ConvShape& s, const float* w, float* wt) {
  for (int k = 0; k < s.k; ++k)
    for (int c = 0; c < s.c; ++c)
      for (int r = 0; r < s.r; ++r)
        for (int q = 0; q < s.s; ++q)
          wt[((size_t(c) * s.r + r) * s.s + q) * s.k + k] = w[((size_t(k) * s.c + c) * s.r + r) * s.s + q];
}

void pack_backward_data(const ConvShape& s, const float* w, float* wt) {
  for (int k = 0; k < s.k; ++k)
    for (int c = 0; c < s.c; ++c)
      for (int r = 0; r < s.r; ++r)
        for (int q = 0; q < s.s; ++q)
          wt[((size_t(k) * s.r + r) * s.s + q) * s.c + c] =
              w[((size_t(k) * s.c + c) * s.r + (s.r - 1 - r)) * s.s + (s.s - 1 - q)];
}

void pad_planes(const float* src, int c, int h, int w, int ph, int pw, float* dst) {
  const int hp = h + 2 * ph, wp = w + 2 * pw;
  std::fill(dst, dst + size_t(c) * hp * wp, 0.f);
  for (int ch = 0; ch < c; ++ch)
    for (int y = 0; y < h; ++y)
      std::memcpy(dst + (size_t(ch) * hp + y + ph) * wp + pw, src + (size_t(ch) * h + y) * w, sizeof(float) * size_t(w));
}

void transpose(const float* src, int k, size_t n, float* dst) {
  for (int kk = 0; kk < k; ++kk) {
    const float* row = src + size_t(kk) * n;
    for (size_t p = 0; p < n; ++p) dst[p * size_t(k) + size_t(kk)] = row[p];
  }
}

#if defined(__AVX512F__)
namespace {

// J output pixels of one row x 16*KB output channels, accumulated in
// registers over every (ci, r, s); the weights stream from cache once per tile.
template <int KB, int J>
void conv_tile(const float* in, int cin, int hp, int wp, int R, int S, const float* wt, int kout, int k0,
               const float* bias, int oh, int ow0, float* out, int oh_n, int ow_n) {
  __m512 acc[J][KB];
  for (int kb = 0; kb < KB; ++kb) {
    const __m512 b = bias != nullptr ? _mm512_loadu_ps(bias + k0 + 16 * kb) : _mm512_setzero_ps();
    for (int j = 0; j < J; ++j) acc[j][kb] = b;
  }
  const size_t plane = size_t(hp) * wp;
  for (int c = 0; c < cin; ++c) {
    const float* inc = in + size_t(c) * plane;
    for (int r = 0; r < R; ++r) {
      const float* row = inc + size_t(oh + r) * wp + ow0;
      const float* wr = wt + (size_t(c) * R + r) * S * size_t(kout) + k0;
      for (int q = 0; q < S; ++q) {
        __m512 wv[KB];
        for (int kb = 0; kb < KB; ++kb) wv[kb] = _mm512_loadu_ps(wr + size_t(q) * kout + 16 * kb);
#pragma GCC unroll 24
        for (int j = 0; j < J; ++j) {
          const __m512 xv = _mm512_set1_ps(row[j + q]);
          for (int kb = 0; kb < KB; ++kb) acc[j][kb] = _mm512_fmadd_ps(wv[kb], xv, acc[j][kb]);
        }
      }
    }
  }
  // Channels are in the lanes; the output is channel-major (NCHW).
  alignas(64) float tile[J][16 * KB];
  for (int j = 0; j < J; ++j)
    for (int kb = 0; kb < KB; ++kb) _mm512_store_ps(&tile[j][16 * kb], acc[j][kb]);
  const size_t ohw = size_t(oh_n) * ow_n;
  float* o = out + size_t(oh) * ow_n + ow0;
  for (int k = 0; k < 16 * KB; ++k) {
    float* ok = o + size_t(k0 + k) * ohw;
    for (int j = 0; j < J; ++j) ok[j] = tile[j][k];
  }
}

template <int KB>
void conv_row(const float* in, int cin, int hp, int wp, int R, int S, const float* wt, int kout, int k0,
              const float* bias, int oh, float* out, int oh_n, int ow_n) {
  constexpr int J = 24 / KB;
  int ow = 0;
  for (; ow + J <= ow_n; ow += J) conv_tile<KB, J>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, ow, out, oh_n, ow_n);
  // Tail: the largest instantiated widths first.
  while (ow < ow_n) {
    const int left = ow_n - ow;
    if (left >= 8) {
      conv_tile<KB, 8>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, ow, out, oh_n, ow_n);
      ow += 8;
    } else if (left >= 4) {
      conv_tile<KB, 4>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, ow, out, oh_n, ow_n);
      ow += 4;
    } else if (left >= 2) {
      conv_tile<KB, 2>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, ow, out, oh_n, ow_n);
      ow += 2;
    } else {
      conv_tile<KB, 1>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, ow, out, oh_n, ow_n);
      ow += 1;
    }
  }
}

// dw[k0 .. k0+16KB)[c][r][0..S) over all output pixels, S * KB accumulators.
template <int S, int KB>
void filter_row(const float* in, int cin, int hp, int wp, int c, int r, const float* dyt, int kout, int k0,
                float* dw, bool accumulate, int oh_n, int ow_n) {
  __m512 acc[S][KB];
  for (int q = 0; q < S; ++q)
    for (int kb = 0; kb < KB; ++kb) acc[q][kb] = _mm512_setzero_ps();
  const float* inc = in + size_t(c) * hp * wp;
  for (int oh = 0; oh < oh_n; ++oh) {
    const float* row = inc + size_t(oh + r) * wp;
    const float* d = dyt + size_t(oh) * ow_n * kout + k0;
    for (int ow = 0; ow < ow_n; ++ow) {
      __m512 dv[KB];
      for (int kb = 0; kb < KB; ++kb) dv[kb] = _mm512_loadu_ps(d + size_t(ow) * kout + 16 * kb);
#pragma GCC unroll 8
      for (int q = 0; q < S; ++q) {
        const __m512 xv = _mm512_set1_ps(row[ow + q]);
        for (int kb = 0; kb < KB; ++kb) acc[q][kb] = _mm512_fmadd_ps(xv, dv[kb], acc[q][kb]);
      }
    }
  }
  alignas(64) float tile[S][16 * KB];
  for (int q = 0; q < S; ++q)
    for (int kb = 0; kb < KB; ++kb) _mm512_store_ps(&tile[q][16 * kb], acc[q][kb]);
  const size_t crs = size_t(cin) * S * S;  // R == S
  for (int k = 0; k < 16 * KB; ++k) {
    float* dk = dw + size_t(k0 + k) * crs + (size_t(c) * S + r) * S;
    for (int q = 0; q < S; ++q) dk[q] = accumulate ? dk[q] + tile[q][k] : tile[q][k];
  }
}

}  // namespace

void conv_image(const float* in, int cin, int hp, int wp, int R, int S, const float* wt, int kout, const float* bias,
                float* out) {
  const int oh_n = hp - R + 1, ow_n = wp - S + 1;
  for (int k0 = 0; k0 < kout;) {
    const int left = (kout - k0) / 16;
    for (int oh = 0; oh < oh_n; ++oh) {
      if (left >= 4) conv_row<4>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, out, oh_n, ow_n);
      else if (left == 3) conv_row<3>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, out, oh_n, ow_n);
      else if (left == 2) conv_row<2>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, out, oh_n, ow_n);
      else conv_row<1>(in, cin, hp, wp, R, S, wt, kout, k0, bias, oh, out, oh_n, ow_n);
    }
    k0 += 16 * std::min(left, 4);
  }
}

void filter_image(const float* in, int cin, int hp, int wp, int R, int S, const float* dyt, int kout, float* dw,
                  bool accumulate) {
  const int oh_n = hp - R + 1, ow_n = wp - S + 1;
  for (int c = 0; c < cin; ++c)
    for (int r = 0; r < R; ++r)
      for (int k0 = 0; k0 < kout;) {
        const int left = std::min((kout - k0) / 16, 4);
        if (S == 5) {
          if (left == 4) filter_row<5, 4>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else if (left == 3) filter_row<5, 3>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else if (left == 2) filter_row<5, 2>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else filter_row<5, 1>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
        } else {
          if (left == 4) filter_row<3, 4>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else if (left == 3) filter_row<3, 3>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else if (left == 2) filter_row<3, 2>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
          else filter_row<3, 1>(in, cin, hp, wp, c, r, dyt, kout, k0, dw, accumulate, oh_n, ow_n);
        }
        k0 += 16 * left;
      }
}
#else
void conv_image(const float*, int, int, int, int, int, const float*, int, const float*, float*) {}
void filter_image(const float*, int, int, int, int, int, const float*, int, float*, bool) {}
#endif

}  // namespace adasync::cpu::direct
