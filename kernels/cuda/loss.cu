// Softmax cross-entropy and accuracy. One block: each thread takes rows
// tid, tid + 256, ...; per-thread sums are reduced in a fixed tree, so the
// loss is bit-identical from run to run (no floating-point atomics).
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::cuda {
namespace {

constexpr int kBlock = 256;

__global__ void softmax_xent_kernel(const float* __restrict__ z, const int32_t* __restrict__ labels, int rows,
                                    int classes, float* __restrict__ loss, float* __restrict__ dz) {
  __shared__ double part[kBlock];
  double acc = 0;
  for (int r = threadIdx.x; r < rows; r += kBlock) {
    const float* zr = z + size_t(r) * classes;
    const int y = labels[r];
    float mx = zr[0];
    for (int c = 1; c < classes; ++c) mx = fmaxf(mx, zr[c]);
    double sum = 0;
    for (int c = 0; c < classes; ++c) sum += exp(double(zr[c] - mx));
    const double lse = double(mx) + log(sum);
    acc += lse - double(zr[y]);
    if (dz != nullptr) {
      float* dr = dz + size_t(r) * classes;
      for (int c = 0; c < classes; ++c) dr[c] = float((exp(double(zr[c]) - lse) - (c == y ? 1.0 : 0.0)) / rows);
    }
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kBlock / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *loss = float(part[0] / rows);
}

__global__ void count_correct_kernel(const float* __restrict__ z, const int32_t* __restrict__ labels, int rows,
                                     int classes, int32_t* correct) {
  __shared__ int part[kBlock];
  int acc = 0;
  for (int r = threadIdx.x; r < rows; r += kBlock) {
    const float* zr = z + size_t(r) * classes;
    int best = 0;
    for (int c = 1; c < classes; ++c)
      if (zr[c] > zr[best]) best = c;
    acc += best == labels[r];
  }
  part[threadIdx.x] = acc;
  __syncthreads();
  for (int o = kBlock / 2; o > 0; o >>= 1) {
    if (threadIdx.x < o) part[threadIdx.x] += part[threadIdx.x + o];
    __syncthreads();
  }
  if (threadIdx.x == 0) *correct = part[0];
}

}  // namespace

void softmax_xent(Context& ctx, const float* logits, const int32_t* labels, int rows, int classes, float* loss,
                  float* dlogits) {
  CudaState& s = cuda_detail::prepare(ctx);
  softmax_xent_kernel<<<1, kBlock, 0, s.stream>>>(logits, labels, rows, classes, loss, dlogits);
  CUDA_CHECK_LAUNCH();
}

void count_correct(Context& ctx, const float* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct) {
  CudaState& s = cuda_detail::prepare(ctx);
  count_correct_kernel<<<1, kBlock, 0, s.stream>>>(logits, labels, rows, classes, correct);
  CUDA_CHECK_LAUNCH();
}

}  // namespace adasync::cuda
