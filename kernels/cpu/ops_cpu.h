// CPU twins of every op in kernels/ops.h: the CPU backend and the test oracle.
// Same contracts as ops.h; templated on float and double (the finite-difference
// gradient checks run in double). Loops split over ctx.pool() when it has
// threads; results do not depend on the thread count (each output element is
// produced by one thread in a fixed order), except GEMM, which follows OpenBLAS.
#pragma once

#include <cstddef>
#include <string>

#include "kernels/ops.h"

namespace adasync::cpu {

// Elementwise loops of the CPU ops are split in chunks of this many items.
constexpr size_t kGrain = 1 << 15;

// Threads OpenBLAS may use per call (process-wide setting).
void set_blas_threads(int threads);
int blas_threads();
// OpenBLAS's kernel name ("Haswell", "SkylakeX", ...).
std::string blas_core();
// For the startup line: empty, or a warning when OpenBLAS runs its SSE3
// Prescott kernels (what 0.3.21 picks for CPUs it does not know) on a CPU
// with AVX2, and how to pick faster ones.
std::string blas_core_note(const std::string& core, bool avx2);

template <typename T>
void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc);
template <typename T>
void bias_add(Context& ctx, T* y, const T* b, int rows, int cols);
template <typename T>
void bias_grad(Context& ctx, const T* dy, T* db, int rows, int cols);
template <typename T>
void conv2d_forward(Context& ctx, const ConvShape& s, const T* x, const T* w, const T* b, T* y);
template <typename T>
void conv2d_backward_data(Context& ctx, const ConvShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_filter(Context& ctx, const ConvShape& s, const T* x, const T* dy, T* dw, T* db);
template <typename T>
void maxpool2d_forward(Context& ctx, const PoolShape& s, const T* x, T* y, int32_t* argmax, bool relu);
template <typename T>
void maxpool2d_backward(Context& ctx, const PoolShape& s, const T* dy, const int32_t* argmax, T* dx);
template <typename T>
void relu_forward(Context& ctx, const T* x, T* y, size_t n);
template <typename T>
void relu_backward(Context& ctx, const T* y, const T* dy, T* dx, size_t n);
template <typename T>
void softmax_xent(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes, T* loss,
                  T* dlogits);
template <typename T>
void count_correct(Context& ctx, const T* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct);
void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov);
void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count,
                 size_t dim, float* out, int32_t* out_labels);
void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count);
template <typename T>
void batchnorm_forward_train(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta, double eps,
                             T* y, T* mean, T* invstd, T* var_unbiased, const T* add = nullptr, bool relu = false);
template <typename T>
void batchnorm_forward_eval(Context& ctx, const BnShape& s, const T* x, const T* gamma, const T* beta,
                            const T* running_mean, const T* running_var, double eps, T* y);
template <typename T>
void batchnorm_backward(Context& ctx, const BnShape& s, const T* x, const T* dy, const T* gamma, const T* mean,
                        const T* invstd, T* dx, T* dgamma, T* dbeta, const T* relu_y = nullptr);
template <typename T>
void global_avgpool_forward(Context& ctx, int n, int c, int hw, const T* x, T* y);
template <typename T>
void global_avgpool_backward(Context& ctx, int n, int c, int hw, const T* dy, T* dx);
template <typename T>
void shortcut_add(Context& ctx, const ShortcutShape& s, const T* x, T* y);
template <typename T>
void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const T* dy, T* dx);
template <typename T>
void dropout_forward(Context& ctx, const T* x, T* y, size_t n, float p, const uint64_t* key);
template <typename T>
void dropout_backward(Context& ctx, const T* dy, T* dx, size_t n, float p, const uint64_t* key);
void batch_key(Context& ctx, const int32_t* idx, int n, uint64_t seed, uint64_t* key);
void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale);
void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill);
template <typename T>
void fill(Context& ctx, T* x, T value, size_t n);
template <typename T>
void axpy(Context& ctx, T a, const T* x, T* y, size_t n);
template <typename T>
void scale(Context& ctx, T a, const T* x, T* y, size_t n);

}  // namespace adasync::cpu
