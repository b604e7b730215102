// The two halves of a real-time run, shared by the threads driver (one
// process) and the MPI transport (workers on other ranks):
//   worker_loop   one worker's thread: wait for the PS's word, pull, compute,
//                 push, until the transport says stop;
//   serve_updates the PS side: take messages from the transport in arrival
//                 order, feed the update loop, post its decisions, until the
//                 hooks say stop.
#pragma once

#include <cstdint>
#include <functional>

#include "datasets/sampler.h"
#include "runtime/drivers/driver.h"
#include "runtime/transport/transport.h"

namespace adasync {

// What a worker thread needs from the side of the parameter server.
struct WorkerLink {
  WorkerChannel* net = nullptr;
  ParamServer* slots = nullptr;  // gradient slots to compute into
  // The parameters to compute on next (worker w); null when the run stops.
  std::function<SnapshotPtr(int)> pull;
  // Worker w starts a computation of `x` clock seconds; `position` is its
  // sampler's position after the draw (checkpoints read it).
  std::function<void(int w, double x, uint64_t position)> drew;
  std::function<void(int w)> cancelled;  // a computation was abandoned on a cancel
  std::function<double()> clock;
  Variant variant = Variant::Sync;
  Straggler* straggler = nullptr;
  const FaultPlan* faults = nullptr;
};

void worker_loop(int w, GradientWorker& gw, Sampler& sampler, const WorkerLink& link);

// Returns the clock time at the stop; the caller then stops the workers.
double serve_updates(UpdateLoop& loop, DriverHooks& hooks, PsChannel& net, const std::function<double()>& clock);

}  // namespace adasync
