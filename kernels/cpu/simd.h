// The CPU's hot float kernels in one variant per instruction set, and the
// run-time choice among them. One build runs everywhere: each variant is its
// own translation unit compiled for its ISA (simd_avx512.cc, simd_avx2.cc,
// simd_scalar.cc, all from simd_kernels.inc), and the path is chosen once, on
// first use, from the CPU's features (__builtin_cpu_supports), lowered by the
// environment variable ADASYNC_CPU_PATH=avx512|avx2|scalar for tests and
// comparisons. Asking for a path the CPU or the build lacks is an error
// (UsageError), not a silent fallback, so a benchmark measures what it names.
//
// The avx512 and avx2 direct and Winograd convolutions accumulate every
// output in the same order, so they give bit-identical results; the scalar path has no direct
// convolutions (im2col + GEMM) and rounds differently there. Elementwise
// kernels give the same bits on every path.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer's range checks (its runtime's interface; gemm_panel's use).
extern "C" void __tsan_read_range(void* addr, unsigned long size);
extern "C" void __tsan_write_range(void* addr, unsigned long size);
#endif

namespace adasync::cpu {

enum class CpuPath { scalar = 0, avx2 = 1, avx512 = 2 };

const char* cpu_path_name(CpuPath p);
// The best path this CPU and build support, ignoring the environment.
CpuPath best_cpu_path();
// Whether path p can run here; `why` (if non-null) says what is missing.
bool cpu_path_supported(CpuPath p, std::string* why = nullptr);
// The path in use (chosen on first call; throws UsageError on a bad
// ADASYNC_CPU_PATH).
CpuPath cpu_path();
// Its name: "avx512", "avx2" or "scalar". For the startup line.
const char* cpu_kernel_path();
// One line for a startup message: the path, and why (best supported, or
// forced by ADASYNC_CPU_PATH and what the CPU would support).
std::string cpu_kernel_path_summary();
// Switches every later kernel call to path p (tests and benchmarks; not while
// ops run). Throws UsageError when p cannot run here.
void set_cpu_path(CpuPath p);

namespace simd {

// Geometry of one image's convolution for the im2col leaves (plain ints: the
// per-ISA units use no shared inline code, see simd_kernels.inc).
struct ConvGeom {
  int c, h, w, r, s, pad_h, pad_w, stride_h, stride_w, out_h, out_w;
};

// A block of C = A' * B' for the linear layers' GEMMs (ops_cpu.cc maps the
// three transposes onto it): for rows r in [r0, r1) and columns j in
// [c0, c1) (a multiple of 8 wide),
//   C(r, j) = sum_{l < k} a[r * ars + l * als] * b[l * ldb + j]
// stored at c[r * ldc + j], or c[j * ldc + r] with trans_c; summed over l in
// order, in blocks of kb terms.
struct GemmPanel {
  int r0, r1, c0, c1, k, kb;
  const float* a;
  size_t ars, als;
  const float* b;
  size_t ldb;
  float* c;
  size_t ldc;
  bool trans_c;
};

struct Kernels {
  CpuPath path;
  // Direct stride-1 convolutions of one padded image (conv_direct.h has the
  // contracts); null on the scalar path.
  void (*conv_image)(const float* in, int cin, int hp, int wp, int r, int s, const float* wt, int kout,
                     const float* bias, float* out);
  void (*filter_image)(const float* in, int c, int hp, int wp, int r, int s, const float* dyt, int k, float* dw,
                       bool accumulate);
  // GemmPanel's product; null on the scalar path (OpenBLAS there).
  void (*gemm_panel)(const GemmPanel& p);
  // Winograd transforms of output tile m and filter r: F(2x2, 5x5),
  // F(4x4, 3x3) and F(2x2, 3x3) (conv_winograd.h has the layouts); null on
  // the scalar path.
  void (*wino_filter)(const float* wt, int r, int m, int cin, int kout, float* u);
  void (*wino_input)(const float* hwc, int wp, int cin, int th, int tw, int m, int r, float* v);
  void (*wino_output)(const float* mt, int kout, int th, int tw, int m, int r, const float* bias, float* y);
  // One image's im2col matrix (pad: the staging area for its padded copy)
  // and the scatter-add back (dx overwritten).
  void (*im2col)(const ConvGeom& g, const float* x, float* pad, float* col);
  void (*col2im)(const ConvGeom& g, const float* dcol, float* pad, float* dx);
  // Max pooling of `planes` planes (ops.h contract).
  void (*maxpool_forward)(const float* x, float* y, int32_t* argmax, size_t planes, int h, int w, int size,
                          int stride, int out_h, int out_w, bool relu);
  void (*maxpool_backward)(const float* dy, const int32_t* argmax, float* dx, size_t planes, size_t in_plane,
                           size_t out_plane);
  void (*relu_forward)(const float* x, float* y, size_t n);
  void (*relu_backward)(const float* y, const float* dy, float* dx, size_t n);
  void (*bias_add)(float* y, const float* b, size_t rows, int cols);
  void (*sgd_update)(float* w, const float* g, float* velocity, size_t n, float lr, float mu, float weight_decay,
                     bool nesterov);
  void (*axpy)(float a, const float* x, float* y, size_t n);
  void (*scale)(float a, const float* x, float* y, size_t n);
  // A tight loop of independent multiply-adds in the path's widest registers
  // (FMA on the AVX paths): the ceiling benchmarks print next to what a
  // kernel achieves. Returns the flops done; *sink keeps the result alive.
  double (*fma_loop)(long iters, float* sink);
  // dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols.
  void (*transpose)(const float* src, int rows, size_t cols, size_t lds, float* dst, size_t ldd);
};

// The kernels of the path in use, or of a given path (which must be supported).
const Kernels& kernels();
const Kernels& kernels(CpuPath p);

// Defined by each per-ISA unit; null where the build has no such unit.
const Kernels* kernels_avx512();
const Kernels* kernels_avx2();
const Kernels* kernels_scalar();

}  // namespace simd
}  // namespace adasync::cpu
