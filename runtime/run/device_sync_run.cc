// Device sync: sync SGD on the GPUs (NCCL all-reduce and the update on every
// replica), no parameter server in the loop. The PS holds a copy that is
// refreshed for each evaluation, each checkpoint and at the end; the run's
// counters (Run::counts) read as if each step were a sync update of P
// gradients, so checkpoints and the summary read like a PS run's.
#include "runtime/algorithms/device_sync.h"
#include "runtime/run/run.h"
#include "runtime/run/state.h"

namespace adasync {

double run_device_sync_mode(Run& r) {
  const int P = r.workers();
  std::vector<ModelWorker*> ws;
  for (auto& w : r.replicas) ws.push_back(w.get());
  DeviceSync sync(ws, r.cfg.opt, r.ps->latest()->data);
  auto host_velocity = [&]() -> std::vector<float>* {
    auto st = r.ps->optimizer().state();
    return st.empty() ? nullptr : st[0].second;
  };
  if (r.cfg.resume && host_velocity() != nullptr) sync.velocity_from_host(*host_velocity());
  std::vector<std::vector<int32_t>> batches(static_cast<size_t>(P));
  std::vector<double> delays(static_cast<size_t>(P));
  std::vector<float> host(r.ps->size());
  int64_t version = r.ps->version();
  // Brings the PS (parameters, momentum) up to the device's state.
  auto publish = [&] {
    sync.params_to_host(host.data());
    r.ps->reset(host.data(), version);
    if (std::vector<float>* v = host_velocity()) *v = sync.velocity_to_host();
    r.ps->optimizer().set_steps(version);
  };
  const AggregatorStats base = r.agg->stats();  // (a resumed run's)
  auto counts = [&base, &version, P] {
    AggregatorStats st = base;
    st.updates = version;
    st.counted = st.pushes = version * P;
    for (int w = 0; w < P; ++w) st.counted_by_worker[size_t(w)] = st.pushes_by_worker[size_t(w)] = version;
    return st;
  };
  r.counts = counts;
  SupervisorActions act;
  act.evaluate = [&](double now) {
    r.reporter->add_losses(sync.drain());
    publish();
    return r.evaluate(r.ps->latest(), now, false);
  };
  act.capture = [&](double now, const VirtualState*, const SnapshotPtr& p) { return capture_state(r, now, nullptr, p); };
  act.save = [&](Checkpoint c, const SnapshotPtr& p, const std::vector<SnapshotPtr>& f, double now) {
    return save_state(r, std::move(c), p, f, now);
  };
  act.params = [&] {
    publish();
    return r.ps->latest();
  };
  r.supervisor->set_actions(act);
  double now = 0;
  for (;;) {
    now = r.wall.seconds();
    if (r.supervisor->should_stop(version, version * P, now)) break;
    for (int w = 0; w < P; ++w) {
      Sampler& smp = r.samplers[size_t(w)];
      const uint64_t b = smp.next(&batches[size_t(w)]);
      r.replicas[size_t(w)]->set_epoch(smp.epoch_of(b));
      delays[size_t(w)] = r.straggler->draw(w);
    }
    const LrConfig& lc = r.policy->lr_rule().config();  // the same schedule as the PS applies
    const double epoch = lc.grads_per_epoch > 0 ? double(version * P) / lc.grads_per_epoch : 0;
    sync.step(batches, delays, float(r.cfg.lr * lr_multiplier(lc, epoch)));
    ++version;
    r.reporter->add_losses(sync.completed());
    // Steady state from the third step: after the two eager warm-up steps and the graph capture.
    r.reporter->count_steps(version, version * P, P, r.wall.seconds(), version == 3);
    r.supervisor->after_step(version, now);
  }
  r.reporter->add_losses(sync.drain());
  now = r.wall.seconds();
  publish();
  r.supervisor->final_checkpoint(now, false);  // while `sync` is here
  r.supervisor->set_actions(r.default_actions);
  r.counts = [a = counts()] { return a; };  // this mode's locals end here
  r.checkpointed_at_end = true;
  return now;
}

}  // namespace adasync
