// Workers: what computes a gradient, and how a computation is cancelled.
//
// A GradientWorker belongs to one worker and one Context. pull() makes a
// snapshot the parameters of the next computations (a CPU worker binds its
// layers to the snapshot's memory; a CUDA worker copies it to the device on
// its stream). compute() draws nothing: it is handed the batch indices, the
// host slot to write the gradient into and the straggler delay to inject, and
// returns when the gradient is in the slot (the only host wait is on the
// worker's own stream). The virtual clock calls the same methods with no delay.
//
// CancelSource is the PS's handle on a worker's current computation: the PS
// bumps the generation; the worker polls it between layers, sleeps on it
// during an injected delay, and a CUDA delay kernel watches a host-mapped
// copy of it. A computation started at generation g is cancelled once the
// generation differs from g.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "models/model.h"
#include "runtime/engine/param_server.h"

namespace adasync {

class CancelSource {
 public:
  CancelSource();
  ~CancelSource();
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }
  void cancel();
  // Sleeps `seconds` unless the generation leaves `gen`; true if it slept fully.
  bool sleep_unless_cancelled(double seconds, uint64_t gen) const;
  // Host-mapped word mirroring the generation's low 32 bits (device-readable);
  // null when no GPU is usable.
  const volatile uint32_t* mapped() const { return mapped_; }

 private:
  std::atomic<uint64_t> gen_{0};
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  volatile uint32_t* mapped_ = nullptr;
};

struct GradResult {
  float loss = 0;
  bool finite = true;
};

class GradientWorker {
 public:
  virtual ~GradientWorker() = default;
  virtual size_t num_params() const = 0;
  virtual void pull(const SnapshotPtr& s) = 0;
  // False when cancelled (the slot's contents are then undefined).
  virtual bool compute(const std::vector<int32_t>& indices, float* slot, double delay, const CancelSource* cancel,
                       uint64_t gen, GradResult* out) = 0;
  // The epoch of the next computation's batch (data augmentation draws from it).
  virtual void set_epoch(uint64_t epoch) {}
};

// Training-data augmentation for images (--augment): a pad-pixel padded random
// crop and a horizontal flip, drawn from (seed, epoch, sample), padding with
// each channel's value of a black pixel (as torchvision pads before it
// normalises).
struct Augmentation {
  bool on = false;
  int pad = 4;
  bool flip = true;
  uint64_t seed = 0;
  std::vector<float> fill;  // per channel
};

// A model replica computing on mini-batches of a dataset (CPU or CUDA context).
class ModelWorker : public GradientWorker {
 public:
  ModelWorker(int id, Context& ctx, const std::string& arch, const Dataset& train, int batch);
  ~ModelWorker() override;
  size_t num_params() const override { return model_.num_params(); }
  void pull(const SnapshotPtr& s) override;
  bool compute(const std::vector<int32_t>& indices, float* slot, double delay, const CancelSource* cancel,
               uint64_t gen, GradResult* out) override;
  Model<float>& model() { return model_; }
  Context& context() { return ctx_; }
  void set_augmentation(const Augmentation& a);
  void set_epoch(uint64_t epoch) override { epoch_ = epoch; }

  // CUDA contexts only: enqueues gather, forward and backward of `indices` on
  // the worker's stream, leaving the gradient in model().grads() and the loss
  // in model().loss_ptr(). Index staging alternates between two pinned
  // buffers (and two captured graphs), so the caller may enqueue step s+1
  // once step s-1 is complete.
  void enqueue_gradient(const std::vector<int32_t>& indices);

 private:
  struct Device;  // CUDA-side staging (defined with the CUDA backend)
  int id_;
  Context& ctx_;
  const Dataset& data_;
  Model<float> model_;
  SnapshotPtr params_;
  std::vector<float> x_;  // CPU batch staging
  std::vector<int32_t> y_;
  Augmentation aug_;
  uint64_t epoch_ = 0;
  std::vector<float> x_aug_;
  std::string range_pull_, range_fwd_, range_bwd_, range_push_, range_delay_;
  std::unique_ptr<Device> dev_;
};

// Test-set evaluation on its own replica.
struct EvalResult {
  double loss = 0, accuracy = 0;
  size_t samples = 0;
};
class Evaluator {
 public:
  Evaluator(Context& ctx, const std::string& arch, const Dataset& test, int batch = 500);
  ~Evaluator();
  // Evaluates parameters (host memory) on the first `limit` test samples (0: all).
  EvalResult evaluate(const float* params, size_t limit = 0);

 private:
  struct Device;
  Context& ctx_;
  const Dataset& data_;
  int batch_;
  Model<float> model_;
  std::unique_ptr<Device> dev_;
};

// True when every value is finite.
bool all_finite(const float* x, size_t n);

}  // namespace adasync
