// Schedules of K and learning-rate rules on exact inputs, the distance
// sketch against the exact distance, and AdaSync raising K end to end.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/schedule.h"
#include "runtime/trainer.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

TEST(Schedule, SquareRootRuleOnExactRatios) {
  // K = min(P, max(K_prev, ceil(K0 sqrt(F0/Ft)))), P = 8, K0 = 1.
  EXPECT_EQ(sqrt_rule_k(1.0, 1, 1, 8), 1);
  EXPECT_EQ(sqrt_rule_k(1.5, 1, 1, 8), 2);
  EXPECT_EQ(sqrt_rule_k(4.0, 1, 1, 8), 2);
  EXPECT_EQ(sqrt_rule_k(4.01, 1, 1, 8), 3);
  EXPECT_EQ(sqrt_rule_k(9.5, 1, 1, 8), 4);
  EXPECT_EQ(sqrt_rule_k(100, 1, 1, 8), 8);   // capped at P
  EXPECT_EQ(sqrt_rule_k(1.2, 1, 5, 8), 5);   // never below the previous K
  EXPECT_EQ(sqrt_rule_k(2.25, 2, 2, 8), 3);  // K0 = 2: ceil(2 * 1.5)
}

TEST(Schedule, OrderStatisticRuleOnExactRatios) {
  // Smallest K with K^2/(P-K) >= ratio * K0^2/(P-K0); P = 8, K0 = 1:
  // K^2/(8-K) = 0.143, 0.667, 1.8, 4, 8.33, 18, 49 for K = 1..7.
  EXPECT_EQ(order_stat_k(1.0, 1, 8), 1);
  EXPECT_EQ(order_stat_k(2.0, 1, 8), 2);
  EXPECT_EQ(order_stat_k(5.0, 1, 8), 3);
  EXPECT_EQ(order_stat_k(28.0, 1, 8), 4);
  EXPECT_EQ(order_stat_k(100.0, 1, 8), 6);
  EXPECT_EQ(order_stat_k(400.0, 1, 8), 8);
  EXPECT_EQ(order_stat_k(3.0, 8, 8), 8);
}

TEST(Schedule, AdaSyncDecidesEveryIntervalNeverDecreasesAndCapsAtP) {
  ScheduleConfig c;
  c.kind = "adasync";
  c.k = 1;
  c.workers = 4;
  c.interval = 10;
  c.rule = "sqrt";
  auto s = make_schedule(c);
  EXPECT_EQ(s->initial_k(), 1);
  EXPECT_TRUE(s->needs_start_loss());
  s->set_start_loss(8.0);
  int calls = 0;
  double loss = 8.0;
  auto est = [&] {
    ++calls;
    return loss;
  };
  int k = 1;
  EXPECT_FALSE(s->after_update(9.9, k, est));  // before T_0: no decision, no estimate taken
  EXPECT_EQ(calls, 0);
  loss = 2.0;  // F0/Ft = 4 -> ceil(sqrt 4) = 2
  auto ch = s->after_update(10.0, k, est);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->k_prev, 1);
  EXPECT_EQ(ch->k, 2);
  EXPECT_DOUBLE_EQ(ch->loss_start, 8.0);
  EXPECT_DOUBLE_EQ(ch->loss_now, 2.0);
  k = ch->k;
  EXPECT_FALSE(s->after_update(15.0, k, est));  // next decision at 20
  loss = 4.0;                                   // the loss went up: K stays
  EXPECT_FALSE(s->after_update(20.0, k, est));
  loss = 0.01;  // ratio 800 -> ceil(28.3), capped at P = 4
  ch = s->after_update(35.0, k, est);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->k, 4);
  EXPECT_FALSE(s->after_update(100.0, 4, est));  // at P nothing more to do
  EXPECT_EQ(calls, 3);
}

TEST(Schedule, PiecewiseFollowsItsPointsAndRejectsBadLists) {
  ScheduleConfig c;
  c.kind = "piecewise";
  c.workers = 8;
  c.points = "0:1,30s:2,1min:4";
  auto s = make_schedule(c);
  auto none = [] { return 0.0; };
  EXPECT_EQ(s->initial_k(), 1);
  EXPECT_FALSE(s->after_update(29.0, 1, none));
  EXPECT_EQ(s->after_update(30.0, 1, none)->k, 2);
  EXPECT_EQ(s->after_update(61.0, 2, none)->k, 4);
  for (const char* bad : {"1s:2", "0:1,10s:9", "0:1,5s:2,3s:4", "0-1", "0:x"}) {
    c.points = bad;
    EXPECT_THROW(make_schedule(c), UsageError) << bad;
  }
  c.kind = "exponential";
  EXPECT_THROW(make_schedule(c), UsageError);
}

// An aggregator with counted gradients at chosen versions, for rate rules.
struct RateRig {
  RateRig(size_t n, const std::vector<std::vector<float>>& versions) {
    OptimizerConfig oc;
    oc.momentum = 0;
    ps = std::make_unique<ParamServer>(n, versions[0].data(), std::make_unique<HostOptimizer>(oc, n, nullptr), 8);
    AggregatorConfig ac;
    ac.variant = Variant::KAsync;
    ac.workers = 4;
    ac.k = 4;
    agg = std::make_unique<Aggregator>(ac, *ps);
    for (size_t v = 0; v < versions.size(); ++v) {
      if (v > 0) ps->reset(versions[v].data(), int64_t(v));
      snaps.push_back(ps->latest());
    }
    agg->set_version(int64_t(versions.size()) - 1);
  }
  void push(int worker, int64_t tau) {
    Push p;
    p.worker = worker;
    p.tau = tau;
    p.slot = ps->acquire_slot();
    p.params = snaps[size_t(tau)];
    agg->push(p);
  }
  std::unique_ptr<ParamServer> ps;
  std::unique_ptr<Aggregator> agg;
  std::vector<SnapshotPtr> snaps;
};

TEST(LrRules, ConstantAndStalenessWeightsAreExact) {
  std::vector<std::vector<float>> v(4, std::vector<float>(3, 0.f));
  RateRig r(3, v);
  r.push(0, 3);  // staleness 0
  r.push(1, 1);  // 2
  r.push(2, 0);  // 3
  LrConfig c;
  c.lr = 0.5;
  LrRule constant(c, 3, 1);
  const UpdateRates a = constant.rates(*r.agg, *r.ps->latest());
  EXPECT_FLOAT_EQ(a.lr, 0.5f);
  EXPECT_TRUE(a.weights.empty());  // 1/K each
  c.rule = "staleness";
  LrRule stale(c, 3, 1);
  const UpdateRates b = stale.rates(*r.agg, *r.ps->latest());
  ASSERT_EQ(b.weights.size(), 3u);
  EXPECT_FLOAT_EQ(b.weights[0], 1.f / 3);
  EXPECT_FLOAT_EQ(b.weights[1], 0.5f / 3);
  EXPECT_FLOAT_EQ(b.weights[2], (1.f / 3) / 3);
}

TEST(LrRules, DistanceRuleUsesTheSquaredDistanceToTheGradientsSnapshot) {
  // Versions 0..2 along one axis: ||w2 - w0||^2 = 16 * 4 = 64, ||w2 - w1||^2 = 16.
  std::vector<std::vector<float>> v = {std::vector<float>(16, 0.f), std::vector<float>(16, 1.f),
                                       std::vector<float>(16, 2.f)};
  RateRig r(16, v);
  r.push(0, 2);
  r.push(1, 1);
  r.push(2, 0);
  LrConfig c;
  c.rule = "distance";
  c.lr = 0.5;   // eta_max
  c.c = 16.0;   // eta = min(16 / d^2, 0.5)
  c.distance = "exact";
  LrRule rule(c, 16, 1);
  const UpdateRates u = rule.rates(*r.agg, *r.ps->latest());
  ASSERT_EQ(u.weights.size(), 3u);
  EXPECT_FLOAT_EQ(u.lr, 0.5f);
  EXPECT_FLOAT_EQ(u.weights[0], 1.f / 3);                   // fresh: eta_max
  EXPECT_FLOAT_EQ(u.weights[1], float(0.5 / 0.5 / 3));      // 16/16 = 1 -> capped at 0.5
  EXPECT_FLOAT_EQ(u.weights[2], float(0.25 / 0.5 / 3));     // 16/64 = 0.25
}

TEST(LrRules, SketchedDistanceTracksTheExactOne) {
  const size_t n = 200000;
  auto a = test::random_vector<float>(n, 1), b = test::random_vector<float>(n, 2);
  const double exact = exact_distance2(a.data(), b.data(), n);
  double mean = 0;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    DistanceSketch s(n, 4096, seed, 4);
    s.record(0, a.data());
    s.record(1, b.data());
    double d = 0;
    ASSERT_TRUE(s.distance2(1, 0, &d));
    EXPECT_NEAR(d / exact, 1.0, 0.15) << "seed " << seed;  // ~sqrt(2/4096) = 2.2% typical
    mean += d / 40;
  }
  EXPECT_NEAR(mean / exact, 1.0, 0.02);  // unbiased
  DistanceSketch s(n, 4096, 0, 2);
  s.record(0, a.data());
  s.record(1, b.data());
  s.record(2, a.data());
  double d = 0;
  EXPECT_FALSE(s.distance2(2, 0, &d));  // version 0 fell out of the ring
  EXPECT_TRUE(s.distance2(2, 1, &d));
}

TEST(AdaSync, KRisesFromK0InVirtualTime) {
  auto data = std::make_shared<DataSplit>(make_gaussian_classes(4000, 500, 16, 4, 1.5, 5));
  normalize(*data);
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.1;
  c.workers = 8;
  c.variant = "k-async";
  c.schedule = "adasync";
  c.k0 = 1;
  c.clock = "virtual";
  c.straggler = "exp:mean=1";
  c.time_budget = 200;
  c.eval_every = "0";
  c.progress = "none";
  c.devices = "cpu";
  for (const char* est : {"window", "sample"}) {
    c.loss_estimate = est;
    Trainer t(c, data);
    const RunSummary s = t.run();
    ASSERT_FALSE(s.k_changes.empty()) << est;
    int k = 1;
    for (const auto& ch : s.k_changes) {
      EXPECT_EQ(ch.k_prev, k) << est;
      EXPECT_GT(ch.k, ch.k_prev) << est;
      EXPECT_GT(ch.loss_start, ch.loss_now) << est;
      k = ch.k;
    }
    EXPECT_EQ(s.k, k);
    EXPECT_GE(s.k, 2) << est;
    EXPECT_LE(s.k, 8);
  }
}

TEST(AdaSync, ScheduleAndRateRuleFlagsAreValidated) {
  TrainConfig c;
  c.variant = "sync";
  c.schedule = "adasync";
  EXPECT_THROW(validate(c), UsageError);  // sync has no K
  c.variant = "k-async";
  c.workers = 4;
  c.k0 = 5;
  EXPECT_THROW(validate(c), UsageError);  // K0 > P
  c.k0 = 1;
  c.schedule = "piecewise";
  EXPECT_THROW(validate(c), UsageError);  // no points
  c.schedule = "fixed";
  c.lr_rule = "distance";
  EXPECT_THROW(validate(c), UsageError);  // no C
  c.lr_c = 1;
  EXPECT_NO_THROW(validate(c));
  c.variant = "k-sync";
  EXPECT_THROW(validate(c), UsageError);  // staleness rules on a sync variant
}

}  // namespace
}  // namespace adasync
