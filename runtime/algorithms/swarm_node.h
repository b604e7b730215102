// SwarmEngine's node, shared by the engine's files (swarm.cc: the steps and
// interactions; swarm_state.cc: the state a run reads and checkpoints).
#pragma once

#include <pthread.h>

#include <atomic>
#include <cerrno>
#include <memory>
#include <mutex>
#include <system_error>
#include <vector>

#include "datasets/rng.h"
#include "kernels/context.h"
#include "runtime/algorithms/swarm.h"
#include "runtime/engine/optimizer.h"

namespace adasync {
// A node's lock: its own mutex, or the process-shared robust one in shared
// memory. A process that dies holding it (a killed rank) leaves the node's
// arrays as they were, valid floats: the next owner carries on, and rank 0
// reports the lost rank.
class SwarmEngine::NodeLock {
 public:
  pthread_mutex_t* shared = nullptr;
  void lock() {
    if (shared == nullptr) return own_.lock();
    const int r = pthread_mutex_lock(shared);
    if (r == EOWNERDEAD) {
      pthread_mutex_consistent(shared);
    } else if (r != 0) {
      throw std::system_error(r, std::generic_category(), "SwarmSGD: locking a node in shared memory");
    }
  }
  void unlock() {
    if (shared == nullptr) return own_.unlock();
    pthread_mutex_unlock(shared);
  }

 private:
  std::mutex own_;
};

struct SwarmEngine::Node {
  NodeLock mu;  // real clock: guards x, pub, dist and the interaction scratch (tmp_a, tmp_b, bound, d_*, io)
  // The model, its published copy and, adaptive step, the last max
  // |x - partner| per block this node learnt: own_* or shared memory.
  float* x = nullptr;
  float* pub = nullptr;
  float* dist = nullptr;
  Buffer<float> own_x, own_pub, grad, tmp_a, tmp_b;
  std::vector<float> own_dist, bound, d_in, d_out;  // (and the adaptive step's scratch)
  TransferScratch io;
  Rng rng;
  std::unique_ptr<HostOptimizer> opt;  // plain SGD: the apply every algorithm shares
  int steps_left = 0;
  InFlight step;  // virtual clock
  std::atomic<uint64_t> position{0};
};

}  // namespace adasync
