// Element-wise and small custom kernels: ReLU, bias, BLAS-1, SGD, batch
// gather, the non-finite count and the straggler delay. Grid-stride loops;
// every launch is on the context's stream and checked.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::cuda {
namespace {

__global__ void relu_forward_kernel(const float* __restrict__ x, float* __restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = x[i] > 0.f ? x[i] : 0.f;
}

__global__ void relu_backward_kernel(const float* __restrict__ y, const float* __restrict__ dy, float* __restrict__ dx,
                                     size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}

__global__ void bias_add_kernel(float* __restrict__ y, const float* __restrict__ b, int rows, int cols) {
  const size_t n = size_t(rows) * cols;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] += b[i % cols];
}

// One thread per column, rows summed in order: deterministic.
__global__ void bias_grad_kernel(const float* __restrict__ dy, float* __restrict__ db, int rows, int cols) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
    float acc = 0.f;
    for (int r = 0; r < rows; ++r) acc += dy[size_t(r) * cols + c];
    db[c] = acc;
  }
}

__global__ void fill_kernel(float* x, float v, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) x[i] = v;
}

__global__ void axpy_kernel(float a, const float* __restrict__ x, float* __restrict__ y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] += a * x[i];
}

__global__ void scale_kernel(float a, const float* x, float* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = a * x[i];
}

__global__ void sgd_kernel(float* __restrict__ w, const float* __restrict__ g, float* __restrict__ v, size_t n,
                           float lr, float mu, float wd, bool nesterov) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float gi = g[i] + wd * w[i];
    if (v == nullptr) {
      w[i] -= lr * gi;
    } else {
      const float vi = mu * v[i] + gi;
      v[i] = vi;
      w[i] -= lr * (nesterov ? gi + mu * vi : vi);
    }
  }
}

__global__ void gather_kernel(const float* __restrict__ rows, const int32_t* __restrict__ labels,
                              const int32_t* __restrict__ idx, int count, size_t dim, float* __restrict__ out,
                              int32_t* __restrict__ out_labels) {
  const size_t n = size_t(count) * dim;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / dim, j = i - r * dim;
    const int32_t src = idx[r];
    out[i] = rows[size_t(src) * dim + j];
    if (j == 0) out_labels[r] = labels[src];
  }
}

// Integer counts: the sum is the same whatever order the atomics land in.
__global__ void nonfinite_kernel(const float* __restrict__ x, size_t n, int32_t* count) {
  int32_t bad = 0;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    bad += !isfinite(x[i]);
  for (int o = 16; o > 0; o >>= 1) bad += __shfl_down_sync(0xffffffffu, bad, o);
  if ((threadIdx.x & 31) == 0 && bad != 0) atomicAdd(count, bad);
}

// One thread spins on the device clock; a cancel (the host bumping *cancel
// away from gen) ends it early, freeing the stream for the next step.
__global__ void spin_kernel(unsigned long long ns, const volatile uint32_t* cancel, uint32_t gen) {
  unsigned long long start, now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
  do {
    if (cancel != nullptr && *cancel != gen) return;
    __nanosleep(1000);
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  } while (now - start < ns);
}

}  // namespace

using cuda_detail::blocks_for;
using cuda_detail::kThreads;
using cuda_detail::prepare;

void relu_forward(Context& ctx, const float* x, float* y, size_t n) {
  CudaState& s = prepare(ctx);
  relu_forward_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH();
}

void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, size_t n) {
  CudaState& s = prepare(ctx);
  relu_backward_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(y, dy, dx, n);
  CUDA_CHECK_LAUNCH();
}

void bias_add(Context& ctx, float* y, const float* b, int rows, int cols) {
  CudaState& s = prepare(ctx);
  bias_add_kernel<<<blocks_for(size_t(rows) * cols), kThreads, 0, s.stream>>>(y, b, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void bias_grad(Context& ctx, const float* dy, float* db, int rows, int cols) {
  CudaState& s = prepare(ctx);
  bias_grad_kernel<<<blocks_for(size_t(cols)), kThreads, 0, s.stream>>>(dy, db, rows, cols);
  CUDA_CHECK_LAUNCH();
}

void fill(Context& ctx, float* x, float value, size_t n) {
  CudaState& s = prepare(ctx);
  fill_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(x, value, n);
  CUDA_CHECK_LAUNCH();
}

void axpy(Context& ctx, float a, const float* x, float* y, size_t n) {
  CudaState& s = prepare(ctx);
  axpy_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(a, x, y, n);
  CUDA_CHECK_LAUNCH();
}

void scale(Context& ctx, float a, const float* x, float* y, size_t n) {
  CudaState& s = prepare(ctx);
  scale_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(a, x, y, n);
  CUDA_CHECK_LAUNCH();
}

void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov) {
  ADASYNC_RANGE("sgd_update");
  CudaState& s = prepare(ctx);
  sgd_kernel<<<blocks_for(n), kThreads, 0, s.stream>>>(w, g, velocity, n, lr, mu, weight_decay, nesterov);
  CUDA_CHECK_LAUNCH();
}

void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count, size_t dim,
                 float* out, int32_t* out_labels) {
  CudaState& s = prepare(ctx);
  gather_kernel<<<blocks_for(size_t(count) * dim), kThreads, 0, s.stream>>>(rows, labels, idx, count, dim, out,
                                                                            out_labels);
  CUDA_CHECK_LAUNCH();
}

void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count) {
  CudaState& s = prepare(ctx);
  CUDA_CHECK(cudaMemsetAsync(count, 0, sizeof(int32_t), s.stream));
  nonfinite_kernel<<<std::min(blocks_for(n), 1024u), kThreads, 0, s.stream>>>(x, n, count);
  CUDA_CHECK_LAUNCH();
}

void spin_delay(Context& ctx, double seconds, const volatile uint32_t* cancel, uint32_t gen) {
  CudaState& s = prepare(ctx);
  spin_kernel<<<1, 1, 0, s.stream>>>(static_cast<unsigned long long>(seconds * 1e9), cancel, gen);
  CUDA_CHECK_LAUNCH();
}

}  // namespace adasync::cuda
