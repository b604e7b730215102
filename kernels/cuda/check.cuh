// The CUDA error-macro family: each failed call throws adasync::Error naming
// the file, line, the call's text and the library's error name.
// *_CHECK_NOTHROW variants log instead, for destructors (which must not throw,
// and may run while the driver shuts down).
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cudnn.h>

#include <cstdio>
#include <string>

#include "kernels/context.h"

namespace adasync::cuda_detail {

inline const char* cublas_error_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

[[noreturn]] inline void fail(const char* lib, const char* call, const char* err, const char* file, int line) {
  throw_error(file, line, std::string(lib) + " call failed: " + call + ": " + err);
}

}  // namespace adasync::cuda_detail

#define CUDA_CHECK(call)                                                                        \
  do {                                                                                          \
    const cudaError_t adasync_e_ = (call);                                                      \
    if (adasync_e_ != cudaSuccess)                                                              \
      ::adasync::cuda_detail::fail("CUDA", #call, cudaGetErrorName(adasync_e_), __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                                      \
  do {                                                                                                          \
    const cublasStatus_t adasync_s_ = (call);                                                                   \
    if (adasync_s_ != CUBLAS_STATUS_SUCCESS)                                                                    \
      ::adasync::cuda_detail::fail("cuBLAS", #call, ::adasync::cuda_detail::cublas_error_name(adasync_s_), __FILE__, \
                                   __LINE__);                                                                   \
  } while (0)

#define CUDNN_CHECK(call)                                                                       \
  do {                                                                                          \
    const cudnnStatus_t adasync_s_ = (call);                                                    \
    if (adasync_s_ != CUDNN_STATUS_SUCCESS)                                                     \
      ::adasync::cuda_detail::fail("cuDNN", #call, cudnnGetErrorString(adasync_s_), __FILE__, __LINE__); \
  } while (0)

// Checks the last launch (configuration errors surface here, not at a later sync).
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#define CUDA_CHECK_NOTHROW(call)                                                                         \
  do {                                                                                                   \
    const cudaError_t adasync_e_ = (call);                                                               \
    if (adasync_e_ != cudaSuccess && adasync_e_ != cudaErrorCudartUnloading)                             \
      std::fprintf(stderr, "adasync: %s failed: %s [%s:%d]\n", #call, cudaGetErrorName(adasync_e_), __FILE__, \
                   __LINE__);                                                                            \
  } while (0)
