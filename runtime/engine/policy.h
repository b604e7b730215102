// The update policy: the K schedule, the learning-rate rule and the loss
// estimate they decide on (ALGORITHMS.md sections 4 and 5). The update loop
// consults it for every update's rates and, after the update, for a change of
// K; it observes every counted gradient's loss and every compute time drawn.
//
// Threads: on_draw() may come from any worker thread; everything else runs on
// the thread that applies updates.
#pragma once

#include <cmath>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine/aggregator.h"
#include "runtime/engine/guard.h"
#include "runtime/engine/lr_rule.h"
#include "runtime/engine/noise.h"
#include "runtime/engine/schedule.h"

namespace adasync {

// The policy's checkpoint state, declared once: the schedule's, the loss
// windows, the observed compute times, the goodput estimators and the guard
// (empty where the run has none). Keys missing from an older checkpoint keep
// their defaults.
struct PolicyState {
  std::vector<Real> schedule;
  double start_loss_sum = 0, sched_loss_sum = 0, sched_loss_sq = 0;
  int64_t start_loss_n = 0, sched_loss_n = 0, sched_updates = 0;
  std::vector<double> observed_times;
  double decided_staleness_sum = 0;
  int64_t decided_counted = 0;
  std::vector<Real> noise, secant, guard;
};
// The schedule's and the loss windows' keys are required (a header without
// one is refused, naming it); those added later (the decided staleness, the
// noise, the secant, the guard) default to empty, as older checkpoints lack them.
void to_json(nlohmann::json& j, const PolicyState& s);
void from_json(const nlohmann::json& j, PolicyState& s);

struct PolicyConfig {
  ScheduleConfig schedule;
  LrConfig lr;
  int workers = 1;
  bool window_estimate = true;  // F_t from counted mini-batch losses; false: from sample_loss
  // The loss on a fixed training sample (the `sample` estimate).
  std::function<double(const Snapshot&)> sample_loss;
  // The gradient noise scale of every update (noise.h), for AdaSync runs:
  // each gradient's batch, and the threads of the pass.
  bool measure_noise = false;
  int batch = 1;
  ThreadPool* pool = nullptr;
  double momentum = 0;  // the goodput rule's effective step: the rate / (1 - momentum)
  bool guard = false;   // the stability guard (guard.h): AdaSync under a stale variant
};

class Policy {
 public:
  Policy(const PolicyConfig& c, size_t n_params, uint64_t seed, const Snapshot& initial);

  KSchedule& schedule() { return *schedule_; }
  LrRule& lr_rule() { return *lr_rule_; }

  // Rates of the update about to be applied (the last ones are kept for the trace).
  UpdateRates rates(const Aggregator& agg, const Snapshot& current);
  const UpdateRates& last_rates() const { return last_rates_; }
  // A counted gradient's mini-batch loss, computed at version tau (window estimate, F_0).
  void on_counted(int64_t tau, float loss);
  // A worker started a computation taking `x` clock seconds.
  void on_draw(double x);
  // Before an update: the gradients it applies (the noise scale's sample).
  void before_update(const Aggregator& agg);
  // B_noise = tr(S) / |G|^2 so far (NaN when not measured or not yet).
  double b_noise() const;
  // The noise meter's gradient waiting for its pair (nullptr: none), for checkpoints.
  const std::vector<float>* noise_waiting() const { return noise_ && !noise_->waiting().empty() ? &noise_->waiting() : nullptr; }
  void set_noise_waiting(std::vector<float> g) {
    if (noise_) noise_->set_waiting(std::move(g));
  }
  // The last update's mean gradient (the secant's pair; nullptr: none), for checkpoints.
  const std::vector<float>* noise_last_mean() const {
    return noise_ && !noise_->last_mean().empty() ? &noise_->last_mean() : nullptr;
  }
  void set_noise_last_mean(std::vector<float> g) {
    if (noise_) noise_->set_last_mean(std::move(g));
  }
  // The goodput rule's last decision that kept K (taken by the caller; empty when none).
  std::optional<KChange> take_held_decision() { return std::exchange(held_, std::nullopt); }
  // After an update published `s`: may change K (applied to agg), returned.
  std::optional<KChange> after_update(Aggregator& agg, const SnapshotPtr& s, double now);

  // Checkpoint state.
  PolicyState state() const;
  void restore(const PolicyState& s);

 private:
  LossWindow take_window(const Snapshot& s);
  DecisionInputs decision_inputs(const Aggregator& agg, const SnapshotPtr& s);

  PolicyConfig cfg_;
  std::unique_ptr<KSchedule> schedule_;
  std::unique_ptr<LrRule> lr_rule_;
  std::unique_ptr<NoiseMeter> noise_;
  std::unique_ptr<StabilityGuard> guard_;
  std::optional<KChange> held_;  // a decision that kept K (goodput: every decision is a record)
  UpdateRates last_rates_;
  // Losses of gradients computed at version 0 (F_0) and of those counted since
  // the last decision (F_t), window estimate.
  double start_loss_sum_ = 0, sched_loss_sum_ = 0, sched_loss_sq_ = 0;
  int64_t start_loss_n_ = 0, sched_loss_n_ = 0, sched_updates_ = 0;
  // Staleness summed and gradients counted at the last decision (the window's mean staleness).
  double decided_staleness_sum_ = 0;
  int64_t decided_counted_ = 0;
  // Compute times drawn (the runtime rule's sample; the newest kept).
  mutable std::mutex times_mu_;
  std::deque<double> observed_times_;
  static constexpr size_t kObservedTimes = 4096;
};

}  // namespace adasync
