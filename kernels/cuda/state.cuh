// CudaState: what a CUDA Context owns: its device, one non-blocking stream,
// cuBLAS and cuDNN handles bound to that stream, a fixed cuBLAS workspace (so
// GEMMs allocate nothing and can be captured in graphs), and the cuDNN
// convolution plans cached per shape (descriptors, chosen algorithms and
// their workspace sizes), chosen once per shape outside any capture, and the
// batch-norm descriptors per shape.
#pragma once

#include <map>
#include <memory>
#include <tuple>

#include "kernels/cuda/check.cuh"
#include "kernels/ops.h"

namespace adasync {

struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnActivationDescriptor_t identity = nullptr;
  cudnnConvolutionFwdAlgo_t fwd_algo{};
  cudnnConvolutionBwdDataAlgo_t bwd_data_algo{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter_algo{};
  size_t fwd_ws = 0, bwd_data_ws = 0, bwd_filter_ws = 0;
  ~ConvPlan();
};

// cuDNN batch norm's descriptors for one (n, c, hw): the data as n x c x hw x 1
// and the per-channel parameters derived from it.
struct BnPlan {
  cudnnTensorDescriptor_t x = nullptr, per_channel = nullptr;
  ~BnPlan();
};

// Owns its stream, handles and workspace: the destructor releases whatever
// was created, so a half-built state (a failed cudnnCreate) leaks nothing.
struct CudaState {
  CudaState() = default;
  CudaState(const CudaState&) = delete;
  CudaState& operator=(const CudaState&) = delete;
  ~CudaState();
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  cudnnHandle_t cudnn = nullptr;
  void* cublas_ws = nullptr;
  size_t cublas_ws_bytes = 0;
  bool cublas_tf32 = false;  // math mode currently set on the handle
  using Key = std::tuple<int, int, int, int, int, int, int, int, int, int, int, bool, bool>;
  std::map<Key, std::unique_ptr<ConvPlan>> conv_plans;
  std::map<std::tuple<int, int, int>, std::unique_ptr<BnPlan>> bn_plans;
};

// Makes `s.device` current on the calling thread (cheap when it already is).
void set_device(const CudaState& s);

}  // namespace adasync
