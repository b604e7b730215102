// The virtual clock against the runtime theory, and both clocks end to end
// on a small problem: every variant runs, with the staleness and the drops
// its rule implies.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "runtime/drivers/simulate.h"
#include "runtime/engine/theory.h"
#include "runtime/run/trainer.h"
#include "tests/support/files.h"
#include "tests/support/small_data.h"

namespace adasync {
// CTest shows a case by its printed parameter: the variant's name, not its bytes.
inline void PrintTo(Variant v, std::ostream* os) { *os << to_string(v); }

namespace {
using test::read_all;

TEST(Theory, HarmonicNumbersAndTheWorkedExample) {
  EXPECT_DOUBLE_EQ(theory::harmonic(0), 0);
  EXPECT_NEAR(theory::harmonic(8), 2.717857, 1e-6);
  const auto e = parse_straggler("exp:mean=1", "--straggler");
  // ALGORITHMS.md section 3: P = 8, mu = 1.
  const double ks[] = {0.125, 0.268, 0.635, 2.718};
  const int kk[] = {1, 2, 4, 8};
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(theory::expected_time(Variant::KSync, 8, kk[i], e), ks[i], 1e-3);
    EXPECT_NEAR(theory::expected_time(Variant::KAsync, 8, kk[i], e), ks[i], 1e-3);
    EXPECT_NEAR(theory::expected_time(Variant::KBatchSync, 8, kk[i], e), kk[i] / 8.0, 1e-12);
    EXPECT_NEAR(theory::expected_time(Variant::KBatchAsync, 8, kk[i], e), kk[i] / 8.0, 1e-12);
  }
  EXPECT_NEAR(theory::expected_time(Variant::Sync, 8, 1, e) / theory::expected_time(Variant::Async, 8, 1, e), 21.74,
              0.01);
  // Shifted exponential: a closed form for k-sync and k-batch-async only.
  const auto s = parse_straggler("shifted-exp:shift=0.5,mean=1", "--straggler");
  EXPECT_NEAR(theory::expected_time(Variant::KSync, 8, 2, s), 0.5 + 0.268, 1e-3);
  EXPECT_NEAR(theory::expected_time(Variant::KBatchAsync, 8, 2, s), 2 * 1.5 / 8, 1e-12);
  EXPECT_TRUE(std::isnan(theory::expected_time(Variant::KAsync, 8, 2, s)));
}

// 20,000 updates per case, P = 8, Exp(1): within 3% of the closed form.
class VirtualVsTheory : public ::testing::TestWithParam<std::tuple<Variant, int>> {};

TEST_P(VirtualVsTheory, MeanTimePerUpdateWithinThreePercent) {
  const auto [v, k] = GetParam();
  const auto spec = parse_straggler("exp:mean=1", "--straggler");
  const double expect = theory::expected_time(v, 8, k, spec);
  const auto est = theory::simulate(v, 8, k, spec, 20000, 42);
  ASSERT_EQ(est.updates, 20000);
  EXPECT_NEAR(est.mean / expect, 1.0, 0.03) << to_string(v) << " K=" << k << ": simulated " << est.mean
                                            << " closed form " << expect << " (std err " << est.std_err << ")";
}

INSTANTIATE_TEST_SUITE_P(AllVariants, VirtualVsTheory,
                         ::testing::Combine(::testing::Values(Variant::Sync, Variant::KSync, Variant::KBatchSync,
                                                              Variant::Async, Variant::KAsync, Variant::KBatchAsync),
                                            ::testing::Values(1, 2, 4, 8)),
                         [](const auto& info) {
                           std::string n = to_string(std::get<0>(info.param));
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n + "_K" + std::to_string(std::get<1>(info.param));
                         });

TEST(VirtualClock, ConstantTimesGiveTheExactSchedule) {
  // Every worker takes exactly 2 s: k-sync updates every 2 s, async P times as often.
  const auto c = parse_straggler("const:value=2", "--straggler");
  EXPECT_NEAR(theory::simulate(Variant::KSync, 4, 3, c, 100, 1).mean, 2.0, 1e-12);
  EXPECT_NEAR(theory::simulate(Variant::KBatchAsync, 4, 2, c, 100, 1).mean, 1.0, 1e-12);
}

using test::small_data;

TrainConfig small_config(const std::string& variant, int k, const std::string& clock) {
  TrainConfig c;
  c.model = "linear";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.1;
  c.momentum = 0;
  c.workers = 4;
  c.set_variant(variant);
  c.k = k;
  c.clock = parse_enum<ClockKind>(clock, "--clock");
  c.max_updates = 150;
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.threads = 2;
  c.straggler = clock == "real" ? "exp:mean=2ms" : "exp:mean=1";
  return c;
}

// --slowdown multiplies each worker's draws (the last factor repeats): under
// async with constant times, worker 0 at 1 s pushes twice as often as
// workers 1 and 2 at 2 s.
TEST(VirtualClock, SlowdownFactorsScaleEachWorkersTimes) {
  TrainConfig c = small_config("async", 1, "virtual");
  c.workers = 3;
  c.max_updates = 120;
  c.straggler = "const:value=1";
  c.slowdown = SlowdownFlag(parse_slowdown("1,2", "--slowdown"), "1,2");
  Trainer t(c, small_data());
  const RunSummary s = t.run();
  const auto& p = s.stats.pushes_by_worker;
  ASSERT_EQ(p.size(), 3u);
  EXPECT_NEAR(double(p[0]), 2.0 * double(p[1]), 2.0);
  EXPECT_NEAR(double(p[1]), double(p[2]), 1.0);
  EXPECT_NEAR(s.time, 60.0, 1.0);
}

class EveryVariant : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(EveryVariant, TrainsAndRecordsTheStalenessItsRuleImplies) {
  const auto [variant, clock] = GetParam();
  Trainer t(small_config(variant, 2, clock), small_data());
  const RunSummary s = t.run();
  EXPECT_EQ(s.updates, 150);
  EXPECT_GT(s.final_eval.accuracy, 0.6) << variant << " on the " << clock << " clock";
  const Variant v = parse_variant(variant);
  if (is_synchronous(v)) {
    EXPECT_EQ(s.stats.staleness_max, 0);
  } else {
    EXPECT_GT(s.stats.staleness_max, 0);
  }
  if (v == Variant::KSync || v == Variant::KBatchSync) {
    EXPECT_GT(s.stats.cancelled + s.stats.dropped_stale, 0);  // the slow ones were cut off
  }
  if (!is_synchronous(v)) {
    EXPECT_EQ(s.stats.cancelled, 0);
    EXPECT_EQ(s.stats.dropped(), 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Clocks, EveryVariant,
                         ::testing::Combine(::testing::Values("sync", "k-sync", "k-batch-sync", "async", "k-async",
                                                              "k-batch-async"),
                                            ::testing::Values("virtual", "real")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (auto& c : n)
                             if (c == '-') c = '_';
                           return n;
                         });

TEST(VirtualClock, SameSeedSameMetricsDifferentSeedDifferentRun) {
  const std::string dir = ::testing::TempDir();
  auto run = [&](uint64_t seed, const std::string& name) {
    TrainConfig c = small_config("k-async", 2, "virtual");
    c.seed = seed;
    c.eval_every = "25";
    c.metrics = dir + "/" + name;
    Trainer t(c, small_data());
    return t.run();
  };
  const auto a = run(7, "a.jsonl"), b = run(7, "b.jsonl"), c = run(8, "c.jsonl");
  EXPECT_EQ(a.checksum, b.checksum);
  EXPECT_NE(a.checksum, c.checksum);
  // Identical metrics apart from wall-clock fields and the start record's
  // run_id (each invocation's own: what a resumed run's metrics continue).
  auto strip = [](std::string s) {
    std::string out;
    std::istringstream in(s);
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      j.erase("wall");
      j.erase("eta_s");  // wall seconds left: the machine's speed, not the run's
      if (j.value("event", "") == "start") {
        EXPECT_EQ(j.value("run_id", "").size(), 16u) << line;
        j.erase("run_id");
      }
      out += j.dump() + "\n";
    }
    return out;
  };
  const std::string ma = strip(read_all(dir + "/a.jsonl"));
  EXPECT_GT(std::count(ma.begin(), ma.end(), '\n'), 5);
  EXPECT_EQ(ma, strip(read_all(dir + "/b.jsonl")));
}

TEST(RealClock, EvaluationsRunWhileWorkersTrain) {
  const std::string path = ::testing::TempDir() + "/real_metrics.jsonl";
  TrainConfig c = small_config("k-batch-async", 2, "real");
  c.max_updates = 300;
  c.eval_every = "20";
  c.metrics = path;
  Trainer t(c, small_data());
  t.run();
  std::ifstream in(path);
  std::string line;
  int evals = 0;
  int64_t last_updates = -1;
  while (std::getline(in, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] != "eval") continue;
    ++evals;
    EXPECT_GT(j["updates"].get<int64_t>(), last_updates);
    last_updates = j["updates"];
    for (const char* key : {"time", "updates", "samples", "loss", "test_accuracy", "samples_per_s", "k",
                            "staleness_mean", "staleness_max", "dropped", "cancelled"})
      EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_GE(evals, 3);
}

// Each evaluation says how much of the run is done (the largest fraction over
// its limits) and, once it has a rate, the wall seconds left; without a limit
// neither. On both clocks.
TEST(Progress, EvaluationsCarryTheFractionDoneAndTheTimeLeft) {
  for (const std::string clock : {"virtual", "real"}) {
    const std::string path = ::testing::TempDir() + "/progress_" + clock + ".jsonl";
    TrainConfig c = small_config("k-async", 2, clock);
    c.max_updates = 200;
    c.eval_every = "50";
    c.metrics = path;
    Trainer(c, small_data()).run();
    std::ifstream in(path);
    std::vector<nlohmann::json> evals;
    for (std::string line; std::getline(in, line);) {
      auto j = nlohmann::json::parse(line);
      if (j["event"] == "eval" || j["event"] == "final") evals.push_back(j);
    }
    ASSERT_GE(evals.size(), 4u) << clock;
    double last = -1;
    for (const auto& j : evals) {
      ASSERT_TRUE(j.contains("fraction_done")) << clock;
      const double f = j["fraction_done"];
      EXPECT_NEAR(f, double(j["updates"].get<int64_t>()) / 200.0, 1e-12) << clock;
      EXPECT_GE(f, last) << clock;  // the eval at 200 and the final one share 1
      last = f;
      ASSERT_TRUE(j.contains("eta_s")) << clock;
      EXPECT_GE(j["eta_s"].get<double>(), 0.0) << clock;
    }
    EXPECT_EQ(evals.back()["fraction_done"].get<double>(), 1.0) << clock;
    EXPECT_EQ(evals.back()["eta_s"].get<double>(), 0.0) << clock;
  }
  // A time budget on the virtual clock: the fraction is the clock's.
  const std::string path = ::testing::TempDir() + "/progress_budget.jsonl";
  TrainConfig c = small_config("k-async", 2, "virtual");
  c.max_updates = 0;
  c.time_budget = 40;
  c.eval_every = "10s";
  c.metrics = path;
  Trainer(c, small_data()).run();
  std::ifstream in(path);
  int seen = 0;
  for (std::string line; std::getline(in, line);) {
    auto j = nlohmann::json::parse(line);
    if (j["event"] != "eval") continue;
    ++seen;
    EXPECT_NEAR(j["fraction_done"].get<double>(), j["time"].get<double>() / 40, 1e-9);
  }
  EXPECT_GE(seen, 2);
}

TEST(Trace, RecordThenReplayReproducesTheParametersBitForBit) {
  const std::string dir = ::testing::TempDir();
  for (const std::string clock : {"virtual", "real"}) {
    TrainConfig c = small_config("k-async", 2, clock);
    c.trace = dir + "/trace_" + clock + ".jsonl";
    Trainer rec(c, small_data());
    const RunSummary a = rec.run();
    TrainConfig r;
    r.replay = c.trace;
    r.progress = Progress::None;
    r.devices = Devices::Cpu;
    Trainer rep(r, small_data());
    const RunSummary b = rep.run();
    EXPECT_EQ(b.updates, a.updates) << clock;
    EXPECT_EQ(a.checksum, b.checksum) << clock;
    EXPECT_EQ(a.params, b.params) << clock;
  }
}

TEST(Trace, ReplayRejectsADamagedTrace) {
  const std::string path = ::testing::TempDir() + "/bad_trace.jsonl";
  std::ofstream(path) << "{\"not\":\"a trace\"}\n";
  TrainConfig r;
  r.replay = path;
  r.progress = Progress::None;
  Trainer rep(r, small_data());
  try {
    rep.run();
    FAIL() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos);
  }
}

// The parameter server as a single server with service time S per update
// (an M/G/1-style queue): with one async worker an update cycle is X + S
// (renewal, E = E[X] + S); with many, the PS saturates at 1/S updates per
// unit time; in between, throughput is under both min(P/(E[X] + S), 1/S).
TEST(VirtualClock, ParameterServerServiceTimeFormsAQueue) {
  StragglerSpec exp1;
  exp1.kind = StragglerSpec::Kind::Exp;
  exp1.a = 1.0;
  for (double S : {0.1, 0.5}) {
    const auto one = theory::simulate(Variant::Async, 1, 1, exp1, 20000, 5, 0, S);
    EXPECT_NEAR(one.mean, 1.0 + S, 4 * one.std_err + 1e-3) << "S " << S;
    const auto many = theory::simulate(Variant::Async, 64, 1, exp1, 20000, 5, 0, S);
    EXPECT_NEAR(many.mean, S, 0.01 * S) << "S " << S;  // saturated: one update per S
    for (int P : {2, 4, 8}) {
      const auto e = theory::simulate(Variant::Async, P, 1, exp1, 20000, 5, 0, S);
      EXPECT_GE(e.mean, std::max(S, (1.0 + S) / P) - 4 * e.std_err) << "P " << P << " S " << S;
    }
  }
  // Constant times: exact. P = 3 workers, X = 1, S = 0.5: the PS is the
  // bottleneck (3 / 1.5 = 2 > 1 / 0.5 = 2: balanced), one update every 0.5.
  StragglerSpec c1;
  c1.kind = StragglerSpec::Kind::Const;
  c1.a = 1.0;
  EXPECT_NEAR(theory::simulate(Variant::Async, 3, 1, c1, 3000, 1, 0, 0.5).mean, 0.5, 1e-3);
  EXPECT_NEAR(theory::simulate(Variant::Async, 1, 1, c1, 3000, 1, 0, 0.5).mean, 1.5, 1e-3);
  // No service time: unchanged.
  EXPECT_NEAR(theory::simulate(Variant::Async, 4, 1, c1, 100, 1).mean, 0.25, 1e-12);
}

}  // namespace
}  // namespace adasync
