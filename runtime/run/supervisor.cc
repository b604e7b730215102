#include "runtime/run/supervisor.h"

#include <atomic>
#include <chrono>
#include <algorithm>
#include <exception>
#include <thread>

namespace adasync {

namespace {
std::mutex g_eval_mu;  // one evaluation at a time (monitor, update thread, swarm nodes)
}  // namespace

Supervisor::Supervisor(const TrainConfig& cfg, Reporter& rep, int64_t max_samples, SupervisorActions act)
    : cfg_(cfg),
      rep_(rep),
      act_(std::move(act)),
      virtual_clock_(cfg.clock == ClockKind::Virtual),
      max_samples_(max_samples) {
  eval_.update = cfg.eval_every.updates;
  eval_.time = cfg.eval_every.seconds;
  ckpt_.update = cfg.checkpoint_every.updates;
  ckpt_.time = cfg.checkpoint_every.seconds;
  last_push_.assign(size_t(cfg.workers), 0.0);
  flagged_.assign(size_t(cfg.workers), 0);
}

void Supervisor::start_at(int64_t version, int64_t counted, double now) {
  std::lock_guard<std::mutex> lk(mu_);
  version_ = version;
  counted_ = counted;
  for (auto& t : last_push_) t = now;
  last_update_ = now;
}

void Supervisor::request_stop() {
  std::lock_guard<std::mutex> lk(mu_);
  stop_ = true;
}

void Supervisor::fail(const std::string& error) {
  std::lock_guard<std::mutex> lk(mu_);
  if (error_.empty()) error_ = error;
  stop_ = true;
}

std::string Supervisor::error() {
  std::lock_guard<std::mutex> lk(mu_);
  return error_;
}

std::string Supervisor::cause() {
  std::lock_guard<std::mutex> lk(mu_);
  return cause_;
}

double Supervisor::target_time() {
  std::lock_guard<std::mutex> lk(mu_);
  return target_time_;
}

bool Supervisor::should_stop(int64_t updates, int64_t counted, double now) {
  if (stop_signal() != 0) return true;
  if (cfg_.time_budget > 0 && now >= cfg_.time_budget) return true;
  if (cfg_.max_updates > 0 && updates >= cfg_.max_updates) return true;
  if (max_samples_ > 0 && counted * cfg_.batch >= max_samples_) return true;
  std::lock_guard<std::mutex> lk(mu_);
  return stop_;
}

// Due by update count: the next at the first multiple of N above v.
bool Supervisor::updates_due(Next& n, const Cadence& c, int64_t v) {
  if (c.updates <= 0 || v < n.update) return false;
  n.update = (v / c.updates + 1) * c.updates;
  return true;
}

void Supervisor::evaluate(double now) {
  if (!act_.evaluate) return;
  std::lock_guard<std::mutex> ek(g_eval_mu);
  const EvalResult ev = act_.evaluate(now);
  std::lock_guard<std::mutex> lk(mu_);
  if (cfg_.target_accuracy > 0 && ev.accuracy >= cfg_.target_accuracy && target_time_ < 0) {
    target_time_ = now;
    stop_ = true;
  }
}

void Supervisor::checkpoint(double now) {
  if (cfg_.checkpoint_dir.empty() || !act_.capture) return;
  std::lock_guard<std::mutex> one_at_a_time(ckpt_mu_);  // swarm nodes may find two due at once
  const SnapshotPtr p = act_.params();  // first: a mode may publish them now
  // The snapshot the last checkpoint holds (a SwarmSGD due point found late,
  // a run's end on its last periodic checkpoint): on disk already, once.
  if (p && last_params_.lock() == p) return;
  try {
    set_last_checkpoint(act_.save(act_.capture(now, nullptr, p), p, {}, now));
    last_params_ = p;
  } catch (const OutputError& e) {
    fail(e.what());  // the run stops; the last complete checkpoint stays
  }
}

bool Supervisor::on_time(double now) {
  if (stop_signal() != 0) return false;
  if (cfg_.watchdog > 0) {
    std::vector<std::pair<int, double>> alarms;
    {
      std::lock_guard<std::mutex> lk(mu_);
      // A worker that pushed since the last update and waits for the next
      // one (every variant but the k-batch ones) owes nothing. In the sync
      // variants everyone restarts at an update; elsewhere a worker starts
      // again after its own push.
      const bool pushers_wait = cfg_.variant != Variant::KBatchSync && cfg_.variant != Variant::KBatchAsync && !cfg_.swarm;
      for (int w = 0; w < cfg_.workers; ++w) {
        if (flagged_[size_t(w)]) continue;
        if (pushers_wait && last_push_[size_t(w)] > last_update_) continue;
        const double since = is_synchronous(cfg_.variant) && !cfg_.swarm ? std::max(last_push_[size_t(w)], last_update_)
                                                                          : last_push_[size_t(w)];
        const double idle = now - since;
        if (idle > cfg_.watchdog) {
          flagged_[size_t(w)] = 1;
          alarms.emplace_back(w, idle);
        }
      }
    }
    for (const auto& [w, idle] : alarms) rep_.watchdog(w, idle, now);
  }
  if (cfg_.time_budget > 0 && now >= cfg_.time_budget) return false;
  if (virtual_clock_) {
    for (;;) {
      double t;
      {
        std::lock_guard<std::mutex> lk(mu_);
        if (!(cfg_.eval_every.seconds > 0 && now >= eval_.time)) break;
        t = eval_.time;
        eval_.time += cfg_.eval_every.seconds;
      }
      evaluate(t);
    }
  } else {
    rep_.progress(now, false);
  }
  std::lock_guard<std::mutex> lk(mu_);
  return !stop_;
}

bool Supervisor::keep_going(double now) {
  int64_t v, c;
  {
    std::lock_guard<std::mutex> lk(mu_);
    v = version_;
    c = counted_;
  }
  (void)now;  // the time budget is on_time's: an update at the budget still counts
  if (stop_signal() != 0) return false;
  if (cfg_.max_updates > 0 && v >= cfg_.max_updates) return false;
  if (max_samples_ > 0 && c * cfg_.batch >= max_samples_) return false;
  std::lock_guard<std::mutex> lk(mu_);
  return !stop_;
}

void Supervisor::on_push(const PushEvent& e) {
  std::lock_guard<std::mutex> lk(mu_);
  last_push_[size_t(e.worker)] = e.time;
  flagged_[size_t(e.worker)] = 0;
  if (!e.finite && cfg_.on_nonfinite == OnNonfinite::Stop && error_.empty()) {
    error_ = "worker " + std::to_string(e.worker) + " produced a non-finite gradient at version " +
             std::to_string(e.tau) + " (--on-nonfinite stop)";
    stop_ = true;
  }
  nonfinite_run_ = e.finite ? 0 : nonfinite_run_ + 1;
  if (nonfinite_run_ >= cfg_.nonfinite_limit && error_.empty()) {
    // Nothing is learnt any more (a learning rate that overflows, say).
    error_ = std::to_string(nonfinite_run_) + " non-finite gradients in a row (--nonfinite-limit " +
             std::to_string(cfg_.nonfinite_limit) + "), the last from worker " + std::to_string(e.worker) +
             " at version " + std::to_string(e.tau) + "; lower --lr or check the data";
    cause_ = "non-finite limit";
    stop_ = true;
  }
}

void Supervisor::on_update(const UpdateEvent& e) {
  const int64_t v = e.update.snapshot->version;
  bool eval = false, ckpt = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    version_ = v;
    counted_ = e.stats.counted;
    last_update_ = e.now;
    if (virtual_clock_) {
      eval = updates_due(eval_, cfg_.eval_every, v);
    } else if (queue_evals_ && updates_due(eval_, cfg_.eval_every, v)) {
      std::unique_lock<std::mutex> dk(due_mu_);
      due_.push_back(DueEval{e.update.snapshot, e.now, e.stats.counted * cfg_.batch});
      due_cv_.notify_all();
    }
    if (!virtual_clock_ && !cfg_.checkpoint_dir.empty()) {
      ckpt = updates_due(ckpt_, cfg_.checkpoint_every, v);
      if (cfg_.checkpoint_every.seconds > 0 && e.now >= ckpt_.time) {
        while (ckpt_.time <= e.now) ckpt_.time += cfg_.checkpoint_every.seconds;
        ckpt = true;
      }
    }
  }
  if (ckpt) checkpoint(e.now);
  if (eval) evaluate(e.now);
  if (queue_evals_) {
    // Back-pressure: training waits for the evaluations it asked for.
    std::unique_lock<std::mutex> dk(due_mu_);
    due_cv_.wait(dk, [this] { return due_.size() <= 2 || monitor_done_; });
  }
  rep_.progress(e.now, false);
}

void Supervisor::evaluate_due_snapshots() {
  for (;;) {
    DueEval d;
    {
      std::lock_guard<std::mutex> dk(due_mu_);
      if (due_.empty()) return;
      d = due_.front();
    }
    {
      std::lock_guard<std::mutex> ek(g_eval_mu);
      const EvalResult ev = act_.evaluate_at(d.params, d.now, d.samples);
      std::lock_guard<std::mutex> lk(mu_);
      if (cfg_.target_accuracy > 0 && ev.accuracy >= cfg_.target_accuracy && target_time_ < 0) {
        target_time_ = d.now;
        stop_ = true;
      }
    }
    std::lock_guard<std::mutex> dk(due_mu_);
    due_.pop_front();  // after the evaluation: the queue's length bounds the snapshots held
    due_cv_.notify_all();
  }
}

void Supervisor::on_worker_failed(int w, const std::string& what, int left, double) {
  std::lock_guard<std::mutex> lk(mu_);
  flagged_[size_t(w)] = 1;  // the watchdog leaves a failed worker alone
  if (left <= 0 && error_.empty())
    error_ = "every worker failed (the last: worker " + std::to_string(w) + ": " + what + ")";
}

void Supervisor::after_step(int64_t updates, double now, bool monitored) {
  bool eval = false, ckpt = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    version_ = updates;
    if (!monitored) eval = updates_due(eval_, cfg_.eval_every, updates);
    if (!monitored && !virtual_clock_ && cfg_.eval_every.seconds > 0 && now >= eval_.time) {
      while (eval_.time <= now) eval_.time += cfg_.eval_every.seconds;
      eval = true;
    }
    if (!cfg_.checkpoint_dir.empty()) {
      ckpt = updates_due(ckpt_, cfg_.checkpoint_every, updates);
      if (cfg_.checkpoint_every.seconds > 0 && now >= ckpt_.time) {
        while (ckpt_.time <= now) ckpt_.time += cfg_.checkpoint_every.seconds;
        ckpt = true;
      }
    }
  }
  if (eval) evaluate(now);
  if (ckpt) checkpoint(now);
  rep_.progress(now, false);
}

void Supervisor::at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) {
  if (cfg_.checkpoint_dir.empty()) return;
  // Captured at every quiet point, so a run that ends between updates still
  // writes the last state it can continue from exactly.
  quiet_params_ = act_.params();
  quiet_ = act_.capture(now, &state, quiet_params_);
  quiet_in_flight_ = in_flight;
  quiet_time_ = now;
  bool due;
  {
    std::lock_guard<std::mutex> lk(mu_);
    due = updates_due(ckpt_, cfg_.checkpoint_every, quiet_params_->version);
    if (cfg_.checkpoint_every.seconds > 0 && now >= ckpt_.time) {
      while (ckpt_.time <= now) ckpt_.time += cfg_.checkpoint_every.seconds;
      due = true;
    }
  }
  if (!due) return;
  try {
    set_last_checkpoint(act_.save(quiet_, quiet_params_, quiet_in_flight_, now));
  } catch (const OutputError& e) {
    fail(e.what());
  }
}

double Supervisor::run_monitored(const std::function<double()>& engine, const std::function<int64_t()>& version,
                                 double offset, bool snapshots) {
  std::atomic<bool> done{false};
  std::exception_ptr error;
  double end = 0;
  const WallTimer wall;
  queue_evals_ = cfg_.eval_every.updates > 0 && snapshots;
  {
    std::lock_guard<std::mutex> dk(due_mu_);
    monitor_done_ = false;
  }
  std::thread runner([&] {
    try {
      end = engine();
    } catch (...) {
      error = std::current_exception();
    }
    done = true;
  });
  while (!done) {
    {
      std::unique_lock<std::mutex> dk(due_mu_);
      due_cv_.wait_for(dk, std::chrono::milliseconds(10), [this] { return !due_.empty(); });
    }
    evaluate_due_snapshots();
    const double now = offset + wall.seconds();
    const int64_t v = version();
    bool due = false;
    {
      std::lock_guard<std::mutex> lk(mu_);
      due = !queue_evals_ && updates_due(eval_, cfg_.eval_every, v);
      if (cfg_.eval_every.seconds > 0 && now >= eval_.time) {
        while (eval_.time <= now) eval_.time += cfg_.eval_every.seconds;
        due = true;
      }
    }
    if (due && !done) evaluate(now);
  }
  runner.join();
  evaluate_due_snapshots();  // the last ones asked for
  {
    std::lock_guard<std::mutex> dk(due_mu_);
    monitor_done_ = true;
    due_cv_.notify_all();
  }
  queue_evals_ = false;
  if (error) std::rethrow_exception(error);
  return end;
}

void Supervisor::final_checkpoint(double end, bool quiet_point) {
  if (cfg_.checkpoint_dir.empty() || !act_.capture) return;
  if (!quiet_point) {
    checkpoint(end);
    return;
  }
  if (!quiet_params_ || written(quiet_params_->version)) return;
  try {
    set_last_checkpoint(act_.save(quiet_, quiet_params_, quiet_in_flight_, quiet_time_));
  } catch (const OutputError& e) {
    fail(e.what());
  }
}

bool Supervisor::written(int64_t version) {
  const std::string last = last_checkpoint();
  return !last.empty() && last.find(checkpoint_name(version)) != std::string::npos;
}

std::string Supervisor::last_checkpoint() {
  std::lock_guard<std::mutex> lk(mu_);
  return last_checkpoint_;
}

void Supervisor::set_last_checkpoint(const std::string& path) {
  std::lock_guard<std::mutex> lk(mu_);
  last_checkpoint_ = path;
}

SupervisorState Supervisor::state() {
  std::lock_guard<std::mutex> lk(mu_);
  return SupervisorState{eval_.time, ckpt_.time, eval_.update, ckpt_.update};
}

void Supervisor::restore(const SupervisorState& s) {
  std::lock_guard<std::mutex> lk(mu_);
  eval_ = Next{s.next_eval_update, s.next_eval_time};
  ckpt_ = Next{s.next_ckpt_update, s.next_ckpt_time};
}

}  // namespace adasync
