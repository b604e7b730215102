#include "runtime/drivers/worker_step.h"

#include <limits>
#include <string>

namespace adasync {

StepPlan prepare_step(int w, int64_t n, Sampler& sampler, Straggler& straggler, const FaultPlan* faults,
                      std::vector<int32_t>* idx) {
  StepPlan p;
  p.batch = sampler.next(idx);
  p.epoch = sampler.epoch_of(p.batch);
  p.drawn = straggler.draw(w);
  p.fault = faults != nullptr ? faults->at(w, n) : nullptr;
  if (p.fault && p.fault->kind == Fault::Kind::Hang) p.hang = p.fault->seconds;
  return p;
}

namespace {
void throw_injected(const StepPlan& plan) {
  if (plan.fault && plan.fault->kind == Fault::Kind::Throw)
    throw InjectedFailure("injected failure at computation " + std::to_string(plan.fault->at));
}
}  // namespace

bool compute_gradient(GradientWorker& gw, const std::vector<int32_t>& idx, const StepPlan& plan, float* out,
                      double delay, const CancelSource* cancel, uint64_t gen, GradResult* res) {
  throw_injected(plan);
  gw.set_epoch(plan.epoch);
  if (!gw.compute(idx, out, delay, cancel, gen, res)) return false;
  if (plan.fault && plan.fault->kind == Fault::Kind::Nan) {
    out[0] = std::numeric_limits<float>::quiet_NaN();
    res->finite = false;
  }
  return true;
}

bool compute_step(GradientWorker& gw, ParamServer& ps, int w, const SnapshotPtr& params,
                  const std::vector<int32_t>& idx, const StepPlan& plan, double delay, const CancelSource* cancel,
                  uint64_t gen, Push* out) {
  throw_injected(plan);  // before a slot is taken
  SlotLease slot = ps.acquire_slot();
  if (!slot) return false;
  GradResult res;
  if (!compute_gradient(gw, idx, plan, slot.data(), delay, cancel, gen, &res)) return false;
  out->worker = w;
  out->tau = params->version;
  out->batch = plan.batch;
  out->loss = res.loss;
  out->finite = res.finite;
  out->slot = std::move(slot);
  out->params = params;
  return true;
}

}  // namespace adasync
