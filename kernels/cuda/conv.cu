// Convolutions through cuDNN. A plan per shape (descriptors, algorithms,
// workspace sizes) is built on first use; later calls, and graph captures,
// only launch. With ctx.deterministic only deterministic algorithms are taken; with
// ctx.tf32_conv cuDNN may use TF32 tensor cores (CUDNN_DEFAULT_MATH),
// otherwise it computes in full FP32 (CUDNN_FMA_MATH).
#include <algorithm>
#include <string>

#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::cuda {
namespace {

template <typename Perf>
int pick(const Perf* perf, int count, bool deterministic, const char* what) {
  for (int i = 0; i < count; ++i) {
    if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
    if (deterministic && perf[i].determinism != CUDNN_DETERMINISTIC) continue;
    return i;
  }
  throw Error(std::string("cuDNN offers no usable ") + what + " algorithm for this shape" +
              (deterministic ? " (deterministic requested)" : ""));
}

ConvPlan& plan(Context& ctx, CudaState& st, const ConvShape& s) {
  const CudaState::Key key{s.n,          s.c,          s.h,           s.w,          s.k,
                           s.r,          s.s,          s.pad_h,       s.pad_w,      s.stride_h,
                           s.stride_w,   ctx.tf32_conv, ctx.deterministic};
  auto it = st.conv_plans.find(key);
  if (it != st.conv_plans.end()) return *it->second;
  ADASYNC_RANGE("conv/plan");
  auto p = std::make_unique<ConvPlan>();
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->y));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&p->bias));
  CUDNN_CHECK(cudnnCreateFilterDescriptor(&p->w));
  CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&p->conv));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.n, s.c, s.h, s.w));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.n, s.k, s.out_h(), s.out_w()));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(p->bias, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, s.k, 1, 1));
  CUDNN_CHECK(cudnnSetFilter4dDescriptor(p->w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, s.k, s.c, s.r, s.s));
  CUDNN_CHECK(cudnnSetConvolution2dDescriptor(p->conv, s.pad_h, s.pad_w, s.stride_h, s.stride_w, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  CUDNN_CHECK(cudnnSetConvolutionMathType(p->conv, ctx.tf32_conv ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));

  // Choosing: cudnnFind* times every candidate on this device (fastest, but
  // the choice can differ between runs and contexts); with ctx.deterministic
  // the heuristics' ranking is used instead, so every context picks the same
  // deterministic algorithms and replays are bit-stable.
  CUDA_CHECK(cudaStreamSynchronize(st.stream));  // Find runs on the legacy stream
  int got = 0;
  cudnnConvolutionFwdAlgoPerf_t fwd[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  cudnnConvolutionBwdDataAlgoPerf_t bd[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  cudnnConvolutionBwdFilterAlgoPerf_t bf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  if (ctx.deterministic) {
    CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(st.cudnn, p->x, p->w, p->conv, p->y,
                                                       CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fwd));
  } else {
    CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(st.cudnn, p->x, p->w, p->conv, p->y,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fwd));
  }
  const int f = pick(fwd, got, ctx.deterministic, "forward");
  p->fwd_algo = fwd[f].algo;
  p->fwd_ws = fwd[f].memory;
  if (ctx.deterministic) {
    CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(st.cudnn, p->w, p->y, p->conv, p->x,
                                                            CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, bd));
  } else {
    CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(st.cudnn, p->w, p->y, p->conv, p->x,
                                                          CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, bd));
  }
  const int d = pick(bd, got, ctx.deterministic, "backward-data");
  p->bwd_data_algo = bd[d].algo;
  p->bwd_data_ws = bd[d].memory;
  if (ctx.deterministic) {
    CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(st.cudnn, p->x, p->y, p->conv, p->w,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, bf));
  } else {
    CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(st.cudnn, p->x, p->y, p->conv, p->w,
                                                            CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got, bf));
  }
  const int w = pick(bf, got, ctx.deterministic, "backward-filter");
  p->bwd_filter_algo = bf[w].algo;
  p->bwd_filter_ws = bf[w].memory;
  // Size the workspace for all three now, so no later call reallocates it.
  ctx.workspace(std::max({p->fwd_ws, p->bwd_data_ws, p->bwd_filter_ws, size_t(1)}));
  return *st.conv_plans.emplace(key, std::move(p)).first->second;
}

}  // namespace

void conv2d_forward(Context& ctx, const ConvShape& s, const float* x, const float* w, const float* b, float* y) {
  ADASYNC_RANGE("conv/forward");
  CudaState& st = cuda_detail::prepare(ctx);
  ConvPlan& p = plan(ctx, st, s);
  const float one = 1.f, zero = 0.f;
  void* ws = ctx.workspace(p.fwd_ws);
  CUDNN_CHECK(cudnnConvolutionForward(st.cudnn, &one, p.x, x, p.w, w, p.conv, p.fwd_algo, ws, p.fwd_ws, &zero, p.y, y));
  if (b != nullptr) CUDNN_CHECK(cudnnAddTensor(st.cudnn, &one, p.bias, b, &one, p.y, y));
}

void conv2d_backward_data(Context& ctx, const ConvShape& s, const float* dy, const float* w, float* dx) {
  ADASYNC_RANGE("conv/backward_data");
  CudaState& st = cuda_detail::prepare(ctx);
  ConvPlan& p = plan(ctx, st, s);
  const float one = 1.f, zero = 0.f;
  void* ws = ctx.workspace(p.bwd_data_ws);
  CUDNN_CHECK(cudnnConvolutionBackwardData(st.cudnn, &one, p.w, w, p.y, dy, p.conv, p.bwd_data_algo, ws, p.bwd_data_ws,
                                           &zero, p.x, dx));
}

void conv2d_backward_filter(Context& ctx, const ConvShape& s, const float* x, const float* dy, float* dw,
                            float* db) {
  ADASYNC_RANGE("conv/backward_filter");
  CudaState& st = cuda_detail::prepare(ctx);
  ConvPlan& p = plan(ctx, st, s);
  const float one = 1.f, zero = 0.f;
  void* ws = ctx.workspace(p.bwd_filter_ws);
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(st.cudnn, &one, p.x, x, p.y, dy, p.conv, p.bwd_filter_algo, ws,
                                             p.bwd_filter_ws, &zero, p.w, dw));
  if (db != nullptr) CUDNN_CHECK(cudnnConvolutionBackwardBias(st.cudnn, &one, p.y, dy, &zero, p.bias, db));
}

}  // namespace adasync::cuda
