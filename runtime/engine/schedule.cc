#include "runtime/engine/schedule.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include "datasets/rng.h"

namespace adasync {

int sqrt_rule_k(double ratio, int k0, int k_prev, int workers, bool round_nearest) {
  const double x = double(k0) * std::sqrt(std::max(ratio, 0.0));
  const double target = round_nearest ? std::floor(x + 0.5) : std::ceil(x - 1e-12);
  return std::min(workers, std::max(k_prev, int(std::min(target, 1e9))));
}

int order_stat_k(double ratio, int k0, int workers) {
  if (k0 >= workers) return workers;
  const double rhs = std::max(ratio, 0.0) * double(k0) * k0 / double(workers - k0);
  for (int k = 1; k < workers; ++k)
    if (double(k) * k / double(workers - k) >= rhs - 1e-12) return k;
  return workers;
}

int runtime_rule_k(double ratio, int k0, int k_prev, int workers, const std::function<double(int)>& update_time) {
  const double t0 = update_time(k0);
  if (!(t0 > 0) || !std::isfinite(t0)) return k_prev;
  const double rhs = std::max(ratio, 0.0) * double(k0) * t0;
  for (int k = std::max(k0, k_prev); k < workers; ++k) {
    const double t = update_time(k);
    if (!std::isfinite(t)) return k_prev;
    if (double(k) * t >= rhs * (1 - 1e-12)) return k;
  }
  return std::max(workers, k_prev);
}

int warm_up_k(int workers) { return workers > 1 ? workers - 1 : 1; }

int stable_k(double l_eta, double theta, int workers) {
  for (int k = 1; k < workers; ++k)
    if (!(l_eta * (double(workers) / k - 1) > theta)) return k;
  return workers;
}

double GoodputModel::progress(int k) const {
  // Stale progress: the fitted L eta times E[tau], or where the secant was
  // measured, falling linearly to nothing at the stability bound.
  const double s = std::min(1.0, std::isfinite(stable_l_eta) && stable_l_eta > 0 ? stable_l_eta * staleness(k) / theta
                                                                                   : l_eta * staleness(k));
  return eta * g2 * (1 - s) - l_eta * (eta / 2) * (g2 + trace / (double(k) * batch));
}

double GoodputModel::fit_l_eta(int k, double decrease) const {
  // progress(k) falls as L eta grows: bisection on [lo, hi].
  double lo = 1e-4, hi = 2.0;
  GoodputModel m = *this;
  const double target = decrease;  // below 0 too: stale gradients can raise the loss
  m.l_eta = lo;
  if (m.progress(k) <= target) return lo;
  m.l_eta = hi;
  if (m.progress(k) >= target) return hi;
  for (int i = 0; i < 60; ++i) {
    m.l_eta = std::sqrt(lo * hi);  // geometric: L eta spans decades
    (m.progress(k) > target ? lo : hi) = m.l_eta;
  }
  return std::sqrt(lo * hi);
}

int goodput_best_k(const GoodputModel& m, const std::function<double(int)>& update_time, std::vector<double>* rates) {
  rates->assign(size_t(m.workers), NAN);
  int best = 0;
  for (int k = 1; k <= m.workers; ++k) {
    const double t = update_time ? update_time(k) : NAN;
    if (!(t > 0) || !std::isfinite(t)) continue;
    (*rates)[size_t(k - 1)] = m.progress(k) / t;
    if (best == 0 || (*rates)[size_t(k - 1)] > (*rates)[size_t(best - 1)]) best = k;
  }
  return best;
}

LossWindow LossWindow::merged(const LossWindow& o) const {
  if (o.n == 0) return LossWindow{mean, var, n, updates + o.updates};
  if (n == 0) return LossWindow{o.mean, o.var, o.n, updates + o.updates};
  const double nn = double(n + o.n);
  const double m = (double(n) * mean + double(o.n) * o.mean) / nn;
  // Sums of squared deviations, pooled about the new mean.
  const double ss = var * double(n - 1) + o.var * double(o.n - 1) + double(n) * (mean - m) * (mean - m) +
                    double(o.n) * (o.mean - m) * (o.mean - m);
  return LossWindow{m, nn > 1 ? ss / (nn - 1) : 0, n + o.n, updates + o.updates};
}

bool plateau_reached(const LossWindow& prev, const LossWindow& now, double z, double rel) {
  if (!std::isfinite(prev.mean) || !std::isfinite(now.mean)) return false;
  const double se = std::sqrt(prev.var_mean() + now.var_mean());
  // Without a noise estimate a decrease under `rel` of the loss is none.
  const double margin = se > 0 ? z * se : rel * std::abs(prev.mean);
  return prev.mean - now.mean < margin;
}


namespace {

class FixedSchedule : public KSchedule {
 public:
  explicit FixedSchedule(int k) : k_(k) {}
  std::string describe() const override { return "fixed K=" + std::to_string(k_); }
  int initial_k() const override { return k_; }
  std::optional<KChange> after_update(double, int, const DecisionInputs&) override { return std::nullopt; }

 private:
  int k_;
};

class AdaSyncSchedule : public KSchedule {
 public:
  explicit AdaSyncSchedule(const ScheduleConfig& c)
      : c_(c), next_(c.interval), k0_(c.k > 0 ? c.k : 1), warm_(c.k == 0 && c.stale) {}
  std::string describe() const override {
    std::ostringstream os;
    os << "adasync (" << to_string(c_.rule) << (c_.rule == AdaRule::Sqrt && c_.round_nearest ? ", round" : "")
       << " rule, K0=";
    if (c_.k > 0) os << c_.k;
    else if (c_.stale) os << "measured after a warm-up at K=" << warm_up_k(c_.workers);
    else os << "1";
    os << ", every " << c_.interval << " s)";
    return os.str();
  }
  int initial_k() const override { return warm_ ? warm_up_k(c_.workers) : k0_; }
  bool needs_start_loss() const override { return c_.rule != AdaRule::Plateau && std::isnan(f0_); }
  bool needs_curvature() const override { return warm_; }
  void on_forced_k(int) override {
    // The loss windows and the updates at K start again at the new K.
    prev_ = cur_ = LossWindow{};
    updates_at_k_ = 0;
  }
  void set_start_loss(double f0) override { f0_ = f0; }
  std::vector<double> state() const override {
    return {next_,    f0_,      prev_.mean,         prev_.var,           double(prev_.n),
            double(prev_.updates), cur_.mean, cur_.var, double(cur_.n), double(cur_.updates),
            double(updates_at_k_), l_eta_,   decided_ ? 1.0 : 0.0, double(k0_), warm_ ? 1.0 : 0.0,
            double(warm_decisions_), secant_};
  }
  void set_state(const std::vector<double>& s) override {
    if (s.size() >= 2) next_ = s[0], f0_ = s[1];
    if (s.size() >= 11) {
      prev_ = LossWindow{s[2], s[3], int64_t(s[4]), int64_t(s[5])};
      cur_ = LossWindow{s[6], s[7], int64_t(s[8]), int64_t(s[9])};
      updates_at_k_ = int64_t(s[10]);
    }
    if (s.size() >= 13) l_eta_ = s[11], decided_ = s[12] != 0;
    if (s.size() >= 17) k0_ = int(s[13]), warm_ = s[14] != 0, warm_decisions_ = int(s[15]), secant_ = s[16];
  }

  std::optional<KChange> after_update(double now, int k_now, const DecisionInputs& in) override {
    if (now < next_) return std::nullopt;
    while (next_ <= now) next_ += c_.interval;
    if (c_.rule == AdaRule::Goodput) return goodput(now, k_now, in);
    if (warm_) return end_warm_up(now, k_now, in);
    if (k_now >= c_.workers) return std::nullopt;
    if (c_.rule == AdaRule::Plateau) return plateau(now, k_now, in.loss(), in);
    if (c_.rule == AdaRule::RuntimePlateau) return runtime_plateau(now, k_now, in);
    // F_0 from the run when it is not known yet (the first decision at the latest).
    if (std::isnan(f0_) && in.start_loss) f0_ = in.start_loss();
    if (!(f0_ > 0) || !std::isfinite(f0_)) return std::nullopt;
    const double ft = in.loss().mean;
    if (!(ft > 0) || !std::isfinite(ft)) return std::nullopt;
    const double ratio = f0_ / ft;
    int k = k_now;
    switch (c_.rule) {
      case AdaRule::Sqrt: k = sqrt_rule_k(ratio, k0_, k_now, c_.workers, c_.round_nearest); break;
      case AdaRule::OrderStat: k = order_stat_k(ratio, k0_, c_.workers); break;
      case AdaRule::Runtime:
        if (in.update_time) k = runtime_rule_k(ratio, k0_, k_now, c_.workers, in.update_time);
        break;
      case AdaRule::Auto:  // resolved (default_ada_rule) before a schedule is made
      case AdaRule::Plateau:
      case AdaRule::RuntimePlateau:
      case AdaRule::Goodput: break;
    }
    k = std::max(k, k_now);  // K never decreases
    if (k == k_now) return std::nullopt;
    std::ostringstream why;
    why.precision(3);
    why << to_string(c_.rule) << " rule, F0/Ft = " << ratio;
    if (c_.rule == AdaRule::Runtime)
      why << ", K E[T_K]: " << k_now * in.update_time(k_now) << " -> " << k * in.update_time(k);
    return KChange{k_now, k, now, f0_, ft, why.str(), to_string(c_.rule)};
  }

 private:
  // L eta from the secant measured so far: NaN before a pair, 0 where the
  // noise swamps the curvature.
  static double secant_l_eta(const DecisionInputs& in) {
    const double l = in.curvature ? in.curvature() : NAN;
    const double eta = in.lr ? in.lr() : NAN;
    return l * eta;
  }

  // The warm-up ends once the secant has a pair whose curvature stands out
  // of the noise, or after kWarmUpIntervals decisions without one (then the
  // curvature is too small to matter: 0).
  bool waited_enough(double l_eta) {
    ++warm_decisions_;
    if (std::isnan(l_eta)) return false;
    return l_eta > 0 || warm_decisions_ >= kWarmUpIntervals;
  }
  static constexpr int kWarmUpIntervals = 4;

  // The end of the warm-up at K = P - 1 (K_0 measured, stale variants): K_0 is
  // the fastest K that the measured curvature says stays stable, and F_0 the
  // loss now (the loss the rules' K_0 belongs to). Waits while no secant pair
  // is in.
  std::optional<KChange> end_warm_up(double now, int k_now, const DecisionInputs& in) {
    const double l_eta = secant_l_eta(in);
    if (!waited_enough(l_eta)) return std::nullopt;
    const LossWindow w = in.loss();
    const int k = stable_k(l_eta, c_.stable_theta, c_.workers);
    warm_ = false;
    k0_ = k;
    if (w.n > 0 && std::isfinite(w.mean)) f0_ = w.mean;
    prev_ = cur_ = LossWindow{};
    updates_at_k_ = 0;
    std::ostringstream why;
    why.precision(3);
    why << to_string(c_.rule) << " rule, K0 after the warm-up at K " << k_now << ": L*eta (secant) " << l_eta
        << ", the fastest K with L*eta E[tau_K] <= " << c_.stable_theta << " is " << k
        << " (E[tau] " << double(c_.workers) / k - 1 << ")";
    KChange ch{k_now, k, now, f0_, w.mean, why.str(), to_string(c_.rule)};
    return ch;
  }

  // Whether a move to K has time to pay off before the budget ends: K_now
  // took updates_at_k_ updates (to plateau); a larger K relaxes at about the
  // same rate per update, so it needs plateau_horizon times as many, each
  // taking E[T_K]. Always true without a budget or times.
  bool pays_off(double now, int k, const DecisionInputs& in) const {
    if (c_.budget <= 0 || !in.update_time) return true;
    const double need = c_.plateau_horizon * double(updates_at_k_) * in.update_time(k);
    return !std::isfinite(need) || need <= c_.budget - now;
  }

  // Doubles K when this window's loss is not significantly below the
  // previous window's at the same K (ReduceLROnPlateau with K for 1/eta).
  std::optional<KChange> plateau(double now, int k_now, const LossWindow& got, const DecisionInputs& in) {
    updates_at_k_ += got.updates;
    cur_ = cur_.merged(got);
    // Windows grow with the time spent at K (half of it), so that a slow
    // approach to K's floor is judged over a span that can show it.
    const int64_t span = std::max(c_.plateau_updates, (updates_at_k_ - cur_.updates) / 2);
    if (cur_.updates < span || cur_.n == 0 || !std::isfinite(cur_.mean)) return std::nullopt;
    const LossWindow prev = prev_, w = cur_;
    prev_ = cur_;
    cur_ = LossWindow{};
    if (prev.n == 0 || !plateau_reached(prev, w, c_.plateau_z, c_.plateau_rel)) return std::nullopt;
    // The next rung: 2K, or for the combined rule the next power of two
    // (the runtime part may have left K between rungs).
    int k = std::min(c_.workers, 2 * k_now);
    if (c_.rule == AdaRule::RuntimePlateau) {
      k = 1;
      while (k <= k_now) k *= 2;
      k = std::min(c_.workers, k);
    }
    std::ostringstream why;
    why.precision(3);
    why << to_string(c_.rule) << " rule, " << (c_.rule == AdaRule::RuntimePlateau ? "plateau: " : "") << "window loss " << prev.mean << " -> " << w.mean << " over " << w.updates
        << " updates, decrease " << prev.mean - w.mean << " < " << c_.plateau_z
        << " se = " << c_.plateau_z * std::sqrt(prev.var_mean() + w.var_mean());
    if (c_.budget > 0 && in.update_time) {
      if (!pays_off(now, k, in)) return std::nullopt;
      why << ", " << c_.plateau_horizon << " x " << updates_at_k_ << " updates at K " << k << " take "
          << c_.plateau_horizon * double(updates_at_k_) * in.update_time(k) << " s of the " << c_.budget - now
          << " s left";
    }
    prev_ = LossWindow{};  // the next test compares two windows at the new K
    updates_at_k_ = 0;
    return KChange{k_now, k, now, prev.mean, w.mean, why.str(), to_string(c_.rule)};
  }

  // The larger of the runtime rule's K and the plateau ladder's: the loss
  // ratio moves K early, while the loss falls fast; plateaus move it later,
  // when F_t is near the irreducible loss and the ratio stalls.
  std::optional<KChange> runtime_plateau(double now, int k_now, const DecisionInputs& in) {
    const LossWindow w = in.loss();
    std::optional<KChange> pl = plateau(now, k_now, w, in);
    if (std::isnan(f0_) && in.start_loss) f0_ = in.start_loss();
    int k_rt = k_now;
    const double ratio = f0_ / w.mean;
    if (f0_ > 0 && std::isfinite(f0_) && w.mean > 0 && std::isfinite(w.mean) && in.update_time)
      k_rt = runtime_rule_k(ratio, k0_, k_now, c_.workers, in.update_time);
    if (pl && pl->k >= k_rt) return pl;
    if (k_rt <= k_now) return std::nullopt;
    prev_ = cur_ = LossWindow{};  // K changed: the plateau windows start again
    updates_at_k_ = 0;
    std::ostringstream why;
    why.precision(3);
    why << to_string(c_.rule) << " rule, runtime: F0/Ft = " << ratio << ", K E[T_K]: "
        << k_now * in.update_time(k_now) << " -> " << k_rt * in.update_time(k_rt);
    return KChange{k_now, k_rt, now, f0_, w.mean, why.str(), to_string(c_.rule)};
  }

  // Predicted progress per second for every K from the measured noise, the
  // observed times and the fitted L eta; moves to the best K when it
  // predicts a gain above the margin (never down). The first decision, at
  // the end of the warm-up, chooses K_0 itself.
  std::optional<KChange> goodput(double now, int k_now, const DecisionInputs& in) {
    if (warm_ && !waited_enough(secant_l_eta(in))) return std::nullopt;  // the warm-up waits for its curvature
    const LossWindow w = in.loss();
    const GradientNoise gn = in.noise ? in.noise() : GradientNoise{};
    if (std::isnan(f0_) && in.start_loss) f0_ = in.start_loss();
    // The loss decrease per update: from F_0 to this window's middle (the
    // first decision), else between the middles of the last two windows at
    // the current K (after a change the first window is only the baseline:
    // one spanning two K would mix their progress).
    updates_at_k_ += w.updates;
    double before = f0_, span = double(updates_at_k_) - 0.5 * double(w.updates), before_var = 0;
    if (decided_) {
      if (!std::isfinite(prev_.mean)) {
        if (w.n > 0) prev_ = w;
        return std::nullopt;
      }
      before = prev_.mean, before_var = prev_.var_mean();
      span = 0.5 * double(prev_.updates + w.updates);
    }
    if (w.n > 0) prev_ = w;
    GoodputModel m;
    m.workers = c_.workers;
    m.batch = c_.batch;
    m.eta = in.lr ? in.lr() : NAN;
    m.g2 = gn.g2;
    m.trace = gn.trace;
    m.stale = c_.stale;
    const double measured = in.staleness ? in.staleness() : NAN;
    const double model_now = std::max(0.0, double(c_.workers) / k_now - 1);
    if (c_.stale && std::isfinite(measured) && model_now > 0.05) m.staleness_scale = measured / model_now;
    if (c_.stale && c_.k == 0) {
      if (!std::isfinite(secant_)) secant_ = secant_l_eta(in);  // the warm-up's, fresh gradients
      m.stable_l_eta = secant_, m.theta = c_.stable_theta;
    }
    if (!std::isfinite(m.g2) || !std::isfinite(m.trace) || w.n == 0) return std::nullopt;  // not measured yet
    const bool first = !decided_;
    // A move must have time to pay off before the budget ends: relaxing to a
    // larger K's floor takes about as many updates as the current K has had
    // (the plateau rule's test), each taking that K's E[T]. The first
    // decision has no such history.
    auto has_time = [&](int k) { return first || pays_off(now, k, in); };
    std::ostringstream why;
    why.precision(3);
    why << "goodput rule, " << (first ? "first decision, " : "");
    int k = k_now;
    std::vector<double> rates;
    if (!(m.g2 > 0)) {
      // |G|^2 <= 0: the gradients agree no more than noise would. At K = 1 the
      // estimate pairs consecutive gradients, a step apart: its mean is
      // |G|^2 - eta E[g^T H g], negative once the step's noise outweighs the
      // signal (Pflug's test of the noise floor). So K is at its plateau, where
      // the model's optimum is twice K (ALGORITHMS.md §5.1): double it.
      const int up = std::min(c_.workers, 2 * k_now);
      why << "Bnoise inf (|G|^2 " << m.g2 << " <= 0: the noise floor of K " << k_now << ")";
      if (up == k_now) why << ", kept (K = P)";
      else if (!has_time(up)) why << ", kept (K " << up << " has no time left to pay off)";
      else k = up, why << " -> K " << k << " (doubled, as at a plateau)";
    } else {
      if (!(m.eta > 0) || !(span > 0) || !std::isfinite(before)) return std::nullopt;
      const double decrease = (before - w.mean) / span;
      const double se = std::sqrt(before_var + w.var_mean()) / span;
      // L eta is a property of the problem and the rate: refitted only from a
      // decrease the loss's noise does not swamp (near a plateau it is noise
      // either way, and B_noise moves K*), smoothed over decisions.
      if (!std::isfinite(l_eta_) || std::abs(decrease) > c_.plateau_z * se) {
        const double fitted = m.fit_l_eta(k_now, decrease);
        l_eta_ = std::isfinite(l_eta_) ? std::sqrt(l_eta_ * fitted) : fitted;
      }
      m.l_eta = l_eta_;
      if (goodput_best_k(m, in.update_time, &rates) == 0) return std::nullopt;
      // Candidates: K_now up to 2 K_now (the optimum the model gives at a
      // plateau: past it the choice rests on extrapolating a noisy fit), up
      // to P at the first decision; never down; each with time to pay off.
      const int hi = first ? c_.workers : std::min(c_.workers, 2 * k_now);
      int best = 0;
      // A measured K_0 (--k0 auto) is the first decision's: from 1, or after
      // the warm-up at P among the K the secant says stay stable. A K_0
      // given by hand is a floor.
      int lo = k_now;
      if (first && c_.k == 0) lo = c_.stale ? stable_k(std::max(0.0, secant_), c_.stable_theta, c_.workers) : 1;
      for (int c = lo; c <= hi; ++c)
        if (std::isfinite(rates[size_t(c - 1)]) && (c == k_now || has_time(c)) &&
            (best == 0 || rates[size_t(c - 1)] > rates[size_t(best - 1)]))
          best = c;
      const double r_now = rates[size_t(k_now - 1)];
      k = best == 0 ? k_now : best;
      // Only a K that the model expects to make progress, and (hysteresis)
      // by more than the margin over the current K.
      if (!(rates[size_t(k - 1)] > 0)) k = k_now;
      if (k != k_now && !first && std::isfinite(r_now) &&
          !(rates[size_t(k - 1)] > r_now + c_.goodput_margin * std::abs(r_now)))
        k = k_now;
      why << "Bnoise " << gn.trace / gn.g2 << ", L*eta " << l_eta_ << ", loss decrease/update " << decrease
          << " (se " << se << "), predicted rate K " << k_now << " " << r_now;
      if (k != k_now) why << " -> K " << k << " " << rates[size_t(k - 1)];
      else if (best > 0) why << ", kept (best K " << best << " at " << rates[size_t(best - 1)] << ")";
      else why << ", kept";
    }
    decided_ = true;
    warm_ = false;
    // Every decision is returned: one that keeps K is a record (the policy applies nothing).
    KChange ch{k_now, k, now, f0_, w.mean, why.str(), to_string(c_.rule)};
    if (k != k_now) prev_ = LossWindow{}, updates_at_k_ = 0;
    ch.l_eta = l_eta_;
    ch.rates = rates;
    return ch;
  }

  ScheduleConfig c_;
  double next_;
  int k0_;     // the rules' K_0 (measured at the warm-up's end when warm_)
  bool warm_;  // in the warm-up at K = P - 1 (K_0 measured, stale variants)
  int warm_decisions_ = 0;  // decisions the warm-up has waited
  double secant_ = std::numeric_limits<double>::quiet_NaN();  // goodput: L eta from the warm-up's secant
  double l_eta_ = std::numeric_limits<double>::quiet_NaN();  // goodput: the smoothed fit
  bool decided_ = false;                                      // goodput: the first decision was made
  double f0_ = std::numeric_limits<double>::quiet_NaN();
  LossWindow prev_;  // plateau: the previous full window at the current K (n = 0: none)
  LossWindow cur_;   // plateau: the window being filled
  int64_t updates_at_k_ = 0;  // plateau: updates since K last changed
};

class PiecewiseSchedule : public KSchedule {
 public:
  explicit PiecewiseSchedule(std::vector<std::pair<double, int>> pts) : pts_(std::move(pts)) {}
  std::string describe() const override {
    std::ostringstream os;
    os << "piecewise";
    for (auto& [t, k] : pts_) os << " " << t << "s:" << k;
    return os.str();
  }
  int initial_k() const override { return pts_.front().second; }
  std::optional<KChange> after_update(double now, int k_now, const DecisionInputs&) override {
    int k = pts_.front().second;
    for (auto& [t, kk] : pts_)
      if (now >= t) k = kk;
    if (k == k_now) return std::nullopt;
    return KChange{k_now, k, now, NAN, NAN, "piecewise schedule", "piecewise"};
  }

 private:
  std::vector<std::pair<double, int>> pts_;
};

}  // namespace

std::unique_ptr<KSchedule> make_schedule(const ScheduleConfig& c) {
  if (c.kind == ScheduleKind::Fixed) return std::make_unique<FixedSchedule>(c.k);
  if (c.kind == ScheduleKind::AdaSync) {
    EXPECTS(c.rule != AdaRule::Auto, "the AdaSync rule is resolved (default_ada_rule) before a schedule is made");
    EXPECTS(c.k >= 0 && c.k <= c.workers, "K_0 in [0 (measured), P]");
    EXPECTS(c.interval > 0 && c.plateau_horizon >= 0 && std::isfinite(c.plateau_horizon) && c.plateau_updates >= 1 &&
                c.plateau_z > 0 && std::isfinite(c.plateau_z),
            "a positive interval, plateau horizon, window and significance");
    return std::make_unique<AdaSyncSchedule>(c);
  }
  EXPECTS(!c.points.empty() && c.points.front().first == 0, "piecewise points start at time 0");
  for (size_t i = 0; i < c.points.size(); ++i)
    EXPECTS(c.points[i].second >= 1 && c.points[i].second <= c.workers &&
                (i == 0 || c.points[i].first > c.points[i - 1].first),
            "piecewise K in [1, P] at increasing times");
  return std::make_unique<PiecewiseSchedule>(c.points);
}

}  // namespace adasync
