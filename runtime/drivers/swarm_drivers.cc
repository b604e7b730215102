#include "runtime/drivers/swarm_drivers.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <utility>

#include "runtime/drivers/event_queue.h"
#include "runtime/drivers/worker_step.h"

namespace adasync {

namespace {
// A node's buffer presented as a snapshot for GradientWorker::pull (the
// buffer outlives the computation; the shared_ptr owns only the header).
SnapshotPtr view(const float* data, size_t n) { return std::make_shared<Snapshot>(Snapshot{0, data, n}); }
}  // namespace

double run_swarm_virtual(SwarmEngine& e, const SwarmSetup& s, SwarmListener& l) {
  const int P = e.graph().nodes();
  const size_t n = e.size();
  SwarmEngine::VirtualClock& vc = e.virtual_clock();
  vc.on = true;
  EventQueue<int> q;
  GradientWorker& gw = *s.workers[0];
  std::vector<int32_t> idx;  // the batch of the step being started
  for (int i = 0; i < P; ++i) e.set_position(i, (*s.samplers)[size_t(i)].position());
  // The gradient of a step is taken at the model the node has when it
  // starts. False: the node left and the listener says stop.
  auto start = [&](int i) {
    SwarmEngine::InFlight& f = e.in_flight(i);
    Sampler& sampler = (*s.samplers)[size_t(i)];
    const StepPlan plan = prepare_step(i, ++f.computations, sampler, *s.straggler, s.faults, &idx);
    e.set_position(i, sampler.position());
    GradResult r;
    try {
      gw.pull(view(e.model(i), n));
      compute_gradient(gw, idx, plan, e.gradient(i), 0, nullptr, 0, &r);
    } catch (const std::exception& ex) {
      return e.leave(i, ex.what(), vc.now, l);
    }
    f.loss = r.loss;
    f.finite = r.finite;
    f.due = vc.now + std::max(plan.drawn + plan.hang, 1e-9);
    f.seq = q.push(f.due, i);
    f.has_event = true;
    vc.seq = q.seq();
    return true;
  };
  // After node i's step: its interaction when due, then its next step.
  auto go_on = [&](int i) {
    e.after_step(i);
    return start(i);
  };
  if (vc.resumed) {
    q.set_seq(vc.seq);
    for (int i = 0; i < P; ++i) {
      const SwarmEngine::InFlight& f = e.in_flight(i);
      if (f.has_event) q.restore(f.due, f.seq, i);
    }
    if (vc.pending >= 0 && !go_on(std::exchange(vc.pending, -1))) return vc.now;
  } else {
    for (int i = 0; i < P; ++i)
      if (!start(i)) return vc.now;
  }
  while (!q.empty()) {
    const auto ev = q.pop();
    if (!l.on_time(ev.t)) {
      q.restore(ev.t, ev.seq, ev.what);  // not taken: the state stays whole
      break;
    }
    vc.now = ev.t;
    SwarmEngine::InFlight& f = e.in_flight(ev.what);
    f.has_event = false;
    e.apply(ev.what, f.finite);
    vc.pending = ev.what;
    if (!l.after_step(ev.what, f.loss, f.finite, vc.now)) break;
    vc.pending = -1;
    if (!go_on(ev.what)) break;
  }
  return vc.now;
}

SwarmThreads::SwarmThreads(SwarmEngine& e, SwarmSetup s) : e_(e), s_(std::move(s)) {
  const int L = e_.last() - e_.first();
  EXPECTS(int(s_.workers.size()) == L, s_.workers.size() << " workers for " << L << " real-time swarm nodes");
  for (int i = 0; i < L; ++i) work_.emplace_back(MemKind::Pinned, e_.size());
}

SwarmThreads::~SwarmThreads() { stop(); }

void SwarmThreads::node_loop(int i) {
  const int k = i - e_.first();
  GradientWorker& gw = *s_.workers[size_t(k)];
  Sampler& sampler = (*s_.samplers)[size_t(k)];
  float* work = work_[size_t(k)].data();
  std::vector<int32_t> idx;
  int64_t computations = 0;
  while (!stop_ && !e_.gone(i)) {
    e_.copy_model(i, work);
    const StepPlan plan = prepare_step(i, ++computations, sampler, *s_.straggler, s_.faults, &idx);
    e_.set_position(i, sampler.position());
    GradResult r;
    try {
      gw.pull(view(work, e_.size()));
      if (!compute_gradient(gw, idx, plan, e_.gradient(i), plan.drawn + plan.hang, &cancel_, gen_, &r)) break;
    } catch (const std::exception& ex) {  // the node's worker is finished; the others go on without it
      if (!e_.leave(i, ex.what(), clock_.seconds(), *listener_)) stop_ = true;
      break;
    }
    e_.apply(i, r.finite);
    if (!listener_->after_step(i, r.loss, r.finite, clock_.seconds())) stop_ = true;
    e_.after_step(i);
  }
}

void SwarmThreads::start(SwarmListener& l) {
  listener_ = &l;
  stop_ = false;
  alive_ = e_.last() - e_.first();
  gen_ = cancel_.generation();
  clock_ = WallTimer();
  // A checkpoint before a node's first step records where its sampler is.
  for (int i = e_.first(); i < e_.last(); ++i) e_.set_position(i, (*s_.samplers)[size_t(i - e_.first())].position());
  auto node_main = [this](int i) {
    name_this_thread("swarm" + std::to_string(i));
    try {
      node_loop(i);
    } catch (...) {  // a failed exchange: every node stops
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
      failed_ = true;
      stop_ = true;
    }
    --alive_;
  };
  for (int i = e_.first(); i < e_.last(); ++i) {
    if (e_.gone(i)) {  // left before a resume
      --alive_;
      continue;
    }
    threads_.emplace_back(node_main, i);
  }
}

void SwarmThreads::rethrow_error() {
  if (!failed_) return;
  std::lock_guard<std::mutex> lk(error_mu_);
  std::rethrow_exception(error_);
}

void SwarmThreads::stop() {
  stop_ = true;
  cancel_.cancel();  // an injected delay under way ends now
  for (auto& t : threads_) t.join();
  threads_.clear();
}

double SwarmThreads::run(SwarmListener& l) {
  start(l);
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (!l.on_time(clock_.seconds())) stop_ = true;
  }
  stop();
  rethrow_error();
  return clock_.seconds();
}

}  // namespace adasync
