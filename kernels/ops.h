// The tensor ops, dispatched on the Context's device.
//
// Every op has a CPU implementation (kernels/cpu, templated on float and
// double: the fallback and the test oracle) and a CUDA one (kernels/cuda,
// float only, asynchronous on the context's stream). Pointers must live in the
// context's memory kind. Layouts are row-major; images are NCHW. Scalar
// results (loss, correct count) are written to memory of that kind too, so a
// CUDA step never synchronises; read them after the stream is done.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/context.h"

namespace adasync {

struct ConvShape {
  int n = 1, c = 1, h = 1, w = 1;  // input
  int k = 1;                        // output channels
  int r = 1, s = 1;                 // kernel height, width
  int pad_h = 0, pad_w = 0;
  int stride_h = 1, stride_w = 1;
  // 0 when the kernel does not fit (C++ division truncates toward zero).
  int out_h() const { return h + 2 * pad_h < r ? 0 : (h + 2 * pad_h - r) / stride_h + 1; }
  int out_w() const { return w + 2 * pad_w < s ? 0 : (w + 2 * pad_w - s) / stride_w + 1; }
  size_t x_size() const { return size_t(n) * c * h * w; }
  size_t y_size() const { return size_t(n) * k * out_h() * out_w(); }
  size_t w_size() const { return size_t(k) * c * r * s; }
};

struct PoolShape {
  int n = 1, c = 1, h = 1, w = 1;
  int size = 2, stride = 2;
  int out_h() const { return h < size ? 0 : (h - size) / stride + 1; }
  int out_w() const { return w < size ? 0 : (w - size) / stride + 1; }
  size_t x_size() const { return size_t(n) * c * h * w; }
  size_t y_size() const { return size_t(n) * c * out_h() * out_w(); }
};

// Batch norm over NCHW: statistics per channel over n * hw values.
struct BnShape {
  int n = 1, c = 1, hw = 1;
  size_t size() const { return size_t(n) * c * hw; }
};

// The CIFAR ResNets' option-A shortcut: x [n, c_in, h, w] subsampled by
// `stride` (x[:, :, ::stride, ::stride]) and zero-padded to c_out channels,
// (c_out - c_in) / 2 on each side, as torch.nn.functional.pad does there.
struct ShortcutShape {
  int n = 1, c_in = 1, h = 1, w = 1, c_out = 1, stride = 1;
  int out_h() const { return (h + stride - 1) / stride; }
  int out_w() const { return (w + stride - 1) / stride; }
  int pad() const { return (c_out - c_in) / 2; }
};

namespace ops {

// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C (row-major; lda etc.
// are row strides of the stored matrices).
template <typename T>
void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc);

// y[r, :] += b for each of `rows` rows of `cols` columns.
template <typename T>
void bias_add(Context& ctx, T* y, const T* b, int rows, int cols);
// db = sum over rows of dy[r, :] (overwrites db).
template <typename T>
void bias_grad(Context& ctx, const T* dy, T* db, int rows, int cols);

// y = conv(x, w) + b; b may be null.
template <typename T>
void conv2d_forward(Context& ctx, const ConvShape& s, const T* x, const T* w, const T* b, T* y);
// dx = conv_transpose(dy, w) (overwrites dx).
template <typename T>
void conv2d_backward_data(Context& ctx, const ConvShape& s, const T* dy, const T* w, T* dx);
// dw = correlation of x and dy; db = per-channel sums of dy (db may be null). Overwrites.
template <typename T>
void conv2d_backward_filter(Context& ctx, const ConvShape& s, const T* x, const T* dy, T* dw, T* db);

// Max pooling; argmax[i] is the flat input index (within its (n, c) plane) of
// output i (first maximum in row-major window order). With relu, the op is
// maxpool(relu(x)) = relu(maxpool(x)): outputs are clamped at 0 and argmax is
// -1 where the window maximum is <= 0, so backward passes no gradient there.
template <typename T>
void maxpool2d_forward(Context& ctx, const PoolShape& s, const T* x, T* y, int32_t* argmax, bool relu = false);
// dx (overwritten) = dy scattered to the argmax positions (none where argmax < 0).
template <typename T>
void maxpool2d_backward(Context& ctx, const PoolShape& s, const T* dy, const int32_t* argmax, T* dx);

template <typename T>
void relu_forward(Context& ctx, const T* x, T* y, size_t n);
// dx = dy where y > 0, else 0.
template <typename T>
void relu_backward(Context& ctx, const T* y, const T* dy, T* dx, size_t n);

// Mean softmax cross-entropy of `rows` rows of logits against labels:
// *loss = mean_r -log softmax(logits[r])[label[r]]; dlogits (if non-null) =
// (softmax - onehot) / rows. Labels must be in [0, classes).
template <typename T>
void softmax_xent(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes, T* loss,
                  T* dlogits);
// *correct = number of rows whose arg-max logit equals the label (ties: lowest index).
template <typename T>
void count_correct(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct);

// Plain SGD with momentum on the context's device (used when the update runs
// on the device: one worker, or NCCL all-reduce):
//   g' = g + wd * w; v = mu * v + g'; w -= lr * (nesterov ? g' + mu * v : v).
// velocity may be null when mu == 0.
void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov);

// out[i, :] = rows[idx[i], :] for i < count, row length `dim`; labels likewise.
void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count,
                 size_t dim, float* out, int32_t* out_labels);

// *count = number of non-finite (NaN or infinite) values in x[0, n).
void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count);

// An injected straggler delay in the context's own time: CPU contexts sleep
// on the host; CUDA contexts enqueue a kernel that spins for `seconds` and
// stops early once the host-mapped word *cancel differs from `gen` (so a
// cancelled worker frees its stream at once). Returns without waiting on CUDA.
void spin_delay(Context& ctx, double seconds, const volatile uint32_t* cancel, uint32_t gen);

// Training-mode batch norm: per channel, the batch mean, 1/sqrt(biased var +
// eps) (both kept for backward) and the unbiased variance (what PyTorch folds
// into running_var; the biased one when n * hw == 1); y = gamma * xhat + beta.
// Sums run in double whatever T is, in a fixed order: any thread count gives
// the same bits. The epilogue of a residual block in the same pass: `add`
// (if non-null, the shape of y) added, then a ReLU if `relu`.
template <typename T>
void batchnorm_forward_train(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta, double eps,
                             T* y, T* mean, T* invstd, T* var_unbiased, const T* add = nullptr, bool relu = false);
// Evaluation mode: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.
template <typename T>
void batchnorm_forward_eval(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, double eps, T* y);
// Backward of the training mode (overwrites dgamma, dbeta and, if non-null, dx):
// dx = gamma * invstd / M * (M dy - sum dy - xhat * sum(dy * xhat)), M = n * hw.
// With `relu_y` (the output of a ReLU after the batch norm) dy is first
// zeroed where relu_y <= 0: the ReLU's backward in the same passes.
template <typename T>
void batchnorm_backward(Context& ctx, const BnShape& s, const T* x, const T* dy, const T* gamma, const T* mean,
                        const T* invstd, T* dx, T* dgamma, T* dbeta, const T* relu_y = nullptr);

// y[n, c] = mean of x[n, c, :] over hw values; backward spreads dy / hw.
template <typename T>
void global_avgpool_forward(Context& ctx, int n, int c, int hw, const T* x, T* y);
template <typename T>
void global_avgpool_backward(Context& ctx, int n, int c, int hw, const T* dy, T* dx);

// y += shortcut(x) (option A, see ShortcutShape); backward: dx += its transpose of dy.
template <typename T>
void shortcut_add(Context& ctx, const ShortcutShape& s, const T* x, T* y);
template <typename T>
void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const T* dy, T* dx);

// Inverted dropout with probability p: y = x / (1 - p) where the element is
// kept, else 0. Element i is dropped when hash(*key, i) falls below p (a
// counter-based hash, the same on every device), so backward recomputes the
// mask and a step's mask depends only on its key. `key` lives in the
// context's memory, so a captured CUDA graph reads each step's key.
template <typename T>
void dropout_forward(Context& ctx, const T* x, T* y, size_t n, float p, const uint64_t* key);
template <typename T>
void dropout_backward(Context& ctx, const T* dy, T* dx, size_t n, float p, const uint64_t* key);
// *key = hash of (seed, idx[0..n)): the dropout key of a mini-batch (indices in
// the context's memory).
void batch_key(Context& ctx, const int32_t* idx, int n, uint64_t seed, uint64_t* key);

// Augmentation of n gathered images x [n, c, h, w] into y: sample idx[i]
// shifted by (dy, dx) in [-pad, pad] (a pad-pixel padded random crop, padding
// with fill[channel]) and, with flip, mirrored left-right with probability
// 1/2; the draws are a hash of (seed, epoch, idx[i]) (augment_draw), so a
// sample's view depends on its epoch alone. `epoch` (two int32 words, low
// then high) lives in the context's memory, like idx, so a captured CUDA
// graph reads each step's epoch.
void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill);

// Running buffers: r = (1 - momentum) * r + momentum * scale * stat.
void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale);

template <typename T>
void fill(Context& ctx, T* x, T value, size_t n);
// y = a * x + y
template <typename T>
void axpy(Context& ctx, T a, const T* x, T* y, size_t n);
// y = a * x
template <typename T>
void scale(Context& ctx, T a, const T* x, T* y, size_t n);

}  // namespace ops
}  // namespace adasync
