#include "kernels/cpu/conv_winograd.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/simd.h"

namespace adasync::cpu::winograd {

bool available() {
  // Read on every call (a getenv per convolution) so tests can compare.
  return std::getenv("ADASYNC_NO_WINOGRAD") == nullptr && simd::kernels().wino_input != nullptr &&
         simd::kernels().gemm_panel != nullptr;
}

int tile(int r, int cin, int kout, bool forward) {
  if (r == 5) return 2;
  if (r != 3) return 0;
  // F(4x4, 3x3) rounds about ten times as much as a direct sum; in the
  // forward pass of a narrow (16-channel) first stage that doubled resnet20's
  // gradient error against float64 in the k-async PyTorch check, where
  // F(2x2, 3x3) there keeps it at PyTorch float32's (docs/results.md).
  return forward && std::min(cin, kout) < 32 ? 2 : 4;
}

namespace {
// A square 3x3 or 5x5 stride-1 filter with channel counts in whole vectors.
bool shape_ok(const ConvShape& s) {
  return (s.r == 5 || s.r == 3) && s.s == s.r && s.stride_h == 1 && s.stride_w == 1 && s.c % 16 == 0 && s.k % 16 == 0;
}
bool whole_tiles(int v, int m) { return v > 0 && v % m == 0; }
}  // namespace

bool forward_ok(const ConvShape& s) {
  return shape_ok(s) && whole_tiles(s.out_h(), tile(s.r, s.c, s.k, true)) &&
         whole_tiles(s.out_w(), tile(s.r, s.c, s.k, true)) && available();
}

bool backward_data_ok(const ConvShape& s) {
  return shape_ok(s) && whole_tiles(s.h, tile(s.r, s.c, s.k, false)) && whole_tiles(s.w, tile(s.r, s.c, s.k, false)) &&
         s.pad_h <= s.r - 1 && s.pad_w <= s.r - 1 && available();
}

Plan::Plan(int cin_, int h_, int w_, int ph_, int pw_, int kout_, int r_, bool forward)
    : cin(cin_), h(h_), w(w_), ph(ph_), pw(pw_), kout(kout_), r(r_), m(tile(r_, cin_, kout_, forward)) {
  n = m + r - 1;
  hp = h + 2 * ph, wp = w + 2 * pw;
  oh = hp - r + 1, ow = wp - r + 1;
  th = oh / m, tw = ow / m;
}

size_t Plan::xi() const { return size_t(n) * size_t(n); }

size_t Plan::filter_floats() const { return xi() * size_t(cin) * size_t(kout); }

size_t Plan::scratch_floats() const {
  const size_t pixels = size_t(hp) * size_t(wp), tiles = size_t(th) * size_t(tw);
  // The padded image twice (planes, then pixel-major), the transformed
  // patches, their products, and the output pixel-major.
  return 2 * pixels * size_t(cin) + xi() * tiles * (size_t(cin) + size_t(kout)) + size_t(oh) * size_t(ow) * kout;
}

void transform_filter(const Plan& p, const float* wt, float* u) {
  simd::kernels().wino_filter(wt, p.r, p.m, p.cin, p.kout, u);
}

void image(const Plan& p, const float* u, const float* x, const float* bias, float* scratch, float* y) {
  const auto& kern = simd::kernels();
  const size_t pixels = size_t(p.hp) * size_t(p.wp), tiles = size_t(p.th) * size_t(p.tw);
  float* planes = scratch;
  float* hwc = planes + pixels * size_t(p.cin);
  float* v = hwc + pixels * size_t(p.cin);
  float* m = v + p.xi() * tiles * size_t(p.cin);
  float* out = m + p.xi() * tiles * size_t(p.kout);
  direct::pad_planes(x, p.cin, p.h, p.w, p.ph, p.pw, planes);
  direct::transpose(planes, p.cin, pixels, hwc);
  kern.wino_input(hwc, p.wp, p.cin, p.th, p.tw, p.m, p.r, v);
  // m[xi] (tiles x kout) = v[xi] (tiles x cin) * u[xi] (cin x kout)
  for (size_t xi = 0; xi < p.xi(); ++xi) {
    simd::GemmPanel g{};
    g.r0 = 0, g.r1 = int(tiles), g.c0 = 0, g.c1 = p.kout, g.k = p.cin, g.kb = p.cin;
    g.a = v + xi * tiles * size_t(p.cin), g.ars = size_t(p.cin), g.als = 1;
    g.b = u + xi * size_t(p.cin) * size_t(p.kout), g.ldb = size_t(p.kout);
    g.c = m + xi * tiles * size_t(p.kout), g.ldc = size_t(p.kout), g.trans_c = false;
    kern.gemm_panel(g);
  }
  kern.wino_output(m, p.kout, p.th, p.tw, p.m, p.r, bias, out);
  const size_t ohw = size_t(p.oh) * size_t(p.ow);
  direct::transpose(out, int(ohw), size_t(p.kout), size_t(p.kout), y, ohw);
}

}  // namespace adasync::cpu::winograd
