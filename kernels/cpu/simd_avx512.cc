// The avx512 variant of the leaf kernels (simd_kernels.inc), compiled for
// AVX-512F and FMA (-mavx512f -mfma): 16 lanes, 32 registers.
// On a build where the flags do not apply (another architecture) the unit
// is empty and the path reports itself missing.
#include "kernels/cpu/simd.h"

#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace adasync::cpu::simd {

#if defined(__AVX512F__) && defined(__FMA__)
namespace {
#define ADASYNC_SIMD_UNIT CpuPath::avx512
#include "kernels/cpu/simd_kernels.inc"
}  // namespace

const Kernels* kernels_avx512() { return &kUnitKernels; }
#else
const Kernels* kernels_avx512() { return nullptr; }
#endif

}  // namespace adasync::cpu::simd
