// SwarmEngine's two drivers: the virtual clock's event loop (one thread,
// steps in time order) and the real clock's node threads. A node's step is
// the worker step every algorithm shares (prepare_step, compute_gradient):
// its batch, compute time and injected fault are drawn as a PS worker's are.
// A step whose gradient is not finite is not taken; a node whose computation
// throws leaves the graph.
#include <algorithm>
#include <mutex>
#include <thread>
#include <utility>

#include "runtime/algorithms/swarm.h"
#include "runtime/algorithms/swarm_node.h"
#include "runtime/drivers/event_queue.h"
#include "runtime/drivers/worker_step.h"
#include "runtime/engine/optimizer.h"

namespace adasync {

namespace {
// A node's buffer presented as a snapshot for GradientWorker::pull (the
// buffer outlives the computation; the shared_ptr owns only the header).
SnapshotPtr view(const float* data, size_t n) { return std::make_shared<Snapshot>(Snapshot{0, data, n}); }

// A local step: SGD on the parameters, the step's statistics into the buffers.
void sgd_apply(float* __restrict x, const float* __restrict g, float lr, size_t n, const ParamLayout& layout) {
  const size_t trainable = layout.total == n ? layout.trainable : n;
  for (size_t k = 0; k < trainable; ++k) x[k] -= lr * g[k];
  const float* stats = g;
  if (layout.total == n && layout.has_buffers()) fold_buffers(layout, x, x, &stats, 1);
}
}  // namespace

double SwarmEngine::run_virtual(SwarmListener& l) {
  const int P = graph_.nodes();
  virtual_ = true;
  listener_ = &l;
  EventQueue<int> q;
  GradientWorker& gw = *workers_[0];
  // The gradient of a step is taken at the model the node has when it
  // starts. False: the node failed and the listener says stop.
  auto start = [&](int i) {
    Node& nd = *nodes_[size_t(i)];
    const StepPlan plan = prepare_step(i, ++nd.computations, (*samplers_)[size_t(i)], *straggler_, faults_, &nd.idx);
    GradResult r;
    try {
      gw.pull(view(nd.x.data(), n_));
      compute_gradient(gw, nd.idx, plan, nd.grad.data(), 0, nullptr, 0, &r);
    } catch (const std::exception& e) {
      return fail_node(i, e.what(), vnow_);
    }
    nd.loss = r.loss;
    nd.finite = r.finite;
    nd.due = vnow_ + std::max(plan.drawn + plan.hang, 1e-9);
    nd.seq = q.push(nd.due, i);
    nd.has_event = true;
    vseq_ = q.seq();
    return true;
  };
  // After node i's step: its interaction when due, then its next step.
  auto go_on = [&](int i) {
    Node& nd = *nodes_[size_t(i)];
    if (--nd.steps_left <= 0) {
      interact(i, vnow_);
      nd.steps_left = draw_steps(i);
    }
    return start(i);
  };
  if (resumed_) {
    q.set_seq(vseq_);
    for (int i = 0; i < P; ++i) {
      const Node& nd = *nodes_[size_t(i)];
      if (nd.has_event) q.restore(nd.due, nd.seq, i);
    }
    if (pending_ >= 0 && !go_on(std::exchange(pending_, -1))) return vnow_;
  } else {
    for (int i = 0; i < P; ++i)
      if (!start(i)) return vnow_;
  }
  while (!q.empty()) {
    const auto ev = q.pop();
    if (!l.on_time(ev.t)) {
      q.restore(ev.t, ev.seq, ev.what);  // not taken: the state stays whole
      break;
    }
    vnow_ = ev.t;
    Node& nd = *nodes_[size_t(ev.what)];
    nd.has_event = false;
    if (nd.finite) sgd_apply(nd.x.data(), nd.grad.data(), cfg_.lr, n_, cfg_.layout);
    {
      std::lock_guard<std::mutex> lk(stats_mu_);
      ++(nd.finite ? stats_.local_steps : stats_.nonfinite);
      ++stats_.steps_by_node[size_t(ev.what)];
    }
    pending_ = ev.what;
    if (!l.after_step(ev.what, nd.loss, nd.finite, vnow_)) break;
    pending_ = -1;
    if (!go_on(ev.what)) break;
  }
  return vnow_;
}

void SwarmEngine::start(SwarmListener& l) {
  const int L = last_ - first_;
  EXPECTS(int(workers_.size()) == L, workers_.size() << " workers for " << L << " real-time swarm nodes");
  listener_ = &l;
  stop_ = false;
  alive_ = L;
  gen_ = cancel_.generation();
  clock_ = WallTimer();
  // A checkpoint before a node's first step records where its sampler is.
  for (int i = first_; i < last_; ++i) node(i).position.store((*samplers_)[size_t(i - first_)].position());
  auto node_loop = [this](int i) {
    Node& nd = node(i);
    GradientWorker& gw = *workers_[size_t(i - first_)];
    Sampler& sampler = (*samplers_)[size_t(i - first_)];
    while (!stop_ && !nd.failed) {
      {
        std::lock_guard<std::mutex> lk(nd.mu);  // a private copy: others may average x meanwhile
        std::memcpy(nd.work.data(), nd.x.data(), n_ * sizeof(float));
      }
      const StepPlan plan = prepare_step(i, ++nd.computations, sampler, *straggler_, faults_, &nd.idx);
      nd.position.store(sampler.position(), std::memory_order_relaxed);
      GradResult r;
      try {
        gw.pull(view(nd.work.data(), n_));
        if (!compute_gradient(gw, nd.idx, plan, nd.grad.data(), plan.drawn + plan.hang, &cancel_, gen_, &r)) break;
      } catch (const std::exception& e) {  // the node's worker is finished; the others go on without it
        if (!fail_node(i, e.what(), clock_.seconds())) stop_ = true;
        break;
      }
      if (r.finite) {
        std::lock_guard<std::mutex> lk(nd.mu);
        sgd_apply(nd.x.data(), nd.grad.data(), cfg_.lr, n_, cfg_.layout);
      }
      {
        std::lock_guard<std::mutex> lk(stats_mu_);
        ++(r.finite ? stats_.local_steps : stats_.nonfinite);
        ++stats_.steps_by_node[size_t(i)];
      }
      if (!listener_->after_step(i, r.loss, r.finite, clock_.seconds())) stop_ = true;
      if (--nd.steps_left <= 0) {
        interact(i, clock_.seconds());
        nd.steps_left = draw_steps(i);
      }
    }
  };
  auto node_main = [this, node_loop](int i) {
    name_this_thread("swarm" + std::to_string(i));
    try {
      node_loop(i);
    } catch (...) {  // a failed exchange, a failed step: every node stops
      std::lock_guard<std::mutex> lk(error_mu_);
      if (!error_) error_ = std::current_exception();
      failed_ = true;
      stop_ = true;
    }
    --alive_;
  };
  for (int i = first_; i < last_; ++i) {
    if (node(i).failed) {  // left before a resume
      --alive_;
      continue;
    }
    threads_.emplace_back(node_main, i);
  }
}

void SwarmEngine::rethrow_error() {
  if (!failed_) return;
  std::lock_guard<std::mutex> lk(error_mu_);
  std::rethrow_exception(error_);
}

void SwarmEngine::stop() {
  stop_ = true;
  cancel_.cancel();  // an injected delay under way ends now
  for (auto& t : threads_) t.join();
  threads_.clear();
}

double SwarmEngine::run_real(SwarmListener& l) {
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
