// The avx2 variant of the leaf kernels (simd_kernels.inc), compiled for
// AVX2 and FMA, without AVX-512 (-mavx2 -mfma -mno-avx512f): 8 lanes and the 16
// registers an AVX2-only CPU has, even when built on one with AVX-512.
// On a build where the flags do not apply (another architecture) the unit
// is empty and the path reports itself missing.
#include "kernels/cpu/simd.h"

#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace adasync::cpu::simd {

#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
namespace {
#define ADASYNC_SIMD_UNIT CpuPath::avx2
#include "kernels/cpu/simd_kernels.inc"
}  // namespace

const Kernels* kernels_avx2() { return &kUnitKernels; }
#else
const Kernels* kernels_avx2() { return nullptr; }
#endif

}  // namespace adasync::cpu::simd
