#include "kernels/cpu/simd.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/context.h"
#include "kernels/cpu/ops_cpu.h"

namespace adasync::cpu {
namespace {

const simd::Kernels* unit(CpuPath p) {
  switch (p) {
    case CpuPath::avx512: return simd::kernels_avx512();
    case CpuPath::avx2: return simd::kernels_avx2();
    case CpuPath::scalar: return simd::kernels_scalar();
  }
  return nullptr;
}

// What the CPU (and the OS, for the wider registers' state) offers.
bool cpu_has(CpuPath p, std::string* why) {
  if (p == CpuPath::scalar) return true;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (p == CpuPath::avx512) {
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")) return true;
    if (why != nullptr) *why = "this CPU has no AVX-512F";
    return false;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return true;
  if (why != nullptr) *why = "this CPU has no AVX2 with FMA";
  return false;
#else
  if (why != nullptr) *why = "not an x86 CPU";
  return false;
#endif
}

struct Choice {
  CpuPath path;
  bool forced;
};

Choice initial_choice() {
  const char* env = std::getenv("ADASYNC_CPU_PATH");
  if (env == nullptr || *env == '\0') return {best_cpu_path(), false};
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2, CpuPath::scalar})
    if (std::strcmp(env, cpu_path_name(p)) == 0) {
      std::string why;
      if (!cpu_path_supported(p, &why))
        throw UsageError(std::string("ADASYNC_CPU_PATH=") + env + ": " + why);
      return {p, true};
    }
  throw UsageError(std::string("ADASYNC_CPU_PATH: expected avx512, avx2 or scalar, found '") + env + "'");
}

const Choice& first_choice() {
  static const Choice c = initial_choice();
  return c;
}

// -1 until set_cpu_path overrides the first choice.
std::atomic<int> g_override{-1};

}  // namespace

const char* cpu_path_name(CpuPath p) {
  switch (p) {
    case CpuPath::avx512: return "avx512";
    case CpuPath::avx2: return "avx2";
    case CpuPath::scalar: return "scalar";
  }
  return "?";
}

bool cpu_path_supported(CpuPath p, std::string* why) {
  if (unit(p) == nullptr) {
    if (why != nullptr) *why = std::string("this build has no ") + cpu_path_name(p) + " kernels (not an x86 target)";
    return false;
  }
  return cpu_has(p, why);
}

CpuPath best_cpu_path() {
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2})
    if (cpu_path_supported(p)) return p;
  return CpuPath::scalar;
}

CpuPath cpu_path() {
  const int o = g_override.load(std::memory_order_relaxed);
  return o >= 0 ? CpuPath(o) : first_choice().path;
}

const char* cpu_kernel_path() { return cpu_path_name(cpu_path()); }

std::string cpu_kernel_path_summary() {
  const CpuPath p = cpu_path(), best = best_cpu_path();
  std::string s = std::string("cpu kernels ") + cpu_path_name(p);
  if (p != best || first_choice().forced) s += std::string(" (forced; this CPU supports ") + cpu_path_name(best) + ")";
  return s + blas_core_note(blas_core(), best != CpuPath::scalar);
}

void set_cpu_path(CpuPath p) {
  std::string why;
  if (!cpu_path_supported(p, &why)) throw UsageError(std::string("cpu path ") + cpu_path_name(p) + ": " + why);
  g_override.store(int(p), std::memory_order_relaxed);
}

namespace simd {

const Kernels& kernels() { return *unit(cpu_path()); }

const Kernels& kernels(CpuPath p) {
  const Kernels* k = unit(p);
  EXPECTS(k != nullptr, "no " << cpu_path_name(p) << " kernels in this build");
  return *k;
}

}  // namespace simd
}  // namespace adasync::cpu
