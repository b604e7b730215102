// The virtual driver: a discrete-event simulation on one thread.
#include <string>

#include "runtime/drivers/driver.h"
#include "runtime/drivers/event_queue.h"
#include "runtime/drivers/worker_step.h"

namespace adasync {

double run_virtual(DriverSetup& s) {
  UpdateLoop& loop = *s.loop;
  ParamServer& ps = loop.ps();
  const Aggregator& agg = loop.aggregator();
  DriverHooks& hooks = *s.hooks;
  const int P = agg.workers();
  EXPECTS(s.workers.size() == 1 || int(s.workers.size()) == P, s.workers.size() << " gradient workers for " << P);

  struct Job {
    VirtualJob v;
    SnapshotPtr params;
    std::vector<int32_t> idx;
    StepPlan plan;
  };
  struct Due {
    int w;
    uint64_t gen;
  };
  std::vector<Job> jobs(static_cast<size_t>(P));
  EventQueue<Due> q;
  double now = 0;
  double ps_free = 0;  // the PS is busy with an update until then (ps_time > 0)
  std::vector<const Snapshot*> pulled(s.workers.size(), nullptr);

  // `after`: the start waits that long (for the update in service to finish).
  auto start = [&](int w, bool pull, double after = 0) {
    Job& j = jobs[size_t(w)];
    if (!agg.is_alive(w)) {
      j.v.active = false;
      return;
    }
    if (pull || !j.params) j.params = ps.latest();
    j.v.tau = j.params->version;
    j.v.active = true;
    ++j.v.gen;
    ++j.v.computations;
    j.plan = prepare_step(w, j.v.computations, (*s.samplers)[size_t(w)], *s.straggler, s.faults, &j.idx);
    j.v.batch = j.plan.batch;
    const double x = s.base_time + j.plan.drawn;
    loop.drew(x);
    j.v.finish = now + after + x + j.plan.hang;
    j.v.seq = q.push(j.v.finish, Due{w, j.v.gen});
  };
  if (s.resume != nullptr) {
    // Continue exactly where the checkpoint stopped: same jobs, same queue.
    EXPECTS(int(s.resume->jobs.size()) == P, "resume state for " << s.resume->jobs.size() << " workers, not " << P);
    now = s.resume->now;
    q.set_seq(s.resume->seq);
    ps_free = s.resume->ps_free;
    for (int w = 0; w < P; ++w) {
      Job& j = jobs[size_t(w)];
      j.v = s.resume->jobs[size_t(w)];
      if (!j.v.active) continue;
      j.params = s.snapshot_of(j.v.tau);
      (*s.samplers)[size_t(w)].at(j.v.batch, &j.idx);
      j.plan.batch = j.v.batch;
      j.plan.fault = s.faults != nullptr ? s.faults->at(w, j.v.computations) : nullptr;
      q.restore(j.v.finish, j.v.seq, Due{w, j.v.gen});
    }
  } else {
    for (int w = 0; w < P; ++w) start(w, true);
  }

  while (!q.empty()) {
    const auto ev = q.pop();
    const int pusher = ev.what.w;
    Job& j = jobs[size_t(pusher)];
    if (!j.v.active || ev.what.gen != j.v.gen) continue;  // cancelled
    if (ev.t < ps_free) {
      // The PS is applying an update: this push waits its turn, in order.
      j.v.finish = ps_free;
      j.v.seq = q.push(ps_free, ev.what);
      continue;
    }
    if (!hooks.on_time(ev.t)) break;
    now = ev.t;
    j.v.active = false;

    Push p;
    p.worker = pusher;
    p.tau = j.params->version;
    p.batch = j.v.batch;
    p.params = j.params;
    if (agg.accepts(p.tau)) {
      const size_t gi = s.workers.size() == 1 ? 0 : size_t(pusher);
      GradientWorker& gw = *s.workers[gi];
      try {
        if (pulled[gi] != j.params.get() && !(j.plan.fault && j.plan.fault->kind == Fault::Kind::Throw)) {
          gw.pull(j.params);
          pulled[gi] = j.params.get();
        }
        compute_step(gw, ps, pusher, j.params, j.idx, j.plan, 0, nullptr, 0, &p);
      } catch (const std::exception& e) {
        const Decision d = loop.worker_failed(pusher, e.what(), now);
        for (int w : d.wake) start(w, true);
        if (agg.alive() == 0 || !hooks.keep_going(now)) break;
        continue;
      }
    }
    p.time = now;
    const Decision d = loop.submit(std::move(p), now);
    if (d.updated) {
      if (d.cancel_all) {
        int c = 0;
        for (auto& jj : jobs)
          if (jj.v.active) {
            jj.v.active = false;
            ++c;
          }
        if (c > 0) loop.cancelled(c);
      }
      // Those the update wakes pull its result once it is published.
      if (s.ps_time > 0) ps_free = now + s.ps_time;
      const double after = s.ps_time;
      bool pusher_started = false;
      for (int w : d.wake) {
        start(w, true, after);
        pusher_started |= w == pusher;
      }
      if (!pusher_started && d.pusher != Next::Wait) start(pusher, d.pusher == Next::Pull, d.pusher == Next::Pull ? after : 0);
      // A quiet point: nothing counted and not applied, every job in the queue.
      VirtualState st;
      st.now = now;
      st.seq = q.seq();
      st.ps_free = ps_free;
      std::vector<SnapshotPtr> in_flight;
      for (auto& jj : jobs) {
        st.jobs.push_back(jj.v);
        if (jj.v.active) in_flight.push_back(jj.params);
      }
      hooks.at_quiet_point(st, in_flight, now);
      if (!hooks.keep_going(now)) break;
    } else if (d.pusher != Next::Wait) {
      start(pusher, d.pusher == Next::Pull);
    }
  }
  return now;
}

}  // namespace adasync
