#include "runtime/clock.h"

#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
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
    bool active = false;
    SnapshotPtr params;
    uint64_t batch = 0;
    std::vector<int32_t> idx;
    uint64_t gen = 0;
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
  std::vector<const Snapshot*> pulled(s.workers.size(), nullptr);

  auto start = [&](int w, bool pull) {
    Job& j = jobs[size_t(w)];
    if (pull || !j.params) j.params = ps.latest();
    j.batch = (*s.samplers)[size_t(w)].next(&j.idx);
    j.active = true;
    ++j.gen;
    const double x = s.base_time + s.straggler->draw(w);
    q.push(Event{now + x, seq++, w, j.gen});
  };
  for (int w = 0; w < P; ++w) start(w, true);

  while (!q.empty()) {
    const Event ev = q.top();
    q.pop();
    Job& j = jobs[size_t(ev.w)];
    if (!j.active || ev.gen != j.gen) continue;  // cancelled
    if (!L.on_time(ev.t)) break;
    now = ev.t;
    j.active = false;

    Push p;
    p.worker = ev.w;
    p.tau = j.params->version;
    p.batch = j.batch;
    p.time = now;
    p.params = j.params;
    if (agg.accepts(p.tau)) {
      const size_t gi = s.workers.size() == 1 ? 0 : size_t(ev.w);
      GradientWorker& gw = *s.workers[gi];
      if (pulled[gi] != j.params.get()) {
        gw.pull(j.params);
        pulled[gi] = j.params.get();
      }
      p.slot = ps.acquire_slot();
      GradResult res;
      gw.compute(j.idx, p.slot.data, 0, nullptr, 0, &res);
      p.loss = res.loss;
      p.finite = res.finite;
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
          if (jj.active) {
            jj.active = false;
            ++c;
          }
        if (c > 0) L.on_cancelled(c);
      }
      L.on_update(agg, u, now);
      bool pusher_started = false;
      for (int w : u.wake) {
        start(w, true);
        pusher_started |= w == pusher;
      }
      if (!pusher_started && r.next != Next::Wait) start(pusher, r.next == Next::Pull);
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

class PushQueue {
 public:
  void put(Push p) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      q_.push_back(std::move(p));
    }
    cv_.notify_one();
  }
  bool take(Push* out, double timeout_s) {
    std::unique_lock<std::mutex> lk(mu_);
    if (!cv_.wait_for(lk, std::chrono::duration<double>(timeout_s), [&] { return !q_.empty(); })) return false;
    *out = std::move(q_.front());
    q_.pop_front();
    return true;
  }
  std::deque<Push> drain() {
    std::lock_guard<std::mutex> lk(mu_);
    return std::exchange(q_, {});
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Push> q_;
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
  PushQueue queue;
  WallTimer clock;

  auto worker_main = [&](int w) {
    name_this_thread("w" + std::to_string(w));
    Mailbox& mb = *box[size_t(w)];
    GradientWorker& gw = *s.workers[size_t(w)];
    Sampler& sampler = (*s.samplers)[size_t(w)];
    std::vector<int32_t> idx;
    SnapshotPtr params;
    Next next = mb.take();  // the first Pull
    while (next != Next::Wait) {
      if (next == Next::Pull || !params) {
        params = ps.latest();
        gw.pull(params);
      }
      const uint64_t gen = mb.cancel.generation();
      const uint64_t batch = sampler.next(&idx);
      const double delay = s.straggler->draw(w);
      Slot slot = ps.acquire_slot();
      GradResult res;
      const bool ok = gw.compute(idx, slot.data, delay, &mb.cancel, gen, &res);
      if (!ok || mb.stopped()) {
        ps.release_slot(slot);
        if (!mb.stopped()) L.on_cancelled(1);
        next = mb.take();
        continue;
      }
      Push p;
      p.worker = w;
      p.tau = params->version;
      p.batch = batch;
      p.loss = res.loss;
      p.finite = res.finite;
      p.slot = slot;
      p.params = params;
      p.time = clock.seconds();
      queue.put(std::move(p));
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
  for (;;) {
    now = clock.seconds();
    if (!L.on_time(now)) break;
    Push p;
    if (!queue.take(&p, 0.05)) continue;
    now = clock.seconds();
    const int pusher = p.worker;
    const auto r = agg.push(p);
    L.on_push(p, r, now);
    if (r.update_due) {
      const UpdateRates rates = L.rates(agg, now);
      auto u = agg.update(rates);
      if (u.cancel_all)
        for (auto& m : box) m->cancel.cancel();
      L.on_update(agg, u, now);
      for (int w : u.wake) box[size_t(w)]->post(Next::Pull);
      if (!L.keep_going(agg, now)) break;
    } else if (!r.counted && r.next != Next::Wait && variant != Variant::KBatchAsync &&
               variant != Variant::KBatchSync) {
      box[size_t(pusher)]->post(r.next);  // a dropped gradient's worker was waiting
    }
  }
  for (auto& m : box) m->post_stop();
  for (auto& t : threads) t.join();
  for (auto& p : queue.drain()) ps.release_slot(p.slot);
  return now;
}

}  // namespace adasync
