// Direct stride-1 convolutions on the AVX-512 and AVX2 paths (simd.h):
// register-blocked kernels that read the zero-padded input in place instead
// of building an im2col matrix, with the output channels in the vector lanes. They cover the
// shapes of the model zoo's convolutions (5x5 and 3x3, channel counts that
// are multiples of 16); ops_cpu.cc falls back to im2col + GEMM for the rest.
//
// Every output element is produced by one thread in a fixed order, so results
// do not depend on the thread count (the caller sums the backward-filter
// partials of fixed image groups in group order, as the GEMM path does).
#pragma once

#include <cstddef>

#include "kernels/ops.h"

namespace adasync::cpu::direct {

bool available();  // the CPU path in use has them (not scalar)
bool forward_ok(const ConvShape& s);
bool backward_data_ok(const ConvShape& s);
bool backward_filter_ok(const ConvShape& s);

// wt[c][r][s][k] = w[k][c][r][s]
void pack_forward(const ConvShape& s, const float* w, float* wt);
// wt[k][r][s][c] = w[k][c][R-1-r][S-1-s]: the weights of the transposed
// convolution that maps dy (K channels) to dx (C channels).
void pack_backward_data(const ConvShape& s, const float* w, float* wt);

// out[ko][oh][ow] = bias[ko] + sum_{ci,r,s} wt[ci][r][s][ko] in[ci][oh+r][ow+s]
// for one image: `in` is Cin planes of Hp x Wp already padded, OH = Hp-R+1,
// OW = Wp-S+1; Kout a multiple of 16. bias may be null. The kernels of the
// path in use (simd_kernels.inc).
void conv_image(const float* in, int cin, int hp, int wp, int r, int s, const float* wt, int kout,
                const float* bias, float* out);

// dwt[c][r][s][k] (+)= sum_{oh,ow} dyt[oh*OW+ow][k] in[c][oh+r][ow+s] for one
// image: `in` padded (Hp x Wp), dyt the output gradient transposed
// (pixel-major), dwt the weight gradient transposed (channel-minor: the
// kernel stores whole vectors). accumulate=false overwrites dwt.
void filter_image(const float* in, int c, int hp, int wp, int r, int s, const float* dyt, int k, float* dwt,
                  bool accumulate);

// dst[c][h + ph][w + pw] = src[c][h][w], zero border.
void pad_planes(const float* src, int c, int h, int w, int ph, int pw, float* dst);
// dst[p][k] = src[k][p] for k < K, p < n.
void transpose(const float* src, int k, size_t n, float* dst);
// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols.
void transpose(const float* src, int rows, size_t cols, size_t lds, float* dst, size_t ldd);

}  // namespace adasync::cpu::direct
