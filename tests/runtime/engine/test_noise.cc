// The gradient noise scale (runtime/engine/noise.h): its estimators are
// unbiased on synthetic gradients of known |G|^2 and tr(S), exact without
// noise, paired across updates of one gradient, and reported by AdaSync runs.
// The goodput rule built on it (ALGORITHMS.md §5.1): its model's limits and
// closed form, the fit of L eta, hysteresis, and a run of the convex regime.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/engine/noise.h"
#include "runtime/engine/schedule.h"
#include "runtime/engine/theory.h"
#include "runtime/run/trainer.h"
#include "tests/support/small_data.h"

namespace adasync {
namespace {

// K gradients of batch m: g_l = G + zeta_l, zeta_l ~ N(0, diag(sigma^2) / m),
// so one sample's covariance S has tr(S) = sum sigma^2.
std::vector<std::vector<float>> draw(const std::vector<double>& g, const std::vector<double>& sigma, int k, int m,
                                     std::mt19937_64& rng) {
  std::normal_distribution<double> z(0, 1);
  std::vector<std::vector<float>> out(size_t(k), std::vector<float>(g.size()));
  for (auto& gl : out)
    for (size_t i = 0; i < g.size(); ++i) gl[i] = float(g[i] + sigma[i] / std::sqrt(double(m)) * z(rng));
  return out;
}

TEST(NoiseScale, EstimatorsAreUnbiasedForEveryK) {
  const size_t n = 64;
  const int m = 8;
  std::mt19937_64 rng(7);
  std::vector<double> g(n), sigma(n);
  double g2 = 0, trace = 0;
  for (size_t i = 0; i < n; ++i) {
    g[i] = 0.05 * std::sin(double(i));
    sigma[i] = 0.2 + 0.1 * double(i % 5);
    g2 += g[i] * g[i];
    trace += sigma[i] * sigma[i];
  }
  ThreadPool pool(2);
  for (int k : {2, 3, 8}) {
    const int draws = 10000;
    double sum_g2 = 0, sum_tr = 0, sq_g2 = 0, sq_tr = 0;
    for (int d = 0; d < draws; ++d) {
      const auto gs = draw(g, sigma, k, m, rng);
      std::vector<const float*> p;
      for (const auto& x : gs) p.push_back(x.data());
      const NoiseEstimate e = estimate_noise(noise_sums(p.data(), k, n, d % 2 ? &pool : nullptr), m);
      sum_g2 += e.g2, sq_g2 += e.g2 * e.g2;
      sum_tr += e.trace, sq_tr += e.trace * e.trace;
    }
    const double mg2 = sum_g2 / draws, mtr = sum_tr / draws;
    const double se_g2 = std::sqrt((sq_g2 / draws - mg2 * mg2) / draws);
    const double se_tr = std::sqrt((sq_tr / draws - mtr * mtr) / draws);
    // Unbiased: the mean over draws within 4 standard errors of the truth
    // (a biased estimator, e.g. |G_K|^2 alone, is off by tr(S) / (K m), 30
    // standard errors and more here).
    EXPECT_NEAR(mg2, g2, 4 * se_g2) << "K = " << k;
    EXPECT_NEAR(mtr, trace, 4 * se_tr) << "K = " << k;
    EXPECT_GT(std::abs(g2 + trace / (k * m) - g2), 10 * se_g2) << "the test could not tell a biased estimator";
  }
}

TEST(NoiseScale, WithoutNoiseTheEstimatesAreExact) {
  const size_t n = 1000;
  std::vector<float> a(n);
  double g2 = 0;
  for (size_t i = 0; i < n; ++i) a[i] = float(0.001 * double(i % 17) - 0.008), g2 += double(a[i]) * a[i];
  const std::vector<const float*> same = {a.data(), a.data(), a.data(), a.data()};
  const NoiseEstimate e = estimate_noise(noise_sums(same.data(), 4, n, nullptr), 32);
  EXPECT_NEAR(e.g2, g2, 1e-12 * g2);
  EXPECT_NEAR(e.trace, 0, 1e-9 * g2);
  NoiseScale s;
  EXPECT_TRUE(std::isnan(s.b_noise()));
  s.add(e);
  EXPECT_NEAR(s.b_noise(), 0, 1e-9);
}

TEST(NoiseScale, AveragesEachPartAndTakesTheirRatio) {
  NoiseScale s(0.5);
  s.add({1.0, 10.0});
  EXPECT_DOUBLE_EQ(s.g2(), 1.0);  // bias-corrected: the first estimate itself
  EXPECT_DOUBLE_EQ(s.b_noise(), 10.0);
  s.add({3.0, 10.0});
  // (0.5 * 1 + 0.5 * 3) / ... : averages 2 and 10 with weights 0.25/0.75 corrected.
  EXPECT_DOUBLE_EQ(s.g2(), (0.25 * 1.0 + 0.5 * 3.0) / 0.75);
  EXPECT_DOUBLE_EQ(s.b_noise(), 10.0 / ((0.25 * 1.0 + 0.5 * 3.0) / 0.75));  // the ratio of the averages
  s.add({-5.0, 10.0});  // a noisy |G|^2 below zero drags the average to 0 or less: all noise
  EXPECT_TRUE(std::isinf(s.b_noise()));
  NoiseScale t;
  t.set_state(s.state());
  EXPECT_EQ(t.count(), 3);
  EXPECT_EQ(t.g2(), s.g2());
}

TEST(NoiseScale, SingleGradientUpdatesArePairedWithThePrevious) {
  const size_t n = 4;
  std::vector<float> a = {1, 2, 3, 4}, b = {3, 2, 1, 0}, c = {0, 0, 0, 0};
  NoiseMeter meter(n, 16, nullptr);
  meter.measure({a.data()});
  EXPECT_EQ(meter.scale().count(), 0) << "one gradient alone has no spread";
  meter.measure({b.data()});
  ASSERT_EQ(meter.scale().count(), 1);
  const float* ab[2] = {a.data(), b.data()};
  const NoiseEstimate e = estimate_noise(noise_sums(ab, 2, n, nullptr), 16);
  EXPECT_DOUBLE_EQ(meter.scale().g2(), e.g2);
  EXPECT_DOUBLE_EQ(meter.scale().trace(), e.trace);
  meter.measure({b.data(), c.data()});  // an update of two: measured alone, the pairing starts over
  meter.measure({a.data()});
  EXPECT_EQ(meter.scale().count(), 2);
}

// AdaSync runs measure it at every update and report it (the eval records,
// the K changes, the progress line); others do not pay for it.
TEST(NoiseScale, AdaSyncRunsReportIt) {
  const std::string dir = ::testing::TempDir() + "/noise_metrics";
  std::filesystem::create_directories(dir);
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.05;
  c.workers = 4;
  c.set_variant("k-async");
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.max_updates = 200;
  c.eval_every = "50";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  for (const bool ada : {true, false}) {
    c.schedule = ada ? ScheduleKind::AdaSync : ScheduleKind::Fixed;
    c.metrics = dir + (ada ? "/ada.jsonl" : "/fixed.jsonl");
    Trainer(c, test::small_data()).run();
    std::ifstream in(c.metrics);
    int evals = 0, with = 0;
    for (std::string l; std::getline(in, l);) {
      const nlohmann::json j = nlohmann::json::parse(l);
      if (j.value("event", "") != "eval") continue;
      ++evals;
      if (j.contains("b_noise")) {
        ++with;
        EXPECT_GT(j["b_noise"].get<double>(), 0) << l;
      }
    }
    EXPECT_EQ(evals, 4);
    EXPECT_EQ(with, ada ? 4 : 0);
  }
}

}  // namespace
}  // namespace adasync

namespace adasync {
namespace {

// ------------------------------------------------------------------ the goodput rule
GoodputModel model(double g2, double trace, bool stale = false) {
  GoodputModel m;
  m.workers = 8;
  m.batch = 8;
  m.eta = 0.1;
  m.g2 = g2;
  m.trace = trace;
  m.l_eta = 0.2;
  m.stale = stale;
  return m;
}
double batch_time(int k) { return k / 8.0; }  // k-batch variants, E[X] = 1, P = 8

TEST(Goodput, WithoutNoiseTheFastestUpdatesWin) {
  std::vector<double> rates;
  EXPECT_EQ(goodput_best_k(model(1.0, 0.0), batch_time, &rates), 1);
  for (int k = 2; k <= 8; ++k) EXPECT_LT(rates[size_t(k - 1)], rates[size_t(k - 2)]) << k;
}

TEST(Goodput, TheBestKRisesAsTheGradientFallsTowardTheNoise) {
  std::vector<double> rates;
  int prev = 0, rises = 0;
  for (double g2 = 1.0; g2 > 1e-4; g2 /= 1.5) {
    const int k = goodput_best_k(model(g2, 1.0), batch_time, &rates);
    EXPECT_GE(k, prev) << "|G|^2 " << g2;
    rises += k > prev && prev > 0;
    prev = k;
  }
  EXPECT_GE(rises, 3);
  EXPECT_EQ(prev, 8);
  // The closed form for the k-batch variants: K* about 2e/c (ALGORITHMS.md §5.1).
  const GoodputModel m = model(0.01, 1.0);
  const double c = m.eta * m.g2 * (1 - m.l_eta / 2), e = m.l_eta * m.eta * m.trace / (2 * m.batch);
  const int k = goodput_best_k(m, batch_time, &rates);
  EXPECT_NEAR(k, 2 * e / c, 1.0);
}

TEST(Goodput, StaleGradientsPushTheAsyncVariantsAboveOne) {
  // k-async at P = 16: K = 1 means staleness about 15, which L eta = 0.2 makes useless.
  GoodputModel m = model(1.0, 1.0, true);
  m.workers = 16;
  std::vector<double> rates;
  const int k = goodput_best_k(m, [](int kk) { return theory::harmonic(16) - theory::harmonic(16 - kk); }, &rates);
  EXPECT_GT(k, 1);
  EXPECT_LE(rates[0], 0.0);
}

TEST(Goodput, TheFittedLEtaReproducesTheObservedDecrease) {
  GoodputModel m = model(1.0, 4.0, true);
  for (double d : {0.05, 0.02, 0.0}) {
    m.l_eta = m.fit_l_eta(2, d);
    EXPECT_NEAR(m.progress(2), d, 1e-9) << d;
  }
  EXPECT_DOUBLE_EQ(m.fit_l_eta(2, 1.0), 1e-4);  // faster than eta |G|^2: the smallest L eta
}

// A stationary world (fixed |G|^2, tr(S), L eta; the loss falls by what the
// model says at the current K): one decision (the first, choosing K_0), then
// none, and never down.
TEST(Goodput, AConstantInputNeverOscillates) {
  ScheduleConfig c;
  c.kind = ScheduleKind::AdaSync;
  c.rule = AdaRule::Goodput;
  c.workers = 8;
  c.k = 1;
  c.interval = 1;
  c.batch = 8;
  c.stale = true;
  auto s = make_schedule(c);
  s->set_start_loss(2.0);
  double loss = 2.0;
  int k = s->initial_k(), changes = 0, decisions = 0;
  GoodputModel world;
  world.workers = 8, world.batch = 8, world.eta = 0.1, world.g2 = 0.5, world.trace = 20.0, world.l_eta = 0.2;
  world.stale = true;
  DecisionInputs in;
  in.loss = [&] {
    // A window of 10 updates: its mean is the loss at its middle.
    const double mean = loss - 5 * world.progress(k);
    loss -= 10 * world.progress(k);
    return LossWindow{mean, 0.01, 100, 10};
  };
  in.noise = [] { return GradientNoise{0.5, 20.0}; };
  in.staleness = [] { return NAN; };
  in.lr = [] { return 0.1; };
  in.update_time = [](int k) { return theory::harmonic(8) - theory::harmonic(8 - k); };
  for (int t = 1; t <= 200; ++t) {
    if (auto ch = s->after_update(double(t), k, in)) {
      EXPECT_GE(ch->k, ch->k_prev);
      ++decisions;
      if (ch->k == ch->k_prev) continue;  // a decision that kept K
      EXPECT_EQ(ch->rates.size(), 8u);
      k = ch->k;
      ++changes;
    }
  }
  EXPECT_EQ(changes, 1);
  EXPECT_GT(decisions, 150) << "every decision is a record";
  EXPECT_GT(k, 1);
}

namespace {
// A goodput schedule for P = 8, batch 8 (k-sync: no staleness), deciding every
// time unit, with a clock budget (0: none).
std::unique_ptr<KSchedule> goodput_schedule(double budget = 0) {
  ScheduleConfig c;
  c.kind = ScheduleKind::AdaSync;
  c.rule = AdaRule::Goodput;
  c.workers = 8;
  c.k = 1;
  c.interval = 1;
  c.batch = 8;
  c.budget = budget;
  auto s = make_schedule(c);
  s->set_start_loss(2.0);
  return s;
}
}  // namespace

// At K = 1 the noise estimate pairs consecutive gradients, a step apart: a
// |G|^2 at or below 0 means they agree no more than noise (the noise floor
// of K = 1, Pflug's test). The rule doubles K then, as at a plateau.
TEST(Goodput, AGradientNoBetterThanNoiseDoublesK) {
  auto s = goodput_schedule();
  DecisionInputs in;
  in.loss = [] { return LossWindow{1.0, 0.01, 100, 100}; };
  in.noise = [] { return GradientNoise{-0.3, 20.0}; };
  in.lr = [] { return 0.1; };
  in.update_time = [](int k) { return theory::harmonic(8) - theory::harmonic(8 - k); };
  int k = s->initial_k();
  std::vector<int> ks;
  // After a change the next decision only starts a window at the new K.
  for (int t = 1; t <= 8; ++t)
    if (auto ch = s->after_update(double(t), k, in)) {
      EXPECT_EQ(ch->k, std::min(8, 2 * ch->k_prev)) << ch->reason;
      EXPECT_NE(ch->reason.find("noise floor"), std::string::npos) << ch->reason;
      k = ch->k;
      ks.push_back(k);
    }
  EXPECT_EQ(ks, (std::vector<int>{2, 4, 8, 8, 8}));
}

// After the first decision a move goes at most to twice K (the model's
// optimum at a plateau), only to a K the model expects to make progress, and
// only to one whose relaxation fits in the budget left.
TEST(Goodput, MovesAtMostDoubleKAndOnlyWithTimeToPayOff) {
  // The world: a noise scale that keeps rising (|G|^2 falling), so the model
  // keeps asking for more K; 50 updates per decision.
  auto update_time = [](int k) { return theory::harmonic(8) - theory::harmonic(8 - k); };
  std::vector<int> final_k;
  for (const double budget : {0.0, 60.0}) {
    auto s = goodput_schedule(budget);
    double g2 = 1.0;
    DecisionInputs in;
    in.loss = [] { return LossWindow{1.0, 0.0, 100, 50}; };
    in.noise = [&] { return GradientNoise{g2, 40.0}; };
    in.lr = [] { return 0.1; };
    in.update_time = update_time;
    int k = s->initial_k(), decisions_at_k = 0;
    for (int t = 1; t <= 40; ++t) {
      g2 *= 0.7;
      ++decisions_at_k;  // every time unit is a decision time, one window of 50 updates
      auto ch = s->after_update(double(t), k, in);
      if (!ch) continue;
      if (t > 1 && ch->k > ch->k_prev) {
        EXPECT_LE(ch->k, 2 * ch->k_prev) << ch->reason;
        // Relaxing to the new K's floor: 3 x the updates spent at K, each E[T] of the new K.
        if (budget > 0) {
          EXPECT_LE(3.0 * 50 * decisions_at_k * update_time(ch->k), budget - t) << ch->reason;
        }
      }
      if (ch->k != k) decisions_at_k = 0;
      k = ch->k;
    }
    final_k.push_back(k);
  }
  EXPECT_EQ(final_k[0], 8) << "without a budget the rising noise takes K to P";
  EXPECT_LT(final_k[1], final_k[0]) << "a budget of 60 leaves no time for the larger K";
}

// A run started above K = 1 (--k0) is never taken below it, the first
// decision included, even where the model finds K = 1 fastest (no noise).
TEST(Goodput, TheFirstDecisionNeverGoesBelowKZero) {
  ScheduleConfig c;
  c.kind = ScheduleKind::AdaSync;
  c.rule = AdaRule::Goodput;
  c.workers = 8;
  c.k = 4;
  c.interval = 1;
  c.batch = 8;
  auto s = make_schedule(c);
  s->set_start_loss(2.0);
  DecisionInputs in;
  in.loss = [] { return LossWindow{1.0, 0.0, 100, 100}; };
  in.noise = [] { return GradientNoise{1.0, 0.0}; };
  in.lr = [] { return 0.1; };
  in.update_time = [](int k) { return theory::harmonic(8) - theory::harmonic(8 - k); };
  int decisions = 0;
  for (int t = 1; t <= 5; ++t)
    if (auto ch = s->after_update(double(t), 4, in)) {
      ++decisions;
      EXPECT_GE(ch->k, 4) << ch->reason;
      EXPECT_EQ(ch->rates.size(), 8u);
      if (!ch->rates.empty()) {
        EXPECT_GT(ch->rates[0], ch->rates[3]) << "the model does find K = 1 fastest";
      }
    }
  EXPECT_GT(decisions, 0);
}

// The convex regime's setting (softmax regression, P = 8, batch 8, lr 0.02,
// Exp(1) times, k-async): the rule leaves K = 1 and reaches K >= 4.
TEST(Goodput, AConvexRunReachesKFourOrMore) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "no Fashion-MNIST at /usr/share/datasets/fashion-mnist";
  TrainConfig c;
  c.model = "linear";
  c.batch = 8;
  c.lr = 0.02;
  c.workers = 8;
  c.set_variant("k-async");
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.time_budget = 500;
  c.eval_every = "0";
  c.schedule = ScheduleKind::AdaSync;
  c.adasync_rule = AdaRule::Goodput;
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.threads = 1;
  const RunSummary s = Trainer(c).run();
  ASSERT_FALSE(s.k_changes.empty());
  EXPECT_EQ(s.k_changes.front().rule, "goodput");
  EXPECT_GE(s.k, 4);
}

}  // namespace
}  // namespace adasync

namespace adasync {
namespace {

// P = 16, Pareto times, k-async: K = 1 would mean staleness about 15, so the
// first decision (no hand-set K_0: a warm-up at K = P - 1) is above 1.
TEST(Goodput, UnderParetoTimesAtSixteenWorkersTheFirstKIsAboveOne) {
  if (!std::filesystem::exists("/usr/share/datasets/fashion-mnist"))
    GTEST_SKIP() << "no Fashion-MNIST at /usr/share/datasets/fashion-mnist";
  TrainConfig c;
  c.model = "linear";
  c.batch = 8;
  c.lr = 0.02;
  c.workers = 16;
  c.set_variant("k-async");
  c.clock = ClockKind::Virtual;
  c.straggler = "pareto:scale=1,shape=1.5";
  c.time_budget = 100;
  c.eval_every = "0";
  c.schedule = ScheduleKind::AdaSync;
  c.adasync_rule = AdaRule::Goodput;
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.threads = 1;
  const RunSummary s = Trainer(c).run();
  ASSERT_FALSE(s.k_changes.empty());
  EXPECT_EQ(s.k_changes.front().k_prev, 15) << "K_0 is measured after a warm-up at K = P - 1";
  EXPECT_GT(s.k_changes.front().k, 1);
  EXPECT_LT(s.k_changes.front().k, 15);
  EXPECT_NE(s.k_changes.front().reason.find("first decision"), std::string::npos);
}

}  // namespace
}  // namespace adasync
