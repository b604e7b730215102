// GEMM through cuBLAS. Row-major C = op(A) op(B) is computed as the
// column-major product C^T = op(B)^T op(A)^T, so no data is transposed.
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/ops_cuda.h"

namespace adasync::cuda {

void gemm(Context& ctx, bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a, int lda,
          const float* b, int ldb, float beta, float* c, int ldc) {
  ADASYNC_RANGE("gemm");
  CudaState& s = cuda_detail::prepare(ctx);
  if (m == 0 || n == 0) return;
  if (s.cublas_tf32 != ctx.tf32_gemm) {
    CUBLAS_CHECK(cublasSetMathMode(s.cublas, ctx.tf32_gemm ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH));
    s.cublas_tf32 = ctx.tf32_gemm;
  }
  CUBLAS_CHECK(cublasSgemm(s.cublas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
                           &alpha, b, ldb, a, lda, &beta, c, ldc));
}

}  // namespace adasync::cuda
