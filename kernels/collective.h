// Communicator: NCCL all-reduce across the GPUs of this process, one rank per
// device, driven from one host thread (grouped calls). Used by synchronous
// data-parallel training when the update runs on the devices.
#pragma once

#include <memory>
#include <vector>

#include "kernels/context.h"

namespace adasync {

struct NcclState;

class Communicator {
 public:
  // One rank per context, in order; each context on a distinct device.
  explicit Communicator(const std::vector<Context*>& ranks);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  // In place: bufs[r] (n floats on rank r's device) = sum over ranks, on
  // each rank's stream. Returns without waiting.
  void all_reduce_sum(const std::vector<float*>& bufs, size_t n);

 private:
  std::vector<Context*> ranks_;
  std::unique_ptr<NcclState> state_;
};

}  // namespace adasync
