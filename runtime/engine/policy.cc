#include "runtime/engine/policy.h"

#include <algorithm>
#include <cmath>

#include "runtime/engine/theory.h"

namespace adasync {

Policy::Policy(const PolicyConfig& c, size_t n_params, uint64_t seed, const Snapshot& initial) : cfg_(c) {
  schedule_ = make_schedule(c.schedule);
  lr_rule_ = std::make_unique<LrRule>(c.lr, n_params, seed);
  lr_rule_->on_publish(initial);
  if (!c.window_estimate && c.sample_loss) schedule_->set_start_loss(c.sample_loss(initial));
  if (c.measure_noise) noise_ = std::make_unique<NoiseMeter>(n_params, c.batch, c.pool);
  if (c.guard) guard_ = std::make_unique<StabilityGuard>(c.workers, c.schedule.plateau_z);
}

void Policy::before_update(const Aggregator& agg) {
  if (noise_)
    noise_->measure(agg.pending_gradients(), double(last_rates_.lr) / (1 - cfg_.momentum), agg.pending_staleness(),
                    schedule_->needs_curvature());
}

double Policy::b_noise() const { return noise_ ? noise_->scale().b_noise() : NAN; }

UpdateRates Policy::rates(const Aggregator& agg, const Snapshot& current) {
  last_rates_ = lr_rule_->rates(agg, current);
  const LrConfig& lc = lr_rule_->config();
  if (lc.grads_per_epoch > 0 && (lc.schedule != LrSchedule::Const || lc.warmup > 0))
    last_rates_.lr = float(double(last_rates_.lr) * lr_multiplier(lc, double(agg.stats().counted) / lc.grads_per_epoch));
  return last_rates_;
}

void Policy::on_counted(int64_t tau, float loss) {
  if (guard_) guard_->on_loss(tau, loss);
  sched_loss_sum_ += loss;
  sched_loss_sq_ += double(loss) * double(loss);
  ++sched_loss_n_;
  if (tau == 0) {
    start_loss_sum_ += loss;
    ++start_loss_n_;
  }
}

void Policy::on_draw(double x) {
  std::lock_guard<std::mutex> lk(times_mu_);
  observed_times_.push_back(x);
  if (observed_times_.size() > kObservedTimes) observed_times_.pop_front();
}

LossWindow Policy::take_window(const Snapshot& s) {
  LossWindow w;
  w.updates = sched_updates_;
  sched_updates_ = 0;
  if (!cfg_.window_estimate) {
    // The fixed sample's loss has no sampling noise of its own: variance 0.
    w.mean = cfg_.sample_loss(s);
    w.n = 1;
    return w;
  }
  w.n = sched_loss_n_;
  if (w.n > 0) {
    w.mean = sched_loss_sum_ / double(w.n);
    w.var = w.n > 1 ? std::max(0.0, (sched_loss_sq_ - double(w.n) * w.mean * w.mean) / double(w.n - 1)) : 0;
  }
  sched_loss_sum_ = sched_loss_sq_ = 0;
  sched_loss_n_ = 0;
  return w;
}

DecisionInputs Policy::decision_inputs(const Aggregator& agg, const SnapshotPtr& s) {
  const Variant v = agg.variant();
  DecisionInputs in;
  if (noise_) in.noise = [this] { return GradientNoise{noise_->scale().g2(), noise_->scale().trace()}; };
  if (noise_) in.curvature = [this] { return noise_->secant().curvature(); };
  in.staleness = [this, &agg] {
    const AggregatorStats& st = agg.stats();
    const int64_t n = st.counted - decided_counted_;
    const double mean = n > 0 ? (st.staleness_sum - decided_staleness_sum_) / double(n) : NAN;
    decided_staleness_sum_ = st.staleness_sum;
    decided_counted_ = st.counted;
    return mean;
  };
  in.lr = [this] { return double(last_rates_.lr) / (1 - cfg_.momentum); };
  in.loss = [this, s] { return take_window(*s); };
  in.start_loss = [this] { return start_loss_n_ > 0 ? start_loss_sum_ / double(start_loss_n_) : NAN; };
  // E[T_K] for every K from one pass over the observed times, computed at
  // most once per decision and only if the rule asks.
  auto table = std::make_shared<std::vector<double>>();
  in.update_time = [this, table, v](int k) {
    if (table->empty()) {
      std::vector<double> xs;
      {
        std::lock_guard<std::mutex> lk(times_mu_);
        xs.assign(observed_times_.begin(), observed_times_.end());
      }
      *table = theory::expected_times_observed(v, cfg_.workers, std::move(xs));
    }
    return (*table)[size_t(k)];
  };
  return in;
}

std::optional<KChange> Policy::after_update(Aggregator& agg, const SnapshotPtr& s, double now) {
  ++sched_updates_;
  lr_rule_->on_publish(*s);
  if (schedule_->needs_start_loss() && cfg_.window_estimate) {
    // F_0: the mean loss of the gradients computed at the initial parameters,
    // once all P workers' first ones are in; the schedule asks for what there
    // is at its first decision otherwise (k-sync counts only K of them).
    if (start_loss_n_ >= cfg_.workers) schedule_->set_start_loss(start_loss_sum_ / double(start_loss_n_));
  }
  if (guard_) {
    // The initial reference: the loss at the start, once P gradients of it are in.
    if (!guard_->has_reference() && start_loss_n_ >= cfg_.workers)
      guard_->set_reference(start_loss_sum_ / double(start_loss_n_));
    if (auto g = guard_->check(now, s->version, agg.k())) {
      agg.set_k(g->k);
      g->k = agg.k();
      if (g->k != g->k_prev) {
        schedule_->on_forced_k(g->k);
        return g;
      }
    }
  }
  auto ch = schedule_->after_update(now, agg.k(), decision_inputs(agg, s));
  if (!ch) return ch;
  if (ch->k == ch->k_prev) {  // a decision to keep K: recorded, nothing applied
    held_ = std::move(ch);
    return std::nullopt;
  }
  // The aggregator caps K at the workers alive: a change it caps away is no change.
  agg.set_k(ch->k);
  ch->k = agg.k();
  if (ch->k == ch->k_prev) return std::nullopt;
  if (guard_) guard_->set_reference(ch->loss_now);
  return ch;
}

void to_json(nlohmann::json& j, const PolicyState& s) {
  j = nlohmann::json{{"schedule", s.schedule},
                     {"start_loss_sum", s.start_loss_sum},
                     {"start_loss_n", s.start_loss_n},
                     {"sched_loss_sum", s.sched_loss_sum},
                     {"sched_loss_sq", s.sched_loss_sq},
                     {"sched_loss_n", s.sched_loss_n},
                     {"sched_updates", s.sched_updates},
                     {"observed_times", s.observed_times},
                     {"decided_staleness_sum", s.decided_staleness_sum},
                     {"decided_counted", s.decided_counted},
                     {"noise", s.noise},
                     {"secant", s.secant},
                     {"guard", s.guard}};
}

void from_json(const nlohmann::json& j, PolicyState& s) {
  j.at("schedule").get_to(s.schedule);
  j.at("start_loss_sum").get_to(s.start_loss_sum);
  j.at("start_loss_n").get_to(s.start_loss_n);
  j.at("sched_loss_sum").get_to(s.sched_loss_sum);
  j.at("sched_loss_sq").get_to(s.sched_loss_sq);
  j.at("sched_loss_n").get_to(s.sched_loss_n);
  j.at("sched_updates").get_to(s.sched_updates);
  j.at("observed_times").get_to(s.observed_times);
  s.decided_staleness_sum = j.value("decided_staleness_sum", 0.0);
  s.decided_counted = j.value("decided_counted", int64_t(0));
  s.noise = j.value("noise", std::vector<Real>{});
  s.secant = j.value("secant", std::vector<Real>{});
  s.guard = j.value("guard", std::vector<Real>{});
}

PolicyState Policy::state() const {
  std::lock_guard<std::mutex> lk(times_mu_);
  PolicyState s;
  for (double x : schedule_->state()) s.schedule.push_back(x);
  s.start_loss_sum = start_loss_sum_, s.start_loss_n = start_loss_n_;
  s.sched_loss_sum = sched_loss_sum_, s.sched_loss_sq = sched_loss_sq_, s.sched_loss_n = sched_loss_n_;
  s.sched_updates = sched_updates_;
  s.observed_times.assign(observed_times_.begin(), observed_times_.end());
  s.decided_staleness_sum = decided_staleness_sum_, s.decided_counted = decided_counted_;
  if (noise_) {
    for (double x : noise_->scale().state()) s.noise.push_back(x);
    for (double x : noise_->secant_state()) s.secant.push_back(x);
  }
  if (guard_)
    for (double x : guard_->state()) s.guard.push_back(x);
  return s;
}

void Policy::restore(const PolicyState& s) {
  auto doubles = [](const std::vector<Real>& v) { return std::vector<double>(v.begin(), v.end()); };
  schedule_->set_state(doubles(s.schedule));
  start_loss_sum_ = s.start_loss_sum, start_loss_n_ = s.start_loss_n;
  sched_loss_sum_ = s.sched_loss_sum, sched_loss_sq_ = s.sched_loss_sq, sched_loss_n_ = s.sched_loss_n;
  sched_updates_ = s.sched_updates;
  decided_staleness_sum_ = s.decided_staleness_sum, decided_counted_ = s.decided_counted;
  if (noise_ && !s.noise.empty()) noise_->scale().set_state(doubles(s.noise));
  if (noise_ && !s.secant.empty()) noise_->set_secant_state(doubles(s.secant));
  if (guard_ && !s.guard.empty()) guard_->set_state(doubles(s.guard));
  std::lock_guard<std::mutex> lk(times_mu_);
  observed_times_.assign(s.observed_times.begin(), s.observed_times.end());
}

}  // namespace adasync
