#include "kernels/cpu/conv_direct.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/cpu/simd.h"

namespace adasync::cpu::direct {

bool available() {
  // ADASYNC_NO_DIRECT_CONV: the im2col + GEMM path instead, for comparisons.
  static const bool on = std::getenv("ADASYNC_NO_DIRECT_CONV") == nullptr;
  return on && simd::kernels().conv_image != nullptr;
}

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

void transpose(const float* src, int k, size_t n, float* dst) { transpose(src, k, n, n, dst, size_t(k)); }

void transpose(const float* src, int rows, size_t cols, size_t lds, float* dst, size_t ldd) {
  simd::kernels().transpose(src, rows, cols, lds, dst, ldd);
}

void conv_image(const float* in, int cin, int hp, int wp, int r, int s, const float* wt, int kout, const float* bias,
                float* out) {
  simd::kernels().conv_image(in, cin, hp, wp, r, s, wt, kout, bias, out);
}

void filter_image(const float* in, int cin, int hp, int wp, int r, int s, const float* dyt, int kout, float* dw,
                  bool accumulate) {
  simd::kernels().filter_image(in, cin, hp, wp, r, s, dyt, kout, dw, accumulate);
}

}  // namespace adasync::cpu::direct
