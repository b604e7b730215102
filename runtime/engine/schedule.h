// Synchronicity schedules (K over time)
// (ALGORITHMS.md section 5); the learning-rate rules are in lr_rule.h.
//
// A KSchedule is consulted after every update with the clock time and, when
// it decides, what it asks of the run (DecisionInputs); it returns a change of
// K (never below the previous K for AdaSync), with the numbers that caused
// it, or nothing (the goodput rule returns every decision it makes, those
// that keep K included, as records).
//
//   fixed      K never changes
//   adasync    every T_0 seconds of clock time, by one of four rules
//              (ALGORITHMS.md section 5), F_0 the loss at the start and F_t
//              the current estimate:
//                sqrt:       K = min(P, max(K_prev, r(K_0 sqrt(F_0 / F_t)))),
//                            r = ceil or round
//                order-stat: the smallest K with K^2 / (P - K) >=
//                            (F_0 / F_t) K_0^2 / (P - K_0), capped at P
//                runtime:    the smallest K with K E[T_K] >=
//                            (F_0 / F_t) K_0 E[T_K0], E[T_K] from the compute
//                            times the run has observed
//                plateau:    K doubles (capped at P) when the window's loss
//                            fell by less than z standard errors since the
//                            previous window at the same K; a window spans
//                            at least `plateau_updates` updates, so that it
//                            covers the same progress whatever K is. With a
//                            known budget, K doubles only if `plateau_horizon`
//                            times the updates K took to plateau, at 2K's
//                            E[T], fit in the time left: relaxing to the
//                            lower floor takes several such spans.
//                runtime-plateau: the larger of the two (plateau rungs at
//                            powers of two)
//                goodput:    K* = argmax_K d(K) / E[T_K] (GoodputModel below):
//                            the noise scale measured at the PS, E[T_K] from
//                            the observed times, L eta fitted so that d(K_now)
//                            is the loss decrease per update observed (from
//                            F_0 at the first decision, which chooses K_0;
//                            then between consecutive windows at one K);
//                            moves up only, by more than a margin
//   piecewise  "0:1,30s:2,60s:4": K = 1 from time 0, 2 from 30 s, 4 from 60 s
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runtime/config/settings.h"
#include "runtime/engine/aggregator.h"

namespace adasync {

struct KChange {
  KChange() = default;
  KChange(int k_prev_, int k_, double time_, double loss_start_, double loss_now_, std::string reason_,
          std::string rule_)
      : k_prev(k_prev_), k(k_), time(time_), loss_start(loss_start_), loss_now(loss_now_),
        reason(std::move(reason_)), rule(std::move(rule_)) {}
  int k_prev = 0, k = 0;
  double time = 0;
  double loss_start = 0, loss_now = 0;  // F_0, F_t (NaN where the rule has none)
  std::string reason;                   // rule and numbers, e.g. "sqrt rule, F0/Ft = 3.77"
  std::string rule;                     // sqrt, order-stat, runtime, plateau, runtime-plateau, goodput, piecewise
  // goodput: the estimate of L eta and each candidate's predicted progress per second (K = 1..P).
  double l_eta = NAN;
  std::vector<double> rates;
};

// A training-loss estimate over the window since the last decision: the mean
// of its n mini-batch losses, their sample variance (0 when unknown: a fixed
// training sample has no sampling noise) and the updates it spans.
struct LossWindow {
  double mean = NAN;
  double var = 0;
  int64_t n = 0;
  int64_t updates = 0;
  double var_mean() const { return n > 0 ? var / double(n) : 0; }
  // The window of both (pooled mean and variance).
  LossWindow merged(const LossWindow& o) const;
};

// The gradient statistics the goodput rule reads (noise.h; NaN: not measured).
struct GradientNoise {
  double g2 = NAN, trace = NAN;  // |G|^2 and tr(S), moving averages
};

// What a decision may ask of the run; each is called only when needed.
struct DecisionInputs {
  std::function<LossWindow()> loss;        // F_t; starts a new window
  std::function<double()> start_loss;      // F_0 when the schedule has none yet (NaN: not known)
  std::function<double(int)> update_time;  // E[T_K] of the run's variant (runtime rule; NaN: unknown)
  std::function<GradientNoise()> noise;    // goodput rule
  std::function<double()> staleness;       // mean staleness since the last decision (NaN: none counted)
  std::function<double()> lr;              // the effective step: the base rate / (1 - momentum)
  std::function<double()> curvature;       // L along the steps, the secant (noise.h; NaN: not measured)
};

class KSchedule {
 public:
  virtual ~KSchedule() = default;
  virtual std::string describe() const = 0;
  virtual int initial_k() const = 0;
  // After an update at clock time `now` with K = k_now.
  virtual std::optional<KChange> after_update(double now, int k_now, const DecisionInputs& in) = 0;
  // Sets F_0 (AdaSync); ignored by the others.
  virtual void set_start_loss(double f0) {}
  virtual bool needs_start_loss() const { return false; }
  // K was changed from outside the schedule (the stability guard, guard.h).
  virtual void on_forced_k(int k) {}
  // Whether a decision still reads the secant curvature (DecisionInputs::curvature).
  virtual bool needs_curvature() const { return false; }
  // Checkpoint state (AdaSync: next decision time, F_0, the plateau rule's
  // previous window).
  virtual std::vector<double> state() const { return {}; }
  virtual void set_state(const std::vector<double>&) {}
};


struct ScheduleConfig {
  ScheduleKind kind = ScheduleKind::Fixed;
  int k = 1;                   // fixed: K; adasync: K_0 (>= 1; 0: measured, see stable_theta)
  int workers = 1;             // P
  double interval = 0;         // adasync: T_0 (clock seconds, > 0)
  AdaRule rule = AdaRule::Sqrt;
  bool round_nearest = false;  // sqrt rule: round instead of ceil
  double plateau_z = 2.0;      // plateau rule: significance in standard errors
  int64_t plateau_updates = 100;  // plateau rule: updates a window spans at least
  double budget = 0;           // plateau rule: the run's clock budget (0: unknown, no budget test)
  double plateau_horizon = 3;  // plateau rule: 2K must have time for this many times K's updates
  double plateau_rel = 0.005;  // plateau rule: a relative decrease under this is none (noise unknown)
  std::vector<std::pair<double, int>> points;  // piecewise: (time, K) from time 0, times increasing
  // goodput rule: each gradient's batch m; whether gradients go stale (the
  // async variants: E[tau_K] about P/K - 1, scaled to the staleness measured
  // at the current K); the relative gain a move must predict (hysteresis).
  int batch = 1;
  bool stale = false;
  double goodput_margin = 0.05;
  // K_0 measured (k = 0) for the variants whose gradients go stale: a warm-up
  // at K = P - 1 (fresh gradients, which the secant needs, but not waiting on
  // the slowest of P, which dominates heavy-tailed times), then the fastest K whose staleness keeps
  // L eta E[tau_K] <= stable_theta, L the secant curvature measured in the
  // warm-up (delayed gradient descent diverges once the step times the
  // curvature times the delay passes a constant). Sync variants start at 1.
  double stable_theta = 3;
};

// The warm-up's K when K_0 is measured: P - 1 (1 for one worker).
int warm_up_k(int workers);
// The smallest K in [1, workers] whose mean staleness P/K - 1 keeps
// l_eta * E[tau_K] <= theta (workers when none does).
int stable_k(double l_eta, double theta, int workers);

// The goodput rule's model (ALGORITHMS.md §5.1): progress per update at a
// constant rate, d(K) = eta |G|^2 (1 - s(K)) - (L eta) (eta / 2) (|G|^2 +
// tr(S) / (K m)), s(K) = min(1, L eta E[tau_K]) (or, with the secant's L eta,
// min(1, L eta E[tau_K] / theta)); the rate of K is d(K) / E[T_K].
struct GoodputModel {
  int workers = 1, batch = 1;
  double eta = 0, g2 = 0, trace = 0, l_eta = 0;
  bool stale = false;
  double staleness_scale = 1;  // measured staleness / P/K - 1 at the current K
  double stable_l_eta = NAN;   // the secant's L eta (K_0 measured; NaN: none), and
  double theta = 3;            // the stability bound on L eta E[tau_K]
  double staleness(int k) const { return stale ? staleness_scale * std::max(0.0, double(workers) / k - 1) : 0.0; }
  double progress(int k) const;
  // L eta such that d(k) equals `decrease` (the observed loss decrease per
  // update; 0 at a plateau, below 0 when stale gradients raise the loss),
  // clipped to [1e-4, 2].
  double fit_l_eta(int k, double decrease) const;
};
// argmax over K in [1, P] of d(K) / E[T_K] (the rates in *rates, NaN where E[T] is unknown); 0 when none is known.
int goodput_best_k(const GoodputModel& m, const std::function<double(int)>& update_time, std::vector<double>* rates);

// The configuration is validated (config.cc); a bad one is a contract violation.
std::unique_ptr<KSchedule> make_schedule(const ScheduleConfig& c);

// The order-statistic rule on its own: smallest K with
// K^2/(P-K) >= ratio * K0^2/(P-K0), capped at P.
int order_stat_k(double ratio, int k0, int workers);
int sqrt_rule_k(double ratio, int k0, int k_prev, int workers, bool round_nearest = false);
// The runtime rule: smallest K in [K0, P] with K E[T_K] >= ratio K0 E[T_K0],
// never below k_prev; k_prev when E[T] is unknown.
int runtime_rule_k(double ratio, int k0, int k_prev, int workers, const std::function<double(int)>& update_time);
// The plateau test: true when `now` is not significantly below `prev`.
bool plateau_reached(const LossWindow& prev, const LossWindow& now, double z, double rel);

}  // namespace adasync
