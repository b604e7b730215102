// One worker step, shared by both drivers: prepare (the batch, the compute
// time, the fault plan's word for this computation) and compute (the
// gradient into a slot leased from the parameter server, tagged for the
// update loop). The drivers decide only when each half happens.
#pragma once

#include <cstdint>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/drivers/worker.h"
#include "runtime/engine/aggregator.h"
#include "runtime/faults.h"
#include "runtime/straggler.h"

namespace adasync {

struct StepPlan {
  uint64_t batch = 0;
  uint64_t epoch = 0;  // of the batch in its worker's sampler
  double drawn = 0;  // the compute time drawn from the straggler model
  double hang = 0;   // extra time an injected hang adds
  const Fault* fault = nullptr;
};

// Worker w's n-th computation (1-based): its batch indices into *idx.
StepPlan prepare_step(int w, int64_t n, Sampler& sampler, Straggler& straggler, const FaultPlan* faults,
                      std::vector<int32_t>* idx);

// Computes the gradient of `idx` at the pulled parameters into `out`: the
// part every algorithm shares. Throws the injected failure of a `throw` fault;
// a `nan` fault poisons the gradient (res->finite false). False when cancelled.
bool compute_gradient(GradientWorker& gw, const std::vector<int32_t>& idx, const StepPlan& plan, float* out,
                      double delay, const CancelSource* cancel, uint64_t gen, GradResult* res);

// Computes the gradient of `idx` at the pulled parameters into a fresh slot
// and tags `out` (worker, tau, batch, loss, finiteness). Throws the injected
// failure of a `throw` fault; a `nan` fault poisons the gradient. False when
// cancelled or when no slot could be had (the run is stopping).
bool compute_step(GradientWorker& gw, ParamServer& ps, int w, const SnapshotPtr& params,
                  const std::vector<int32_t>& idx, const StepPlan& plan, double delay, const CancelSource* cancel,
                  uint64_t gen, Push* out);

}  // namespace adasync
