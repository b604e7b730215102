#include <nccl.h>

#include "kernels/collective.h"
#include "kernels/cuda/state.cuh"

#define NCCL_CHECK(call)                                                                                   \
  do {                                                                                                     \
    const ncclResult_t adasync_r_ = (call);                                                                \
    if (adasync_r_ != ncclSuccess)                                                                         \
      ::adasync::cuda_detail::fail("NCCL", #call, ncclGetErrorString(adasync_r_), __FILE__, __LINE__);     \
  } while (0)

namespace adasync {

struct NcclState {
  std::vector<ncclComm_t> comms;
  ~NcclState() {
    for (auto c : comms)
      if (c != nullptr) ncclCommDestroy(c);
  }
};

Communicator::Communicator(const std::vector<Context*>& ranks) : ranks_(ranks), state_(std::make_unique<NcclState>()) {
  EXPECTS(!ranks.empty(), "a communicator needs at least one rank");
  std::vector<int> devices;
  for (Context* c : ranks) {
    EXPECTS(c->is_cuda(), "NCCL ranks must be CUDA contexts");
    for (int d : devices) EXPECTS(d != c->device(), "two NCCL ranks on device " << d);
    devices.push_back(c->device());
  }
  state_->comms.resize(ranks.size(), nullptr);
  NCCL_CHECK(ncclCommInitAll(state_->comms.data(), int(ranks.size()), devices.data()));
}

Communicator::~Communicator() = default;

void Communicator::all_reduce_sum(const std::vector<float*>& bufs, size_t n) {
  ADASYNC_RANGE("nccl/all_reduce");
  EXPECTS(bufs.size() == ranks_.size(), bufs.size() << " buffers for " << ranks_.size() << " ranks");
  NCCL_CHECK(ncclGroupStart());
  for (size_t r = 0; r < ranks_.size(); ++r) {
    CUDA_CHECK(cudaSetDevice(ranks_[r]->device()));
    NCCL_CHECK(ncclAllReduce(bufs[r], bufs[r], n, ncclFloat, ncclSum, state_->comms[r], ranks_[r]->stream()));
  }
  NCCL_CHECK(ncclGroupEnd());
}

}  // namespace adasync
