// A measured K_0 (--k0 auto, ALGORITHMS.md §5): the secant curvature the
// noise meter reads from the gradients (exact on a quadratic, blind to stale
// gradients), the stability bound that turns it into K_0, and the schedule's
// warm-up at K = P - 1 that waits for it.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/engine/noise.h"
#include "runtime/engine/schedule.h"
#include "runtime/engine/theory.h"

namespace adasync {
namespace {

// SGD on F(w) = lambda |w|^2 / 2 in n dimensions from w_0 ~ N(0, 4 I),
// per-sample gradient noise of variance sigma^2 per coordinate, K gradients
// of batch m per update; `stale_every` > 0 makes every such gradient one
// computed `lag` versions ago. Returns the secant's averages (numerator,
// denominator) after `updates` updates.
std::vector<double> secant_run(double lambda, int k, int updates, int stale_every, int lag, uint64_t seed) {
  const size_t n = 64;
  const int m = 8;
  const double sigma = 0.5, step = 0.05 / lambda;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> z(0, 1);
  NoiseMeter meter(n, m, nullptr);
  std::vector<std::vector<double>> history;  // w_j, newest last
  std::vector<double> w(n);
  for (auto& x : w) x = 2 * z(rng);
  for (int j = 0; j < updates; ++j) {
    history.push_back(w);
    std::vector<std::vector<float>> g(size_t(k), std::vector<float>(n, 0.0f));
    std::vector<int64_t> tau(size_t(k), 0);
    for (int l = 0; l < k; ++l) {
      const bool stale = stale_every > 0 && l % stale_every == 1 && int(history.size()) > lag;
      const std::vector<double>& at = stale ? history[history.size() - 1 - size_t(lag)] : w;
      tau[size_t(l)] = stale ? lag : 0;
      for (size_t i = 0; i < n; ++i) g[size_t(l)][i] = float(lambda * at[i] + sigma / std::sqrt(double(m)) * z(rng));
    }
    std::vector<const float*> p;
    for (const auto& x : g) p.push_back(x.data());
    meter.measure(p, step, tau);
    std::vector<double> mean(n, 0.0);
    for (const auto& x : g)
      for (size_t i = 0; i < n; ++i) mean[i] += x[i] / k;
    for (size_t i = 0; i < n; ++i) w[i] -= step * mean[i];
  }
  return meter.secant().state();
}

// The secant's averages over many runs, solved as one run's are.
double mean_secant(double lambda, int k, int stale_every, int lag) {
  double diff = 0, step = 0, cross = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    const std::vector<double> st = secant_run(lambda, k, 40, stale_every, lag, seed);
    diff += st[0], step += st[1], cross += st[2];
  }
  Secant pooled;
  pooled.set_state({diff, step, cross, 1});
  return pooled.curvature();
}

// The noise terms are taken out: at these sizes |F_{j+1} - F_j|^2 is mostly
// noise by the end (w has shrunk), and F_j's noise moved w (the cross term),
// yet the pooled estimate is the curvature.
TEST(Secant, MeasuresTheCurvatureOfAQuadratic) {
  for (double lambda : {0.5, 2.0, 8.0})
    for (int k : {4, 16}) EXPECT_NEAR(mean_secant(lambda, k, 0, 0), lambda, 0.05 * lambda) << "K " << k;
}

// Gradients computed before the last step say nothing of it: they are left
// out of the pairs (they still widen the spread the noise term is read from).
TEST(Secant, LeavesStaleGradientsOut) {
  const double lambda = 2.0;
  EXPECT_NEAR(mean_secant(lambda, 8, 2, 3), lambda, 0.1 * lambda);
}

TEST(Secant, NeedsAPairAndReportsZeroWhereTheNoiseSwampsIt) {
  NoiseMeter meter(4, 1, nullptr);
  std::vector<float> a = {1, 0, 0, 0}, b = {1, 0, 0, 0};
  meter.measure({a.data(), b.data()}, 0.1, {0, 0});
  EXPECT_TRUE(std::isnan(meter.secant().curvature())) << "one update: no pair yet";
  // The next update's gradients are equal to the last: no change, and the
  // noise term (here tr(S) = 0) leaves nothing: a curvature of 0.
  meter.measure({a.data(), b.data()}, 0.1, {0, 0});
  EXPECT_EQ(meter.secant().count(), 1);
  EXPECT_EQ(meter.secant().curvature(), 0.0);
  // An update with no fresh gradient adds no pair and breaks the chain.
  meter.measure({a.data(), b.data()}, 0.1, {1, 2});
  meter.measure({a.data(), b.data()}, 0.1, {0, 0});
  EXPECT_EQ(meter.secant().count(), 1);
}

TEST(Secant, StateRoundTrips) {
  NoiseMeter a(2, 1, nullptr), b(2, 1, nullptr);
  std::vector<float> g1 = {1, 2}, g2 = {0.5, 1}, g3 = {0.25, 0.5};
  a.measure({g1.data(), g1.data()}, 0.5, {0, 0});
  a.measure({g2.data(), g2.data()}, 0.5, {0, 0});
  b.scale().set_state(a.scale().state());
  b.set_secant_state(a.secant_state());
  b.set_last_mean(a.last_mean());
  a.measure({g3.data(), g3.data()}, 0.5, {0, 0});
  b.measure({g3.data(), g3.data()}, 0.5, {0, 0});
  EXPECT_EQ(a.secant().curvature(), b.secant().curvature());
  // Without noise the secant is exact: |g3 - g2| / (0.5 |g2|) = 1.
  EXPECT_DOUBLE_EQ(a.secant().curvature(), 1.0);
}

// The smallest K with L eta (P / K - 1) <= theta, worked by hand.
TEST(StableK, IsTheFastestKWithinTheBound) {
  EXPECT_EQ(stable_k(0.5, 4, 32), 4);    // 0.5 * 7 = 3.5; K = 3: 0.5 * 9.67 > 4
  EXPECT_EQ(stable_k(0.0, 4, 32), 1);    // flat: any K
  EXPECT_EQ(stable_k(10, 4, 32), 23);    // 32 / K <= 1.4
  EXPECT_EQ(stable_k(1000, 4, 32), 32);  // only K = P (no staleness)
  EXPECT_EQ(stable_k(0.25, 4, 8), 1);    // 0.25 * 7 <= 4
  EXPECT_EQ(warm_up_k(16), 15);
  EXPECT_EQ(warm_up_k(1), 1);
}

ScheduleConfig auto_k0(AdaRule rule, bool stale) {
  ScheduleConfig c;
  c.kind = ScheduleKind::AdaSync;
  c.rule = rule;
  c.workers = 16;
  c.k = 0;
  c.interval = 1;
  c.batch = 8;
  c.stale = stale;
  c.budget = 1000;
  return c;
}

TEST(KZeroAuto, StaleVariantsWarmUpAtPThenTakeTheFastestStableK) {
  auto s = make_schedule(auto_k0(AdaRule::RuntimePlateau, true));
  EXPECT_EQ(s->initial_k(), 15);
  s->set_start_loss(2.3);
  double curvature = NAN;
  DecisionInputs in;
  in.loss = [] { return LossWindow{1.5, 0.01, 50, 10}; };
  in.lr = [] { return 0.1; };
  in.curvature = [&] { return curvature; };
  in.update_time = [](int k) { return theory::harmonic(16) - theory::harmonic(16 - k); };
  EXPECT_FALSE(s->after_update(1.0, 15, in)) << "no secant pair yet: the warm-up goes on";
  curvature = 5;  // L eta 0.5: K with 0.5 (16 / K - 1) <= 3 from K = 3
  auto ch = s->after_update(2.0, 15, in);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->k_prev, 15);
  EXPECT_EQ(ch->k, 3);
  EXPECT_EQ(ch->loss_start, 1.5) << "F_0 is the loss K_0 was chosen at";
  EXPECT_NE(ch->reason.find("K0 after the warm-up at K 15: L*eta (secant) 0.5"), std::string::npos) << ch->reason;
  // From there the rule goes on from K_0 = 3 and never goes down.
  in.loss = [] { return LossWindow{0.5, 0.01, 50, 10}; };
  for (int t = 3; t < 20; ++t)
    if (auto c = s->after_update(double(t), 3, in)) {
      EXPECT_GE(c->k, 3);
    }
}

TEST(KZeroAuto, ACurvatureTooSmallToSeeEndsTheWarmUpAtItsLimit) {
  auto s = make_schedule(auto_k0(AdaRule::Plateau, true));
  DecisionInputs in;
  in.loss = [] { return LossWindow{1.5, 0.01, 50, 10}; };
  in.lr = [] { return 0.1; };
  in.curvature = [] { return 0.0; };
  int t = 1;
  for (; t < 4; ++t) EXPECT_FALSE(s->after_update(double(t), 15, in)) << t;
  auto ch = s->after_update(double(t), 15, in);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->k, 1);
}

TEST(KZeroAuto, SyncVariantsStartAtOneAndAHandSetKZeroStands) {
  EXPECT_EQ(make_schedule(auto_k0(AdaRule::RuntimePlateau, false))->initial_k(), 1);
  ScheduleConfig c = auto_k0(AdaRule::RuntimePlateau, true);
  c.k = 3;
  EXPECT_EQ(make_schedule(c)->initial_k(), 3);
}

TEST(KZeroAuto, AResumeMidWarmUpDecidesAsTheRunWould) {
  DecisionInputs in;
  in.loss = [] { return LossWindow{1.5, 0.01, 50, 10}; };
  in.lr = [] { return 0.1; };
  in.curvature = [] { return 0.0; };
  auto a = make_schedule(auto_k0(AdaRule::RuntimePlateau, true));
  EXPECT_FALSE(a->after_update(1.0, 15, in));
  EXPECT_FALSE(a->after_update(2.0, 15, in));
  auto b = make_schedule(auto_k0(AdaRule::RuntimePlateau, true));
  b->set_state(a->state());
  for (double t : {3.0, 4.0}) {
    auto ca = a->after_update(t, 15, in), cb = b->after_update(t, 15, in);
    ASSERT_EQ(bool(ca), bool(cb)) << t;
    if (ca) {
      EXPECT_EQ(ca->k, cb->k);
    }
  }
}

}  // namespace
}  // namespace adasync
