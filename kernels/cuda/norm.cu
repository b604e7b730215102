// Batch norm, global average pooling, the option-A shortcut, dropout and the
// running-buffer update on the device. Batch norm goes through cuDNN
// (CUDNN_BATCHNORM_SPATIAL) unless the context asks for determinism or our
// kernels (ctx.cudnn_batchnorm). Our per-channel sums: one block per
// channel, each thread summing a fixed stride in double, then a fixed tree in
// shared memory, so results are deterministic and agree with the CPU twins
// (which also sum in double) to float rounding.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"
#include "kernels/mix_hash.h"

namespace adasync::cuda {
namespace {

constexpr int kReduceThreads = 256;

// Sum of v over the block (all threads get it); `sh` holds kReduceThreads doubles.
__device__ double block_sum(double v, double* sh) {
  sh[threadIdx.x] = v;
  __syncthreads();
  for (int o = kReduceThreads / 2; o > 0; o >>= 1) {
    if (int(threadIdx.x) < o) sh[threadIdx.x] += sh[threadIdx.x + o];
    __syncthreads();
  }
  const double s = sh[0];
  __syncthreads();
  return s;
}

// Element q of channel k over the batch: image q / hw, position q % hw.
__device__ __forceinline__ size_t at(int k, size_t q, int c, int hw) {
  return (q / size_t(hw) * size_t(c) + size_t(k)) * size_t(hw) + q % size_t(hw);
}

__global__ void bn_stats_kernel(const float* __restrict__ x, int n, int c, int hw, double eps, float* mean,
                                float* invstd, float* var_unbiased) {
  __shared__ double sh[kReduceThreads];
  const int k = blockIdx.x;
  const size_t m = size_t(n) * hw;
  double s = 0;
  for (size_t q = threadIdx.x; q < m; q += kReduceThreads) s += double(x[at(k, q, c, hw)]);
  const double mu = block_sum(s, sh) / double(m);
  double ss = 0;
  for (size_t q = threadIdx.x; q < m; q += kReduceThreads) {
    const double d = double(x[at(k, q, c, hw)]) - mu;
    ss += d * d;
  }
  ss = block_sum(ss, sh);
  if (threadIdx.x == 0) {
    const double var = ss / double(m);
    mean[k] = float(mu);
    invstd[k] = float(1.0 / sqrt(var + eps));
    if (var_unbiased != nullptr) var_unbiased[k] = float(m > 1 ? ss / double(m - 1) : var);
  }
}

// y = (x - mean) * scale + beta per channel; `mean` and `invstd` are either
// the batch's (training) or derived from the running buffers (eval: invstd ==
// nullptr); then + add (if non-null) and a ReLU (if relu).
__global__ void bn_apply_kernel(const float* __restrict__ x, const float* __restrict__ gamma,
                                const float* __restrict__ beta, const float* __restrict__ mean,
                                const float* __restrict__ invstd, const float* __restrict__ running_var, double eps,
                                int c, int hw, size_t total, const float* __restrict__ add, bool relu,
                                float* __restrict__ y) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int k = int(i / size_t(hw) % size_t(c));
    const double is = invstd != nullptr ? double(invstd[k]) : 1.0 / sqrt(double(running_var[k]) + eps);
    const float scale = float(double(gamma[k]) * is);
    float v = __fmaf_rn(__fsub_rn(x[i], mean[k]), scale, beta[k]);  // one rounding, as the CPU twin
    if (add != nullptr) v = __fadd_rn(v, add[i]);
    y[i] = relu && !(v > 0.f) ? 0.f : v;
  }
}

// dy, or dy where relu_y > 0.
__device__ __forceinline__ float masked(const float* __restrict__ dy, const float* __restrict__ relu_y, size_t i) {
  return relu_y == nullptr || relu_y[i] > 0.f ? dy[i] : 0.f;
}

__global__ void bn_backward_reduce_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                          const float* __restrict__ relu_y, int n, int c, int hw,
                                          const float* __restrict__ mean, const float* __restrict__ invstd,
                                          float* dgamma, float* dbeta) {
  __shared__ double sh[kReduceThreads];
  const int k = blockIdx.x;
  const size_t m = size_t(n) * hw;
  const double mu = mean[k], is = invstd[k];
  double sdy = 0, sdyx = 0;
  for (size_t q = threadIdx.x; q < m; q += kReduceThreads) {
    const size_t i = at(k, q, c, hw);
    const double g = masked(dy, relu_y, i);
    sdy += g;
    sdyx += g * (double(x[i]) - mu) * is;
  }
  sdy = block_sum(sdy, sh);
  sdyx = block_sum(sdyx, sh);
  if (threadIdx.x == 0) {
    dgamma[k] = float(sdyx);
    dbeta[k] = float(sdy);
  }
}

// In double, as the CPU twin: the three terms nearly cancel.
__global__ void bn_backward_dx_kernel(const float* __restrict__ x, const float* __restrict__ dy,
                                      const float* __restrict__ relu_y, const float* __restrict__ gamma,
                                      const float* __restrict__ mean, const float* __restrict__ invstd,
                                      const float* __restrict__ dgamma, const float* __restrict__ dbeta, int c, int hw,
                                      double m, size_t total, float* __restrict__ dx) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int k = int(i / size_t(hw) % size_t(c));
    const double is = invstd[k], mu = mean[k], gi = double(gamma[k]) * is;
    const double b = -gi * is * double(dgamma[k]) / m, cc = -gi * double(dbeta[k]) / m;
    dx[i] = float(gi * double(masked(dy, relu_y, i)) + b * (double(x[i]) - mu) + cc);
  }
}

__global__ void gap_forward_kernel(const float* __restrict__ x, float* __restrict__ y, size_t planes, int hw) {
  for (size_t p = blockIdx.x * size_t(blockDim.x) + threadIdx.x; p < planes; p += size_t(gridDim.x) * blockDim.x) {
    double s = 0;
    for (int q = 0; q < hw; ++q) s += double(x[p * hw + q]);
    y[p] = float(s / hw);
  }
}

__global__ void gap_backward_kernel(const float* __restrict__ dy, float* __restrict__ dx, size_t total, int hw) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x)
    dx[i] = float(double(dy[i / hw]) / hw);
}

// One thread per subsampled element; every (input, output) pair is touched once.
template <bool Backward>
__global__ void shortcut_kernel(const float* __restrict__ src, float* __restrict__ dst, int n, int c_in, int h, int w,
                                int c_out, int stride, int oh, int ow, int pad) {
  const size_t total = size_t(n) * c_in * oh * ow;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    const int q = int(i % ow), r = int(i / ow % oh);
    const size_t p = i / (size_t(ow) * oh);  // input plane: image * c_in + channel
    const size_t img = p / c_in, ch = p % c_in;
    const size_t xi = p * h * w + size_t(r) * stride * w + size_t(q) * stride;
    const size_t yi = ((img * c_out + ch + pad) * oh + r) * ow + q;
    if (Backward) dst[xi] += src[yi];
    else dst[yi] += src[xi];
  }
}

__global__ void dropout_kernel(const float* __restrict__ x, float* __restrict__ y, size_t n, float p,
                               const uint64_t* __restrict__ key) {
  const uint64_t k = *key;
  const float keep = 1.0f / (1.0f - p);
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    y[i] = dropout_uniform(k, i) < p ? 0.f : x[i] * keep;
}

__global__ void batch_key_kernel(const int32_t* __restrict__ idx, int n, uint64_t seed, uint64_t* key) {
  uint64_t h = mix64(seed);
  for (int i = 0; i < n; ++i) h = batch_key_step(h, idx[i]);
  *key = h;
}

__global__ void ema_kernel(float* __restrict__ r, const float* __restrict__ stat, size_t n, float momentum,
                           float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    r[i] = (1.f - momentum) * r[i] + momentum * (scale * stat[i]);
}

__global__ void augment_kernel(const float* __restrict__ x, float* __restrict__ y, const int32_t* __restrict__ idx,
                               int n, int c, int h, int w, int pad, bool flip, uint64_t seed,
                               const int32_t* __restrict__ epoch, const float* __restrict__ fill) {
  const uint64_t e = uint64_t(uint32_t(epoch[0])) | uint64_t(uint32_t(epoch[1])) << 32;
  const size_t total = size_t(n) * c * h * w;
  for (size_t t = blockIdx.x * size_t(blockDim.x) + threadIdx.x; t < total; t += size_t(gridDim.x) * blockDim.x) {
    const int j = int(t % w), i = int(t / w % h), ch = int(t / (size_t(w) * h) % c);
    const size_t s = t / (size_t(w) * h * c);
    AugmentDraw d = augment_draw(seed, e, idx[s], pad);
    d.flip = d.flip && flip;
    int si = 0, sj = 0;
    y[t] = augment_source(d, i, j, h, w, &si, &sj) ? x[((s * c + ch) * h + si) * w + sj] : fill[ch];
  }
}

}  // namespace

using cuda_detail::blocks_for;
using cuda_detail::kThreads;
using cuda_detail::prepare;

namespace {

// y = relu(y + add), either part optional: the residual epilogue after cuDNN's pass.
__global__ void add_relu_kernel(float* __restrict__ y, const float* __restrict__ add, bool relu, size_t total) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x) {
    float v = y[i];
    if (add != nullptr) v = __fadd_rn(v, add[i]);
    y[i] = relu && !(v > 0.f) ? 0.f : v;
  }
}

// dy where relu_y > 0, else 0: the ReLU's backward before cuDNN's.
__global__ void relu_mask_kernel(const float* __restrict__ dy, const float* __restrict__ relu_y,
                                 float* __restrict__ out, size_t total) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < total; i += size_t(gridDim.x) * blockDim.x)
    out[i] = relu_y[i] > 0.f ? dy[i] : 0.f;
}

// cuDNN's spatial batch norm (deterministic) where it applies: not with
// ctx.deterministic (ours then, the CPU twin's order), an eps cuDNN accepts,
// and more than one value per channel (cuDNN has no unbiased variance of one).
bool use_cudnn(const Context& ctx, const BnShape& s, double eps) {
  return ctx.cudnn_batchnorm && !ctx.deterministic && eps >= CUDNN_BN_MIN_EPSILON && size_t(s.n) * s.hw > 1;
}

BnPlan& bn_plan(CudaState& st, const BnShape& s) {
  auto& p = st.bn_plans[{s.n, s.c, s.hw}];
  if (p) return *p;
  auto plan = std::make_unique<BnPlan>();
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->x));
  CUDNN_CHECK(cudnnCreateTensorDescriptor(&plan->per_channel));
  CUDNN_CHECK(cudnnSetTensor4dDescriptor(plan->x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, s.n, s.c, s.hw, 1));
  CUDNN_CHECK(cudnnDeriveBNTensorDescriptor(plan->per_channel, plan->x, CUDNN_BATCHNORM_SPATIAL));
  p = std::move(plan);
  return *p;
}

}  // namespace

void batchnorm_forward_train(Context& ctx, const BnShape& s, const float* x, const float* gamma, const float* beta,
                             double eps, float* y, float* mean, float* invstd, float* var_unbiased, const float* add,
                             bool relu) {
  CudaState& st = prepare(ctx);
  if (use_cudnn(ctx, s, eps)) {
    const BnPlan& p = bn_plan(st, s);
    const float one = 1.f, zero = 0.f;
    // With an average factor of 1 the "running" outputs are the batch's own
    // mean and unbiased variance; the mean goes to scratch (the saved mean is
    // `mean`) and the variance where it is asked for.
    float* scratch = static_cast<float*>(ctx.workspace(sizeof(float) * 2 * size_t(s.c)));
    float* run_var = var_unbiased != nullptr ? var_unbiased : scratch + s.c;
    CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(st.cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, p.x, x, p.x, y,
                                                       p.per_channel, gamma, beta, 1.0, scratch, run_var, eps, mean,
                                                       invstd));
    if (add != nullptr || relu) {
      add_relu_kernel<<<blocks_for(s.size()), kThreads, 0, st.stream>>>(y, add, relu, s.size());
      CUDA_CHECK_LAUNCH();
    }
    return;
  }
  bn_stats_kernel<<<s.c, kReduceThreads, 0, st.stream>>>(x, s.n, s.c, s.hw, eps, mean, invstd, var_unbiased);
  CUDA_CHECK_LAUNCH();
  bn_apply_kernel<<<blocks_for(s.size()), kThreads, 0, st.stream>>>(x, gamma, beta, mean, invstd, nullptr, eps, s.c,
                                                                    s.hw, s.size(), add, relu, y);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(Context& ctx, const BnShape& s, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, double eps, float* y) {
  CudaState& st = prepare(ctx);
  if (use_cudnn(ctx, s, eps)) {
    const BnPlan& p = bn_plan(st, s);
    const float one = 1.f, zero = 0.f;
    CUDNN_CHECK(cudnnBatchNormalizationForwardInference(st.cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, p.x, x, p.x, y,
                                                        p.per_channel, gamma, beta, running_mean, running_var, eps));
    return;
  }
  bn_apply_kernel<<<blocks_for(s.size()), kThreads, 0, st.stream>>>(x, gamma, beta, running_mean, nullptr,
                                                                    running_var, eps, s.c, s.hw, s.size(), nullptr,
                                                                    false, y);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(Context& ctx, const BnShape& s, const float* x, const float* dy, const float* gamma,
                        const float* mean, const float* invstd, float* dx, float* dgamma, float* dbeta,
                        const float* relu_y) {
  CudaState& st = prepare(ctx);
  // cuDNN needs dx; the parameters' gradients alone are one pass of ours.
  if (dx != nullptr && use_cudnn(ctx, s, CUDNN_BN_MIN_EPSILON)) {
    const BnPlan& p = bn_plan(st, s);
    const float one = 1.f, zero = 0.f;
    const float* g = dy;
    if (relu_y != nullptr) {
      float* masked = static_cast<float*>(ctx.workspace(sizeof(float) * s.size()));
      relu_mask_kernel<<<blocks_for(s.size()), kThreads, 0, st.stream>>>(dy, relu_y, masked, s.size());
      CUDA_CHECK_LAUNCH();
      g = masked;
    }
    // The saved mean and 1/std are the forward's; eps is then unused.
    CUDNN_CHECK(cudnnBatchNormalizationBackward(st.cudnn, CUDNN_BATCHNORM_SPATIAL, &one, &zero, &one, &zero, p.x, x,
                                                p.x, g, p.x, dx, p.per_channel, gamma, dgamma, dbeta,
                                                CUDNN_BN_MIN_EPSILON, mean, invstd));
    return;
  }
  bn_backward_reduce_kernel<<<s.c, kReduceThreads, 0, st.stream>>>(x, dy, relu_y, s.n, s.c, s.hw, mean, invstd,
                                                                   dgamma, dbeta);
  CUDA_CHECK_LAUNCH();
  if (dx == nullptr) return;
  bn_backward_dx_kernel<<<blocks_for(s.size()), kThreads, 0, st.stream>>>(
      x, dy, relu_y, gamma, mean, invstd, dgamma, dbeta, s.c, s.hw, double(s.n) * s.hw, s.size(), dx);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_forward(Context& ctx, int n, int c, int hw, const float* x, float* y) {
  CudaState& st = prepare(ctx);
  const size_t planes = size_t(n) * c;
  gap_forward_kernel<<<blocks_for(planes), kThreads, 0, st.stream>>>(x, y, planes, hw);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_backward(Context& ctx, int n, int c, int hw, const float* dy, float* dx) {
  CudaState& st = prepare(ctx);
  const size_t total = size_t(n) * c * hw;
  gap_backward_kernel<<<blocks_for(total), kThreads, 0, st.stream>>>(dy, dx, total, hw);
  CUDA_CHECK_LAUNCH();
}

void shortcut_add(Context& ctx, const ShortcutShape& s, const float* x, float* y) {
  CudaState& st = prepare(ctx);
  const size_t total = size_t(s.n) * s.c_in * s.out_h() * s.out_w();
  shortcut_kernel<false><<<blocks_for(total), kThreads, 0, st.stream>>>(x, y, s.n, s.c_in, s.h, s.w, s.c_out,
                                                                        s.stride, s.out_h(), s.out_w(), s.pad());
  CUDA_CHECK_LAUNCH();
}

void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const float* dy, float* dx) {
  CudaState& st = prepare(ctx);
  const size_t total = size_t(s.n) * s.c_in * s.out_h() * s.out_w();
  shortcut_kernel<true><<<blocks_for(total), kThreads, 0, st.stream>>>(dy, dx, s.n, s.c_in, s.h, s.w, s.c_out,
                                                                       s.stride, s.out_h(), s.out_w(), s.pad());
  CUDA_CHECK_LAUNCH();
}

void dropout_forward(Context& ctx, const float* x, float* y, size_t n, float p, const uint64_t* key) {
  CudaState& st = prepare(ctx);
  dropout_kernel<<<blocks_for(n), kThreads, 0, st.stream>>>(x, y, n, p, key);
  CUDA_CHECK_LAUNCH();
}

void dropout_backward(Context& ctx, const float* dy, float* dx, size_t n, float p, const uint64_t* key) {
  dropout_forward(ctx, dy, dx, n, p, key);
}

void batch_key(Context& ctx, const int32_t* idx, int n, uint64_t seed, uint64_t* key) {
  CudaState& st = prepare(ctx);
  batch_key_kernel<<<1, 1, 0, st.stream>>>(idx, n, seed, key);
  CUDA_CHECK_LAUNCH();
}

void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill) {
  CudaState& st = prepare(ctx);
  const size_t total = size_t(n) * c * h * w;
  augment_kernel<<<blocks_for(total), kThreads, 0, st.stream>>>(x, y, idx, n, c, h, w, pad, flip, seed, epoch, fill);
  CUDA_CHECK_LAUNCH();
}

void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale) {
  CudaState& st = prepare(ctx);
  ema_kernel<<<blocks_for(n), kThreads, 0, st.stream>>>(r, stat, n, momentum, scale);
  CUDA_CHECK_LAUNCH();
}

}  // namespace adasync::cuda
