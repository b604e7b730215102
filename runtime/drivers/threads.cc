// The threads driver: one host thread per worker, the update loop on this
// thread, wall time. Workers and the loop talk only through the transport.
#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include "runtime/drivers/driver.h"
#include "runtime/drivers/worker_loop.h"
#include "runtime/drivers/worker_step.h"
#include "runtime/transport/transport.h"

namespace adasync {

void worker_loop(int w, GradientWorker& gw, Sampler& sampler, const WorkerLink& link) {
  WorkerChannel& net = *link.net;
  const CancelSource& cancel = net.cancel_source(w);
  std::vector<int32_t> idx;
  SnapshotPtr params;
  int64_t computations = 0;
  double last_compute = 0;  // the real part of the last computation (without the delay)
  Next next = net.await(w);  // the first Pull
  while (next != Next::Wait) {
    Message m;
    try {
      if (next == Next::Pull || !params) {
        params = link.pull(w);
        if (!params) return;  // stopping
        gw.pull(params);
      }
      const uint64_t gen = cancel.generation();
      const StepPlan plan = prepare_step(w, ++computations, sampler, *link.straggler, link.faults, &idx);
      link.drew(w, plan.drawn + last_compute, sampler.position());
      const double delay = plan.drawn + plan.hang;
      const WallTimer compute_timer;
      const bool ok = compute_step(gw, *link.slots, w, params, idx, plan, delay, &cancel, gen, &m.push);
      if (ok) last_compute = std::max(0.0, compute_timer.seconds() - delay);
      if (!ok || net.stopped(w)) {
        if (!net.stopped(w)) link.cancelled(w);
        m = Message();  // the slot goes back now
        next = net.await(w);
        continue;
      }
      m.push.time = link.clock();
      net.send(std::move(m));
    } catch (const std::exception& e) {
      // The worker is finished; the PS learns of it and carries on without it.
      Message f;
      f.push.worker = w;
      f.failed = true;
      f.what = e.what();
      try {
        net.send(std::move(f));
      } catch (const std::exception& e2) {  // the transport itself is gone (MPI)
        std::fprintf(stderr, "trainer: worker %d failed (%s) and could not tell the PS: %s\n", w, e.what(), e2.what());
      }
      return;
    }
    // k-batch variants go on at once; the others wait for the PS.
    if (link.variant == Variant::KBatchAsync) next = net.poll(w, Next::Pull);
    else if (link.variant == Variant::KBatchSync) next = net.poll(w, Next::Continue);
    else next = net.await(w);
  }
}

double serve_updates(UpdateLoop& loop, DriverHooks& hooks, PsChannel& net, const std::function<double()>& clock) {
  const Aggregator& agg = loop.aggregator();
  const int P = agg.workers();
  const bool k_batch = agg.variant() == Variant::KBatchAsync || agg.variant() == Variant::KBatchSync;
  double now = 0;
  auto act = [&](const Decision& d) {
    if (d.cancel_all)
      for (int w = 0; w < P; ++w) net.cancel(w);
    for (int w : d.wake) net.post(w, Next::Pull);
  };
  for (;;) {
    now = clock();
    if (!hooks.on_time(now)) break;
    Message m;
    if (!net.receive(&m, 0.05)) continue;
    now = clock();
    if (m.failed) {
      act(loop.worker_failed(m.push.worker, m.what, now));
      if (agg.alive() == 0 || !hooks.keep_going(now)) break;
      continue;
    }
    const int pusher = m.push.worker;
    const Decision d = loop.submit(std::move(m.push), now);
    if (d.updated) {
      act(d);
      if (!hooks.keep_going(now)) break;
    } else if (d.pusher != Next::Wait && !k_batch) {
      net.post(pusher, d.pusher);  // a dropped gradient's worker was waiting
    }
  }
  return now;
}

double run_threads(DriverSetup& s) {
  UpdateLoop& loop = *s.loop;
  ParamServer& ps = loop.ps();
  const int P = loop.aggregator().workers();
  EXPECTS(int(s.workers.size()) == P, s.workers.size() << " gradient workers for " << P << " real-time workers");

  InProcessTransport net(P);
  WallTimer wall;
  const double offset = s.time_offset;
  WorkerLink link;
  link.net = &net;
  link.slots = &ps;
  link.pull = [&ps](int) { return ps.latest(); };
  link.drew = [&](int w, double x, uint64_t position) {
    if (s.positions != nullptr) (*s.positions)[size_t(w)].store(position, std::memory_order_relaxed);
    loop.drew(x);
  };
  link.cancelled = [&loop](int) { loop.cancelled(1); };
  link.clock = [&] { return offset + wall.seconds(); };
  link.variant = loop.aggregator().variant();
  link.straggler = s.straggler;
  link.faults = s.faults;

  std::vector<std::thread> threads;
  for (int w = 0; w < P; ++w)
    threads.emplace_back([&, w] {
      name_this_thread("w" + std::to_string(w));
      worker_loop(w, *s.workers[size_t(w)], (*s.samplers)[size_t(w)], link);
    });
  for (int w = 0; w < P; ++w) net.post(w, Next::Pull);

  name_this_thread("ps");
  const double now = serve_updates(loop, *s.hooks, net, link.clock);
  // Stop: no worker may wait for a slot that queued messages hold.
  net.stop_all();
  ps.close_slots();
  for (auto& t : threads) t.join();
  net.drain();
  ps.open_slots();
  return now;
}

}  // namespace adasync
