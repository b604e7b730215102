// Launch helpers shared by the CUDA op files.
#pragma once

#include <algorithm>

#include "kernels/cuda/state.cuh"

namespace adasync::cuda_detail {

// The context's CUDA state with its device made current on this thread.
inline CudaState& prepare(Context& ctx) {
  CudaState& s = *ctx.cuda_state();
  set_device(s);
  return s;
}

constexpr int kThreads = 256;
// Blocks for a grid-stride loop over n items (capped: the loop covers the rest).
inline unsigned blocks_for(size_t n) {
  return unsigned(std::max<size_t>(1, std::min<size_t>((n + kThreads - 1) / kThreads, 65536)));
}

}  // namespace adasync::cuda_detail
