// Winograd convolutions on the AVX paths, F(2x2, 5x5), F(4x4, 3x3) and
// F(2x2, 3x3): each 2x2 output tile of a 5x5 stride-1 convolution (or 4x4 or
// 2x2 tile of a 3x3 one) from its 6x6 (or 4x4) input patch, with 36 (or 16)
// multiplies per input-output channel pair where the direct kernels take 100
// (144, 36) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks"). Per image: the patches
// are transformed (B^T d B, channels in the vector lanes), multiplied by the
// transformed filters (G g G^T) as 36 (16) GEMMs over the input channels on the
// linear layers' tiles, and transformed back (A^T m A). The forward pass and
// the input gradient (the same convolution with the flipped, transposed
// weights) take it for output sizes in whole tiles and channel counts that
// are multiples of 16; the weight gradient stays direct.
//
// It rounds differently from the direct kernels (the tests hold both within
// 1e-5 of the largest output of a double-precision reference); every vector
// width gives the same bits, and each output is computed by one thread in a
// fixed order. The weight gradient through the transforms would sum 3136
// tiles' products in the transformed domain, whose rounding came to 8e-6 in a
// simulation: too near that bound.
// ADASYNC_NO_WINOGRAD=1 turns it off, for comparisons.
#pragma once

#include <cstddef>

#include "kernels/ops.h"

namespace adasync::cpu::winograd {

bool available();  // an AVX path is in use and ADASYNC_NO_WINOGRAD is unset
bool forward_ok(const ConvShape& s);
bool backward_data_ok(const ConvShape& s);

// The output tile of an r x r filter between cin and kout channels: 2 for
// 5x5; for 3x3, 2 in the forward pass below 32 channels, else 4; 0 for others.
int tile(int r, int cin, int kout, bool forward);

// An r x r (5 or 3) stride-1 convolution of cin planes h x w padded by
// (ph, pw) to kout planes oh x ow = (h + 2ph - r + 1) x (w + 2pw - r + 1),
// both multiples of m = tile(r, cin, kout, forward), in th x tw tiles.
struct Plan {
  Plan(int cin, int h, int w, int ph, int pw, int kout, int r, bool forward);
  int cin, h, w, ph, pw, kout, r, m, n;  // n = m + r - 1: the patch
  size_t xi() const;                     // n * n transformed values per tile
  int hp, wp, oh, ow, th, tw;
  size_t filter_floats() const;   // the transformed filters
  size_t scratch_floats() const;  // one image's scratch, per thread
};

// u = the transformed filters of wt[cin][r][r][kout] (direct::pack_forward's
// layout).
void transform_filter(const Plan& p, const float* wt, float* u);
// y (kout x oh x ow) = bias + x (cin x h x w) convolved, for one image; bias
// may be null.
void image(const Plan& p, const float* u, const float* x, const float* bias, float* scratch, float* y);

}  // namespace adasync::cpu::winograd
