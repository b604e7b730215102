#include "runtime/engine/update_loop.h"

namespace adasync {

Decision UpdateLoop::apply(double now) {
  Decision d;
  const UpdateRates rates = policy_.rates(agg_, *ps_.latest());
  policy_.before_update(agg_);
  const Aggregator::UpdateResult u = agg_.update(rates);
  const std::optional<KChange> ch = policy_.after_update(agg_, u.snapshot, now);
  const std::optional<KChange> kept = policy_.take_held_decision();
  const UpdateEvent ev{u, agg_.stats(), rates.lr, agg_.k(), ch, now, policy_.b_noise(), kept ? &kept : nullptr};
  for (UpdateObserver* o : observers_) o->on_update(ev);
  d.updated = true;
  d.cancel_all = u.cancel_all;
  d.wake = u.wake;
  return d;
}

Decision UpdateLoop::submit(Push p, double now) {
  PushEvent ev{p.worker, p.tau, p.loss, p.finite, now, {}};
  ev.result = agg_.push(std::move(p));
  if (ev.result.counted) policy_.on_counted(ev.tau, ev.loss);
  for (UpdateObserver* o : observers_) o->on_push(ev);
  if (!ev.result.update_due) {
    Decision d;
    d.pusher = ev.result.next;
    return d;
  }
  Decision d = apply(now);
  d.pusher = ev.result.next;
  return d;
}

Decision UpdateLoop::worker_failed(int w, const std::string& what, double now) {
  const int left = agg_.alive() - (agg_.is_alive(w) ? 1 : 0);
  for (UpdateObserver* o : observers_) o->on_worker_failed(w, what, left, now);
  if (agg_.worker_failed(w)) return apply(now);
  return Decision{};
}

}  // namespace adasync
