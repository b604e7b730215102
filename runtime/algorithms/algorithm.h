// Algorithm: what a run trains with, behind one interface: the parameter
// server's six variants and APAM, device sync, SwarmSGD. The run creates one
// at set-up; the supervisor's evaluations and checkpoints and the run's end
// read it without asking which it is.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "runtime/checkpoint.h"
#include "runtime/engine/aggregator.h"
#include "runtime/engine/param_server.h"

namespace adasync {

class Algorithm {
 public:
  virtual ~Algorithm() = default;
  // Trains until the supervisor says stop; returns the clock time at the end.
  virtual double train() = 0;
  // The parameters as of now as the PS's latest snapshot (an algorithm that
  // trains elsewhere publishes them into it first) and the keys an evaluation
  // of them adds to its record (`extra` may be null).
  virtual SnapshotPtr publish(nlohmann::json* extra) = 0;
  // Its counters in the aggregator's terms: pushes, counted gradients, updates.
  virtual AggregatorStats counts() = 0;
  // Where each worker's sampler stands, consistent with publish().
  virtual std::vector<uint64_t> positions() = 0;
  // Its own checkpoint state beyond the PS's: a header entry (null: none) and
  // arrays into `c`.
  virtual nlohmann::json save(Checkpoint* c) {
    (void)c;
    return nullptr;
  }
  // Whether a checkpoint can hold the whole state now (not when an MPI rank
  // was lost with its SwarmSGD nodes).
  virtual bool whole() { return true; }
  // Whether a run continues exactly only from the driver's last quiet point
  // (the PS's virtual clock, between updates), so the final checkpoint is
  // that state; otherwise it is the state at the end.
  virtual bool resumes_from_quiet_point() const { return false; }
  // After training and the final checkpoint: the parameters the run ends
  // with and their evaluation's keys; lets go of what it holds elsewhere.
  virtual SnapshotPtr finish(nlohmann::json* extra) { return publish(extra); }
};

}  // namespace adasync
