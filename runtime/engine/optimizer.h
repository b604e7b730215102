// Host-side optimizers over the flat parameter buffer, fused with the
// averaging of the counted gradients.
//
// step() makes one pass over memory: for each block of parameters it forms
// g = sum_l c[l] * grad_l (summed in l order, so the result is independent of
// threading), adds weight decay, updates the state and writes the new
// parameters. Blocks are split over the ThreadPool; every element is computed
// by exactly one thread, so results are bit-identical for any thread count.
//
//   sgd       v = mu v + g;  w -= lr * (nesterov ? g + mu v : v)   (mu = 0: w -= lr g)
//   adam      m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  w -= a_k m / (sqrt(v) + eps)
//   amsgrad   as adam with vh = max(vh, v) in place of v in the denominator
// with a_k = lr * sqrt(1 - b2^k) / (1 - b1^k) when bias correction is on (k =
// steps taken, from 1), else a_k = lr (ALGORITHMS.md section 6).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kernels/thread_pool.h"
#include "models/layout.h"
#include "runtime/config/settings.h"

namespace adasync {


// The buffers of `layout` in w_out from those in w_in and the k pushed
// statistics (ALGORITHMS.md section 8): running statistics move toward the
// plain mean of the k (whatever weights the gradients had), counters go up
// by one. w_out may equal w_in.
void fold_buffers(const ParamLayout& layout, const float* w_in, float* w_out, const float* const* stats, int k);


class HostOptimizer {
 public:
  HostOptimizer(const OptimizerConfig& config, size_t n, ThreadPool* pool);
  // What each element is (default: every one a parameter); layout.total == size().
  void set_layout(const ParamLayout& layout);
  const ParamLayout& layout() const { return layout_; }

  const OptimizerConfig& config() const { return cfg_; }
  size_t size() const { return n_; }
  // Bytes of optimizer state read and written per parameter per step.
  size_t state_floats() const;

  // w_out = rule(w_in, sum_l c[l] grads[l]) over the parameters, and the
  // buffers folded (fold_buffers); w_out may equal w_in.
  void step(const float* w_in, float* w_out, const float* const* grads, const float* c, int k, float lr);

  int64_t steps() const { return steps_; }
  // Named state arrays (for checkpoints) and the step count.
  std::vector<std::pair<std::string, std::vector<float>*>> state();
  void set_steps(int64_t s) { steps_ = s; }

 private:
  enum class Kind { Sgd, Adam, AmsGrad } kind_;
  OptimizerConfig cfg_;
  size_t n_;
  ParamLayout layout_;
  ThreadPool* pool_;
  int64_t steps_ = 0;
  std::vector<float> m_, v_, vh_;  // sgd uses m_ as the velocity
};

}  // namespace adasync
