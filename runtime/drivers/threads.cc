// The threads driver: one host thread per worker, the update loop on this
// thread, wall time. Workers and the loop talk only through the transport.
#include <algorithm>
#include <string>
#include <thread>

#include "runtime/drivers/driver.h"
#include "runtime/drivers/transport.h"
#include "runtime/drivers/worker_step.h"

namespace adasync {

double run_threads(DriverSetup& s) {
  UpdateLoop& loop = *s.loop;
  ParamServer& ps = loop.ps();
  const Aggregator& agg = loop.aggregator();
  DriverHooks& hooks = *s.hooks;
  const int P = agg.workers();
  EXPECTS(int(s.workers.size()) == P, s.workers.size() << " gradient workers for " << P << " real-time workers");
  const Variant variant = agg.variant();
  const bool k_batch = variant == Variant::KBatchAsync || variant == Variant::KBatchSync;

  InProcessTransport net(P);
  WallTimer wall;
  const double offset = s.time_offset;
  auto clock = [&] { return offset + wall.seconds(); };

  auto worker_main = [&](int w) {
    name_this_thread("w" + std::to_string(w));
    GradientWorker& gw = *s.workers[size_t(w)];
    Sampler& sampler = (*s.samplers)[size_t(w)];
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
          params = ps.latest();
          gw.pull(params);
        }
        const uint64_t gen = cancel.generation();
        const StepPlan plan = prepare_step(w, ++computations, sampler, *s.straggler, s.faults, &idx);
        if (s.positions != nullptr) (*s.positions)[size_t(w)].store(sampler.position(), std::memory_order_relaxed);
        loop.drew(plan.drawn + last_compute);
        const double delay = plan.drawn + plan.hang;
        const WallTimer compute_timer;
        const bool ok = compute_step(gw, ps, w, params, idx, plan, delay, &cancel, gen, &m.push);
        if (ok) last_compute = std::max(0.0, compute_timer.seconds() - delay);
        if (!ok || net.stopped(w)) {
          if (!net.stopped(w)) loop.cancelled(1);
          m = Message();  // the slot goes back now
          next = net.await(w);
          continue;
        }
        m.push.time = clock();
        net.send(std::move(m));
      } catch (const std::exception& e) {
        // The worker is finished; the PS learns of it and carries on without it.
        Message f;
        f.push.worker = w;
        f.failed = true;
        f.what = e.what();
        net.send(std::move(f));
        return;
      }
      // k-batch variants go on at once; the others wait for the PS.
      if (variant == Variant::KBatchAsync) next = net.poll(w, Next::Pull);
      else if (variant == Variant::KBatchSync) next = net.poll(w, Next::Continue);
      else next = net.await(w);
    }
  };

  std::vector<std::thread> threads;
  for (int w = 0; w < P; ++w) threads.emplace_back(worker_main, w);
  for (int w = 0; w < P; ++w) net.post(w, Next::Pull);

  name_this_thread("ps");
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
  // Stop: no worker may wait for a slot that queued messages hold.
  net.stop_all();
  ps.close_slots();
  for (auto& t : threads) t.join();
  net.drain();
  ps.open_slots();
  return now;
}

}  // namespace adasync
