// SwarmEngine's node (swarm.cc: the interactions and state; swarm_drivers.cc:
// the virtual-clock event loop and the node threads). Private to those two.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "datasets/rng.h"
#include "runtime/algorithms/swarm.h"

namespace adasync {

struct SwarmEngine::Node {
  std::mutex mu;  // real clock: guards x, pub, dist and the interaction scratch (tmp_a, tmp_b, bound, d_*, io)
  Buffer<float> x, pub, grad, work, tmp_a, tmp_b;
  // Adaptive step: the last max |x - partner| per block this node learnt, and scratch.
  std::vector<float> dist, bound, d_in, d_out;
  TransferScratch io;
  std::vector<int32_t> idx;
  Rng rng;
  int steps_left = 0;
  float loss = 0;
  bool finite = true;             // of the pending gradient
  int64_t computations = 0;       // started (fault injection counts these)
  std::atomic<bool> failed{false};  // its worker failed: no more steps, no partner of anyone
  // Virtual: the pending step's event. Real: the sampler position.
  bool has_event = false;
  double due = 0;
  uint64_t seq = 0;
  std::atomic<uint64_t> position{0};
};

}  // namespace adasync
