#include "kernels/ops.h"

#include <chrono>
#include <thread>
#include <type_traits>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::ops {
#if defined(ADASYNC_HAVE_CUDA)
namespace {
[[noreturn]] void no_cuda_double(const char* op) {
  throw Error(std::string(op) + ": the CUDA backend is float32 only (double runs on CPU contexts)");
}
}  // namespace
#endif

// Dispatch: CPU contexts run the templated twin; CUDA contexts the float kernel.
#if defined(ADASYNC_HAVE_CUDA)
#define ADASYNC_DISPATCH(op, ...)                               \
  do {                                                          \
    if (ctx.is_cuda()) {                                        \
      if constexpr (std::is_same_v<T, float>) {                 \
        cuda::op(__VA_ARGS__);                                  \
      } else {                                                  \
        no_cuda_double(#op);                                    \
      }                                                         \
    } else {                                                    \
      cpu::op<T>(__VA_ARGS__);                                  \
    }                                                           \
  } while (0)
#define ADASYNC_DISPATCH_F(op, ...) \
  (ctx.is_cuda() ? cuda::op(__VA_ARGS__) : cpu::op(__VA_ARGS__))
#else
#define ADASYNC_DISPATCH(op, ...) cpu::op<T>(__VA_ARGS__)
#define ADASYNC_DISPATCH_F(op, ...) cpu::op(__VA_ARGS__)
#endif

template <typename T>
void gemm(Context& ctx, bool ta, bool tb, int m, int n, int k, T alpha, const T* a, int lda, const T* b, int ldb,
          T beta, T* c, int ldc) {
  ADASYNC_DISPATCH(gemm, ctx, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
template <typename T>
void bias_add(Context& ctx, T* y, const T* b, int rows, int cols) {
  ADASYNC_DISPATCH(bias_add, ctx, y, b, rows, cols);
}
template <typename T>
void bias_grad(Context& ctx, const T* dy, T* db, int rows, int cols) {
  ADASYNC_DISPATCH(bias_grad, ctx, dy, db, rows, cols);
}
template <typename T>
void conv2d_forward(Context& ctx, const ConvShape& s, const T* x, const T* w, const T* b, T* y) {
  ADASYNC_DISPATCH(conv2d_forward, ctx, s, x, w, b, y);
}
template <typename T>
void conv2d_backward_data(Context& ctx, const ConvShape& s, const T* dy, const T* w, T* dx) {
  ADASYNC_DISPATCH(conv2d_backward_data, ctx, s, dy, w, dx);
}
template <typename T>
void conv2d_backward_filter(Context& ctx, const ConvShape& s, const T* x, const T* dy, T* dw, T* db) {
  ADASYNC_DISPATCH(conv2d_backward_filter, ctx, s, x, dy, dw, db);
}
template <typename T>
void maxpool2d_forward(Context& ctx, const PoolShape& s, const T* x, T* y, int32_t* argmax, bool relu) {
  ADASYNC_DISPATCH(maxpool2d_forward, ctx, s, x, y, argmax, relu);
}
template <typename T>
void maxpool2d_backward(Context& ctx, const PoolShape& s, const T* dy, const int32_t* argmax, T* dx) {
  ADASYNC_DISPATCH(maxpool2d_backward, ctx, s, dy, argmax, dx);
}
template <typename T>
void relu_forward(Context& ctx, const T* x, T* y, size_t n) {
  ADASYNC_DISPATCH(relu_forward, ctx, x, y, n);
}
template <typename T>
void relu_backward(Context& ctx, const T* y, const T* dy, T* dx, size_t n) {
  ADASYNC_DISPATCH(relu_backward, ctx, y, dy, dx, n);
}
template <typename T>
void softmax_xent(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes, T* loss,
                  T* dlogits) {
  ADASYNC_DISPATCH(softmax_xent, ctx, logits, labels, rows, classes, loss, dlogits);
}
template <typename T>
void count_correct(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct) {
  ADASYNC_DISPATCH(count_correct, ctx, logits, labels, rows, classes, correct);
}
void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov) {
  ADASYNC_DISPATCH_F(sgd_update, ctx, w, g, velocity, n, lr, mu, weight_decay, nesterov);
}
void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count,
                 size_t dim, float* out, int32_t* out_labels) {
  ADASYNC_DISPATCH_F(gather_rows, ctx, rows, labels, idx, count, dim, out, out_labels);
}
void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count) {
  ADASYNC_DISPATCH_F(count_nonfinite, ctx, x, n, count);
}
void spin_delay(Context& ctx, double seconds, const volatile uint32_t* cancel, uint32_t gen) {
  if (seconds <= 0) return;
#if defined(ADASYNC_HAVE_CUDA)
  if (ctx.is_cuda()) {
    cuda::spin_delay(ctx, seconds, cancel, gen);
    return;
  }
#endif
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
}

template <typename T>
void batchnorm_forward_train(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta, double eps,
                             T* y, T* mean, T* invstd, T* var_unbiased, const T* add, bool relu) {
  ADASYNC_DISPATCH(batchnorm_forward_train, ctx, s, x, gamma, beta, eps, y, mean, invstd, var_unbiased, add, relu);
}
template <typename T>
void batchnorm_forward_eval(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, double eps, T* y) {
  ADASYNC_DISPATCH(batchnorm_forward_eval, ctx, s, x, gamma, beta, running_mean, running_var, eps, y);
}
template <typename T>
void batchnorm_backward(Context& ctx, const BnShape& s, const T* x, const T* dy, const T* gamma, const T* mean,
                        const T* invstd, T* dx, T* dgamma, T* dbeta, const T* relu_y) {
  ADASYNC_DISPATCH(batchnorm_backward, ctx, s, x, dy, gamma, mean, invstd, dx, dgamma, dbeta, relu_y);
}
template <typename T>
void global_avgpool_forward(Context& ctx, int n, int c, int hw, const T* x, T* y) {
  ADASYNC_DISPATCH(global_avgpool_forward, ctx, n, c, hw, x, y);
}
template <typename T>
void global_avgpool_backward(Context& ctx, int n, int c, int hw, const T* dy, T* dx) {
  ADASYNC_DISPATCH(global_avgpool_backward, ctx, n, c, hw, dy, dx);
}
template <typename T>
void shortcut_add(Context& ctx, const ShortcutShape& s, const T* x, T* y) {
  ADASYNC_DISPATCH(shortcut_add, ctx, s, x, y);
}
template <typename T>
void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const T* dy, T* dx) {
  ADASYNC_DISPATCH(shortcut_add_backward, ctx, s, dy, dx);
}
template <typename T>
void dropout_forward(Context& ctx, const T* x, T* y, size_t n, float p, const uint64_t* key) {
  ADASYNC_DISPATCH(dropout_forward, ctx, x, y, n, p, key);
}
template <typename T>
void dropout_backward(Context& ctx, const T* dy, T* dx, size_t n, float p, const uint64_t* key) {
  ADASYNC_DISPATCH(dropout_backward, ctx, dy, dx, n, p, key);
}
void batch_key(Context& ctx, const int32_t* idx, int n, uint64_t seed, uint64_t* key) {
  ADASYNC_DISPATCH_F(batch_key, ctx, idx, n, seed, key);
}
void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale) {
  ADASYNC_DISPATCH_F(ema_update, ctx, r, stat, n, momentum, scale);
}
void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill) {
  ADASYNC_DISPATCH_F(augment_crop_flip, ctx, x, y, idx, n, c, h, w, pad, flip, seed, epoch, fill);
}

template <typename T>
void fill(Context& ctx, T* x, T value, size_t n) {
  ADASYNC_DISPATCH(fill, ctx, x, value, n);
}
template <typename T>
void axpy(Context& ctx, T a, const T* x, T* y, size_t n) {
  ADASYNC_DISPATCH(axpy, ctx, a, x, y, n);
}
template <typename T>
void scale(Context& ctx, T a, const T* x, T* y, size_t n) {
  ADASYNC_DISPATCH(scale, ctx, a, x, y, n);
}

#define ADASYNC_OPS_INSTANTIATE(T)                                                                             \
  template void gemm<T>(Context&, bool, bool, int, int, int, T, const T*, int, const T*, int, T, T*, int);    \
  template void bias_add<T>(Context&, T*, const T*, int, int);                                                 \
  template void bias_grad<T>(Context&, const T*, T*, int, int);                                                \
  template void conv2d_forward<T>(Context&, const ConvShape&, const T*, const T*, const T*, T*);               \
  template void conv2d_backward_data<T>(Context&, const ConvShape&, const T*, const T*, T*);                   \
  template void conv2d_backward_filter<T>(Context&, const ConvShape&, const T*, const T*, T*, T*);             \
  template void maxpool2d_forward<T>(Context&, const PoolShape&, const T*, T*, int32_t*, bool);                \
  template void maxpool2d_backward<T>(Context&, const PoolShape&, const T*, const int32_t*, T*);               \
  template void relu_forward<T>(Context&, const T*, T*, size_t);                                               \
  template void relu_backward<T>(Context&, const T*, const T*, T*, size_t);                                    \
  template void softmax_xent<T>(Context&, const T*, const int32_t*, int, int, T*, T*);                         \
  template void count_correct<T>(Context&, const T*, const int32_t*, int, int, int32_t*);                      \
  template void batchnorm_forward_train<T>(Context&, const BnShape&, const T*, const T*, const T*, double, T*,  \
                                           T*, T*, T*, const T*, bool);                                       \
  template void batchnorm_forward_eval<T>(Context&, const BnShape&, const T*, const T*, const T*, const T*,     \
                                          const T*, double, T*);                                             \
  template void batchnorm_backward<T>(Context&, const BnShape&, const T*, const T*, const T*, const T*,         \
                                      const T*, T*, T*, T*, const T*);                                        \
  template void global_avgpool_forward<T>(Context&, int, int, int, const T*, T*);                              \
  template void global_avgpool_backward<T>(Context&, int, int, int, const T*, T*);                             \
  template void shortcut_add<T>(Context&, const ShortcutShape&, const T*, T*);                                 \
  template void shortcut_add_backward<T>(Context&, const ShortcutShape&, const T*, T*);                        \
  template void dropout_forward<T>(Context&, const T*, T*, size_t, float, const uint64_t*);                    \
  template void dropout_backward<T>(Context&, const T*, T*, size_t, float, const uint64_t*);                   \
  template void fill<T>(Context&, T*, T, size_t);                                                              \
  template void axpy<T>(Context&, T, const T*, T*, size_t);                                                    \
  template void scale<T>(Context&, T, const T*, T*, size_t);

ADASYNC_OPS_INSTANTIATE(float)
ADASYNC_OPS_INSTANTIATE(double)

}  // namespace adasync::ops
