// CUDA implementations of kernels/ops.h (float only). Each enqueues work on
// ctx.stream() and returns at once: no host synchronisation, no default
// stream. Declared without CUDA headers so the dispatcher compiles anywhere.
#pragma once

#include "kernels/ops.h"

namespace adasync::cuda {

void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc);
void bias_add(Context& ctx, float* y, const float* b, int rows, int cols);
void bias_grad(Context& ctx, const float* dy, float* db, int rows, int cols);
void conv2d_forward(Context& ctx, const ConvShape& s, const float* x, const float* w, const float* b, float* y);
void conv2d_backward_data(Context& ctx, const ConvShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_filter(Context& ctx, const ConvShape& s, const float* x, const float* dy, float* dw,
                            float* db);
void maxpool2d_forward(Context& ctx, const PoolShape& s, const float* x, float* y, int32_t* argmax, bool relu);
void maxpool2d_backward(Context& ctx, const PoolShape& s, const float* dy, const int32_t* argmax, float* dx);
void relu_forward(Context& ctx, const float* x, float* y, size_t n);
void relu_backward(Context& ctx, const float* y, const float* dy, float* dx, size_t n);
void softmax_xent(Context& ctx, const float* logits, const int32_t* labels, int rows, int classes, float* loss,
                  float* dlogits);
void count_correct(Context& ctx, const float* logits, const int32_t* labels, int rows, int classes,
                   int32_t* correct);
void sgd_update(Context& ctx, float* w, const float* g, float* velocity, size_t n, float lr, float mu,
                float weight_decay, bool nesterov);
void gather_rows(Context& ctx, const float* rows, const int32_t* labels, const int32_t* idx, int count,
                 size_t dim, float* out, int32_t* out_labels);
void batchnorm_forward_train(Context& ctx, const BnShape& s, const float* x, const float* gamma, const float* beta,
                             double eps, float* y, float* mean, float* invstd, float* var_unbiased,
                             const float* add = nullptr, bool relu = false);
void batchnorm_forward_eval(Context& ctx, const BnShape& s, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, double eps, float* y);
void batchnorm_backward(Context& ctx, const BnShape& s, const float* x, const float* dy, const float* gamma,
                        const float* mean, const float* invstd, float* dx, float* dgamma, float* dbeta,
                        const float* relu_y = nullptr);
void global_avgpool_forward(Context& ctx, int n, int c, int hw, const float* x, float* y);
void global_avgpool_backward(Context& ctx, int n, int c, int hw, const float* dy, float* dx);
void shortcut_add(Context& ctx, const ShortcutShape& s, const float* x, float* y);
void shortcut_add_backward(Context& ctx, const ShortcutShape& s, const float* dy, float* dx);
void dropout_forward(Context& ctx, const float* x, float* y, size_t n, float p, const uint64_t* key);
void dropout_backward(Context& ctx, const float* dy, float* dx, size_t n, float p, const uint64_t* key);
void batch_key(Context& ctx, const int32_t* idx, int n, uint64_t seed, uint64_t* key);
void ema_update(Context& ctx, float* r, const float* stat, size_t n, float momentum, float scale);
void augment_crop_flip(Context& ctx, const float* x, float* y, const int32_t* idx, int n, int c, int h, int w,
                       int pad, bool flip, uint64_t seed, const int32_t* epoch, const float* fill);
void fill(Context& ctx, float* x, float value, size_t n);
void axpy(Context& ctx, float a, const float* x, float* y, size_t n);
void scale(Context& ctx, float a, const float* x, float* y, size_t n);

void count_nonfinite(Context& ctx, const float* x, size_t n, int32_t* count);
void spin_delay(Context& ctx, double seconds, const volatile uint32_t* cancel, uint32_t gen);

}  // namespace adasync::cuda
