#include "runtime/clock.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <limits>
#include <queue>
#include <thread>

namespace adasync {

// ================================================================== virtual
double run_virtual(EngineSetup& s) {
  ParamServer& ps = *s.ps;
  Aggregator& agg = *s.agg;
  EngineListener& L = *s.listener;
  const int P = agg.workers();
  EXPECTS(s.workers.size() == 1 || int(s.workers.size()) == P, s.workers.size() << " gradient workers for " << P);

  struct Job {
    VirtualJob v;
    SnapshotPtr params;
    std::vector<int32_t> idx;
  };
  struct Event {
    double t;
    uint64_t seq;
    int w;
    uint64_t gen;
    bool operator>(const Event& o) const { return t != o.t ? t > o.t : seq > o.seq; }
  };
  std::vector<Job> jobs(static_cast<size_t>(P));
  std::priority_queue<Event, std::vector<Event>, std::greater<Event>> q;
  uint64_t seq = 0;
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
    j.v.batch = (*s.samplers)[size_t(w)].next(&j.idx);
    j.v.active = true;
    ++j.v.gen;
    ++j.v.computations;
    double x = s.base_time + s.straggler->draw(w);
    L.on_draw(w, x);
    if (s.faults != nullptr)
      if (const Fault* f = s.faults->at(w, j.v.computations); f && f->kind == Fault::Kind::Hang) x += f->seconds;
    j.v.finish = now + after + x;
    j.v.seq = seq;
    q.push(Event{j.v.finish, seq++, w, j.v.gen});
  };
  if (s.resume != nullptr) {
    // Continue exactly where the checkpoint stopped: same jobs, same queue.
    EXPECTS(int(s.resume->jobs.size()) == P, "resume state for " << s.resume->jobs.size() << " workers, not " << P);
    now = s.resume->now;
    seq = s.resume->seq;
    ps_free = s.resume->ps_free;
    for (int w = 0; w < P; ++w) {
      Job& j = jobs[size_t(w)];
      j.v = s.resume->jobs[size_t(w)];
      if (!j.v.active) continue;
      j.params = s.snapshot_of(j.v.tau);
      (*s.samplers)[size_t(w)].at(j.v.batch, &j.idx);
      q.push(Event{j.v.finish, j.v.seq, w, j.v.gen});
    }
  } else {
    for (int w = 0; w < P; ++w) start(w, true);
  }

  while (!q.empty()) {
    const Event ev = q.top();
    q.pop();
    Job& j = jobs[size_t(ev.w)];
    if (!j.v.active || ev.gen != j.v.gen) continue;  // cancelled
    if (ev.t < ps_free) {
      // The PS is applying an update: this push waits its turn, in order.
      j.v.finish = ps_free;
      j.v.seq = seq;
      q.push(Event{ps_free, seq++, ev.w, ev.gen});
      continue;
    }
    if (!L.on_time(ev.t)) break;
    now = ev.t;
    j.v.active = false;

    Push p;
    p.worker = ev.w;
    p.tau = j.params->version;
    p.batch = j.v.batch;
    p.time = now;
    p.params = j.params;
    const Fault* fault = s.faults != nullptr ? s.faults->at(ev.w, j.v.computations) : nullptr;
    if (agg.accepts(p.tau)) {
      const size_t gi = s.workers.size() == 1 ? 0 : size_t(ev.w);
      GradientWorker& gw = *s.workers[gi];
      try {
        if (fault && fault->kind == Fault::Kind::Throw)
          throw InjectedFailure("injected failure at computation " + std::to_string(fault->at));
        if (pulled[gi] != j.params.get()) {
          gw.pull(j.params);
          pulled[gi] = j.params.get();
        }
        p.slot = ps.acquire_slot();
        GradResult res;
        gw.compute(j.idx, p.slot.data, 0, nullptr, 0, &res);
        p.loss = res.loss;
        p.finite = res.finite;
      } catch (const std::exception& e) {
        ps.release_slot(p.slot);
        L.on_worker_failed(ev.w, e.what(), now);
        if (agg.worker_failed(ev.w)) {
          const UpdateRates rates = L.rates(agg, now);
          auto u = agg.update(rates);
          L.on_update(agg, u, now);
          for (int w : u.wake) start(w, true);
        }
        if (agg.alive() == 0 || !L.keep_going(agg, now)) break;
        continue;
      }
      if (fault && fault->kind == Fault::Kind::Nan) {
        p.slot.data[0] = std::numeric_limits<float>::quiet_NaN();
        p.finite = false;
      }
    }
    const int pusher = ev.w;
    const auto r = agg.push(p);
    L.on_push(p, r, now);

    if (r.update_due) {
      const UpdateRates rates = L.rates(agg, now);
      auto u = agg.update(rates);
      if (u.cancel_all) {
        int c = 0;
        for (auto& jj : jobs)
          if (jj.v.active) {
            jj.v.active = false;
            ++c;
          }
        if (c > 0) L.on_cancelled(c);
      }
      L.on_update(agg, u, now);
      // Those the update wakes pull its result once it is published.
      if (s.ps_time > 0) ps_free = now + s.ps_time;
      const double after = s.ps_time;
      bool pusher_started = false;
      for (int w : u.wake) {
        start(w, true, after);
        pusher_started |= w == pusher;
      }
      if (!pusher_started && r.next != Next::Wait) start(pusher, r.next == Next::Pull, r.next == Next::Pull ? after : 0);
      // A quiet point: nothing counted and not applied, every job in the queue.
      VirtualState st;
      st.now = now;
      st.seq = seq;
      st.ps_free = ps_free;
      std::vector<SnapshotPtr> in_flight;
      for (auto& jj : jobs) {
        st.jobs.push_back(jj.v);
        if (jj.v.active) in_flight.push_back(jj.params);
      }
      L.at_quiet_point(st, in_flight, now);
      if (!L.keep_going(agg, now)) break;
    } else if (r.next != Next::Wait) {
      start(pusher, r.next == Next::Pull);
    }
  }
  return now;
}

// ================================================================== real
namespace {

// What the PS tells a waiting worker; Pull dominates Continue.
struct Mailbox {
  std::mutex mu;
  std::condition_variable cv;
  Next pending = Next::Wait;  // Wait = nothing pending
  bool stop = false;
  CancelSource cancel;

  void post(Next n) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (n == Next::Pull || pending == Next::Wait) pending = n;
    }
    cv.notify_all();
  }
  void post_stop() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv.notify_all();
    cancel.cancel();
  }
  // Waits for an instruction; returns Wait when told to stop.
  Next take() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return stop || pending != Next::Wait; });
    if (stop) return Next::Wait;
    return std::exchange(pending, Next::Wait);
  }
  // Non-blocking: a pending instruction, or `dflt`.
  Next poll(Next dflt) {
    std::lock_guard<std::mutex> lk(mu);
    if (pending == Next::Wait) return dflt;
    return std::exchange(pending, Next::Wait);
  }
  bool stopped() {
    std::lock_guard<std::mutex> lk(mu);
    return stop;
  }
};

// A gradient for the PS, or word that its worker failed.
struct Message {
  Push push;
  bool failed = false;
  std::string what;
};

class MessageQueue {
 public:
  void put(Message m) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(m));
    }
    cv_.notify_one();
  }
  bool take(Message* out, double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !q_.empty(); })) return false;
    *out = std::move(q_.front());
    q_.pop_front();
    return true;
  }
  std::deque<Message> drain() {
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(q_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Message> q_;
};

}  // namespace

double run_real(EngineSetup& s) {
  ParamServer& ps = *s.ps;
  Aggregator& agg = *s.agg;
  EngineListener& L = *s.listener;
  const int P = agg.workers();
  EXPECTS(int(s.workers.size()) == P, s.workers.size() << " gradient workers for " << P << " real-time workers");
  const Variant variant = agg.variant();

  std::vector<std::unique_ptr<Mailbox>> box;
  for (int w = 0; w < P; ++w) box.push_back(std::make_unique<Mailbox>());
  MessageQueue queue;
  WallTimer wall;
  const double offset = s.time_offset;
  auto clock = [&] { return offset + wall.seconds(); };

  auto worker_main = [&](int w) {
    name_this_thread("w" + std::to_string(w));
    Mailbox& mb = *box[size_t(w)];
    GradientWorker& gw = *s.workers[size_t(w)];
    Sampler& sampler = (*s.samplers)[size_t(w)];
    std::vector<int32_t> idx;
    SnapshotPtr params;
    int64_t computations = 0;
    double last_compute = 0;  // the real part of the last computation (without the delay)
    Next next = mb.take();  // the first Pull
    while (next != Next::Wait) {
      Slot slot;
      try {
        if (next == Next::Pull || !params) {
          params = ps.latest();
          gw.pull(params);
        }
        const uint64_t gen = mb.cancel.generation();
        const uint64_t batch = sampler.next(&idx);
        if (s.positions != nullptr) (*s.positions)[size_t(w)].store(sampler.position(), std::memory_order_relaxed);
        double delay = s.straggler->draw(w);
        L.on_draw(w, delay + last_compute);
        const Fault* fault = s.faults != nullptr ? s.faults->at(w, ++computations) : nullptr;
        if (fault && fault->kind == Fault::Kind::Hang) delay += fault->seconds;
        if (fault && fault->kind == Fault::Kind::Throw)
          throw InjectedFailure("injected failure at computation " + std::to_string(fault->at));
        slot = ps.acquire_slot();
        GradResult res;
        const WallTimer compute_timer;
        const bool ok = gw.compute(idx, slot.data, delay, &mb.cancel, gen, &res);
        if (ok) last_compute = std::max(0.0, compute_timer.seconds() - delay);
        if (!ok || mb.stopped()) {
          ps.release_slot(slot);
          if (!mb.stopped()) L.on_cancelled(1);
          next = mb.take();
          continue;
        }
        if (fault && fault->kind == Fault::Kind::Nan) {
          slot.data[0] = std::numeric_limits<float>::quiet_NaN();
          res.finite = false;
        }
        Message m;
        m.push.worker = w;
        m.push.tau = params->version;
        m.push.batch = batch;
        m.push.loss = res.loss;
        m.push.finite = res.finite;
        m.push.slot = slot;
        m.push.params = params;
        m.push.time = clock();
        queue.put(std::move(m));
      } catch (const std::exception& e) {
        // The worker is finished; the PS learns of it and carries on without it.
        ps.release_slot(slot);
        Message m;
        m.push.worker = w;
        m.failed = true;
        m.what = e.what();
        queue.put(std::move(m));
        return;
      }
      // k-batch variants go on at once; the others wait for the PS.
      if (variant == Variant::KBatchAsync) next = mb.poll(Next::Pull);
      else if (variant == Variant::KBatchSync) next = mb.poll(Next::Continue);
      else next = mb.take();
    }
  };

  std::vector<std::thread> threads;
  for (int w = 0; w < P; ++w) threads.emplace_back(worker_main, w);
  for (auto& m : box) m->post(Next::Pull);

  name_this_thread("ps");
  double now = 0;
  auto apply_update = [&] {
    const UpdateRates rates = L.rates(agg, now);
    auto u = agg.update(rates);
    if (u.cancel_all)
      for (auto& m : box) m->cancel.cancel();
    L.on_update(agg, u, now);
    for (int w : u.wake) box[size_t(w)]->post(Next::Pull);
  };
  for (;;) {
    now = clock();
    if (!L.on_time(now)) break;
    Message m;
    if (!queue.take(&m, 0.05)) continue;
    now = clock();
    if (m.failed) {
      L.on_worker_failed(m.push.worker, m.what, now);
      if (agg.worker_failed(m.push.worker)) apply_update();
      if (agg.alive() == 0 || !L.keep_going(agg, now)) break;
      continue;
    }
    const int pusher = m.push.worker;
    const auto r = agg.push(m.push);
    L.on_push(m.push, r, now);
    if (r.update_due) {
      apply_update();
      if (!L.keep_going(agg, now)) break;
    } else if (!r.counted && r.next != Next::Wait && variant != Variant::KBatchAsync &&
               variant != Variant::KBatchSync) {
      box[size_t(pusher)]->post(r.next);  // a dropped gradient's worker was waiting
    }
  }
  for (auto& m : box) m->post_stop();
  for (auto& t : threads) t.join();
  for (auto& m : queue.drain())
    if (!m.failed) ps.release_slot(m.push.slot);
  return now;
}

}  // namespace adasync
