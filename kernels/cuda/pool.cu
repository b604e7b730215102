// Max pooling, optionally fused with a ReLU in front (see ops.h). Backward
// gathers: each input element sums the outputs whose argmax is itself, so
// overlapping windows need no atomics and the result is deterministic.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::cuda {
namespace {

__global__ void maxpool_forward_kernel(const float* __restrict__ x, float* __restrict__ y, int32_t* __restrict__ am,
                                       int planes, int h, int w, int oh_n, int ow_n, int size, int stride, bool relu) {
  const size_t n = size_t(planes) * oh_n * ow_n;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const int ow = int(i % ow_n), oh = int((i / ow_n) % oh_n);
    const size_t p = i / (size_t(ow_n) * oh_n);
    const float* xp = x + p * h * w;
    int best = oh * stride * w + ow * stride;
    float v = xp[best];
    for (int a = 0; a < size; ++a)
      for (int b = 0; b < size; ++b) {
        const int idx = (oh * stride + a) * w + ow * stride + b;
        const float xv = xp[idx];
        if (xv > v) v = xv, best = idx;
      }
    if (relu && !(v > 0.f)) v = 0.f, best = -1;
    y[i] = v;
    am[i] = best;
  }
}

__global__ void maxpool_backward_kernel(const float* __restrict__ dy, const int32_t* __restrict__ am,
                                        float* __restrict__ dx, int planes, int h, int w, int oh_n, int ow_n, int size,
                                        int stride) {
  const size_t n = size_t(planes) * h * w;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const int iw = int(i % w), ih = int((i / w) % h);
    const size_t p = i / (size_t(w) * h);
    const int local = ih * w + iw;
    // Outputs whose window covers (ih, iw): oh*stride <= ih < oh*stride + size.
    const int oh_lo = ih < size ? 0 : (ih - size) / stride + 1, oh_hi = min(oh_n - 1, ih / stride);
    const int ow_lo = iw < size ? 0 : (iw - size) / stride + 1, ow_hi = min(ow_n - 1, iw / stride);
    float acc = 0.f;
    for (int oh = oh_lo; oh <= oh_hi; ++oh)
      for (int ow = ow_lo; ow <= ow_hi; ++ow) {
        const size_t o = (p * oh_n + oh) * ow_n + ow;
        if (am[o] == local) acc += dy[o];
      }
    dx[i] = acc;
  }
}

}  // namespace

void maxpool2d_forward(Context& ctx, const PoolShape& s, const float* x, float* y, int32_t* argmax, bool relu) {
  CudaState& st = cuda_detail::prepare(ctx);
  maxpool_forward_kernel<<<cuda_detail::blocks_for(s.y_size()), cuda_detail::kThreads, 0, st.stream>>>(
      x, y, argmax, s.n * s.c, s.h, s.w, s.out_h(), s.out_w(), s.size, s.stride, relu);
  CUDA_CHECK_LAUNCH();
}

void maxpool2d_backward(Context& ctx, const PoolShape& s, const float* dy, const int32_t* argmax, float* dx) {
  CudaState& st = cuda_detail::prepare(ctx);
  maxpool_backward_kernel<<<cuda_detail::blocks_for(s.x_size()), cuda_detail::kThreads, 0, st.stream>>>(
      dy, argmax, dx, s.n * s.c, s.h, s.w, s.out_h(), s.out_w(), s.size, s.stride);
  CUDA_CHECK_LAUNCH();
}

}  // namespace adasync::cuda
