// DeviceSync: synchronous data-parallel SGD with the update on the GPUs.
//
// For `sync` with every worker on its own GPU (one worker included), the
// host parameter server adds two PCIe copies and a host pass per step and
// nothing else. Here each worker computes its gradient on its stream, NCCL
// all-reduces the gradients across the GPUs (skipped for one GPU), and every
// GPU applies the same SGD-with-momentum update to its own copy, so the
// replicas stay identical with no host round trip. Steps are pipelined: the
// host enqueues step s+1 while step s runs and reads losses one step late.
#pragma once

#include <memory>
#include <tuple>
#include <vector>

#include "kernels/collective.h"
#include "runtime/drivers/worker.h"
#include "runtime/engine/optimizer.h"

namespace adasync {

class DeviceSync {
 public:
  // workers: one per device, all CUDA; init: host parameters for all replicas.
  DeviceSync(std::vector<ModelWorker*> workers, const OptimizerConfig& opt, const float* init);
  ~DeviceSync();

  // Enqueues one step (batches[w] for worker w, delays[w] seconds of injected
  // straggler time before the all-reduce) at learning rate lr.
  void step(const std::vector<std::vector<int32_t>>& batches, const std::vector<double>& delays, float lr);
  // Waits for every enqueued step; returns the mean loss of each step
  // finished since the last call, in order.
  std::vector<float> drain();
  // Mean losses of steps already complete (without waiting), in order.
  std::vector<float> completed();
  // Copies the parameters (identical on every replica) to host memory.
  void params_to_host(float* out);
  // Momentum buffers (identical on every replica) to and from host memory;
  // empty without momentum. The device keeps P v (see step()); these speak
  // in the host optimizer's terms, v.
  std::vector<float> velocity_to_host();
  void velocity_from_host(const std::vector<float>& v);

 private:
  struct Slot;
  std::vector<float> collect(bool wait);

  std::vector<ModelWorker*> workers_;
  OptimizerConfig opt_;
  size_t n_;
  ParamLayout layout_;
  // [begin, end, decayed] pieces of the parameters, in order (--no-decay-bn).
  std::vector<std::tuple<size_t, size_t, bool>> segments_;
  std::unique_ptr<Communicator> comm_;
  std::vector<Buffer<float>> velocity_;
  std::vector<std::unique_ptr<Slot>> inflight_;  // steps enqueued, losses not yet read
  std::vector<std::unique_ptr<Slot>> spare_;
};

}  // namespace adasync
