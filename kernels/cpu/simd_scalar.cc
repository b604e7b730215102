// The scalar variant of the leaf kernels (simd_kernels.inc), compiled for
// no vector extension beyond the baseline (-mno-avx on x86): runs anywhere.
#include "kernels/cpu/simd.h"

#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace adasync::cpu::simd {

namespace {
#define ADASYNC_SIMD_UNIT CpuPath::scalar
#include "kernels/cpu/simd_kernels.inc"
}  // namespace

const Kernels* kernels_scalar() { return &kUnitKernels; }

}  // namespace adasync::cpu::simd
