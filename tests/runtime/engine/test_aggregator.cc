// The six variants as a state machine, driven by scripted arrivals with
// exact-answer gradients: worker w's gradient is 2^w in every coordinate, so
// every average of counted gradients is exact in float and the new
// parameters can be compared with ==.
#include <gtest/gtest.h>

#include <cmath>

#include "runtime/engine/aggregator.h"

namespace adasync {
namespace {

struct Rig {
  explicit Rig(Variant v, int workers, int k, int64_t max_staleness = -1) {
    OptimizerConfig oc;
    oc.momentum = 0;  // plain SGD at lr 1: w_{j+1} = w_j - mean(counted)
    const std::vector<float> init(kN, 0.f);
    ps = std::make_unique<ParamServer>(kN, init.data(), std::make_unique<HostOptimizer>(oc, kN, nullptr), 2 * workers);
    AggregatorConfig ac;
    ac.variant = v;
    ac.workers = workers;
    ac.k = k;
    ac.max_staleness = max_staleness;
    agg = std::make_unique<Aggregator>(ac, *ps);
  }
  Aggregator::PushResult push(int worker, int64_t tau, bool finite = true) {
    Push p;
    p.worker = worker;
    p.tau = tau;
    p.finite = finite;
    p.slot = ps->acquire_slot();
    for (size_t i = 0; i < kN; ++i) p.slot.data()[i] = std::ldexp(1.f, worker);
    return agg->push(std::move(p));
  }
  Aggregator::UpdateResult update() { return agg->update(UpdateRates{1.f, {}}); }
  float param() const { return ps->latest()->data[0]; }

  static constexpr size_t kN = 3;
  std::unique_ptr<ParamServer> ps;
  std::unique_ptr<Aggregator> agg;
};

TEST(Aggregator, KSyncCountsTheFirstKAtTheCurrentVersionThenCancelsAndRestartsAll) {
  Rig r(Variant::KSync, 4, 2);
  auto a = r.push(1, 0);
  EXPECT_TRUE(a.counted);
  EXPECT_FALSE(a.update_due);
  EXPECT_EQ(a.next, Next::Wait);
  auto b = r.push(3, 0);
  EXPECT_TRUE(b.update_due);
  auto u = r.update();
  EXPECT_TRUE(u.cancel_all);
  EXPECT_EQ(u.wake, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(r.param(), -(2.f + 8.f) / 2);
  EXPECT_EQ(u.snapshot->version, 1);
  ASSERT_EQ(u.applied.size(), 2u);
  EXPECT_EQ(u.applied[0].worker, 1);
  EXPECT_EQ(u.applied[1].worker, 3);
  EXPECT_EQ(u.applied[0].staleness, 0);
  // A late result computed at version 0 never counts.
  auto late = r.push(0, 0);
  EXPECT_FALSE(late.counted);
  EXPECT_EQ(late.drop, Drop::Stale);
  EXPECT_EQ(late.next, Next::Wait);  // its pull is already pending from the update
  EXPECT_EQ(r.agg->stats().dropped_stale, 1);
  EXPECT_EQ(r.ps->free_slots(), 8);  // every slot returned
}

TEST(Aggregator, SyncWaitsForAllWorkersWhateverK) {
  Rig r(Variant::Sync, 4, 1);
  EXPECT_EQ(r.agg->k(), 4);
  EXPECT_FALSE(r.push(0, 0).update_due);
  EXPECT_FALSE(r.push(1, 0).update_due);
  EXPECT_FALSE(r.push(2, 0).update_due);
  EXPECT_TRUE(r.push(3, 0).update_due);
  r.update();
  EXPECT_EQ(r.param(), -(1.f + 2.f + 4.f + 8.f) / 4);
}

TEST(Aggregator, KBatchSyncTakesAnyKBatchesAtTheCurrentVersionAndKeepsPushersBusy) {
  Rig r(Variant::KBatchSync, 2, 4);
  auto a = r.push(0, 0);
  EXPECT_TRUE(a.counted);
  EXPECT_EQ(a.next, Next::Continue);  // another mini-batch at the same w_j, no pull
  EXPECT_TRUE(r.push(0, 0).counted);  // the same worker counts again
  EXPECT_TRUE(r.push(1, 0).counted);
  EXPECT_TRUE(r.push(0, 0).update_due);
  auto u = r.update();
  EXPECT_TRUE(u.cancel_all);
  EXPECT_EQ(u.wake.size(), 2u);
  EXPECT_EQ(r.param(), -(1.f + 1.f + 2.f + 1.f) / 4);
  EXPECT_EQ(r.push(1, 0).drop, Drop::Stale);
}

TEST(Aggregator, AsyncAppliesEveryGradientAndRecordsItsStaleness) {
  Rig r(Variant::Async, 3, 5);
  EXPECT_EQ(r.agg->k(), 1);
  // All three start at version 0; they arrive one after another.
  for (int w = 0; w < 3; ++w) {
    auto p = r.push(w, 0);
    EXPECT_TRUE(p.update_due);
    auto u = r.update();
    EXPECT_FALSE(u.cancel_all);
    EXPECT_EQ(u.wake, (std::vector<int>{w}));  // only the pusher pulls again
    EXPECT_EQ(u.applied[0].staleness, w);
  }
  EXPECT_EQ(r.param(), -(1.f + 2.f + 4.f));
  EXPECT_EQ(r.agg->stats().staleness_max, 2);
  EXPECT_EQ(r.agg->stats().staleness_sum, 3.0);
}

TEST(Aggregator, KAsyncNeedsKWorkersWakesOnlyThemAndNeverCancels) {
  Rig r(Variant::KAsync, 4, 2);
  EXPECT_EQ(r.push(2, 0).next, Next::Wait);
  EXPECT_TRUE(r.push(0, 0).update_due);
  auto u = r.update();
  EXPECT_FALSE(u.cancel_all);
  EXPECT_EQ(u.wake, (std::vector<int>{0, 2}));
  // Workers 1 and 3 were still computing at version 0: stale by one, still counted.
  EXPECT_TRUE(r.push(3, 0).counted);
  EXPECT_TRUE(r.push(1, 0).update_due);
  u = r.update();
  EXPECT_EQ(u.wake, (std::vector<int>{1, 3}));
  EXPECT_EQ(u.applied[0].staleness, 1);
  EXPECT_EQ(r.param(), -(4.f + 1.f) / 2 - (8.f + 2.f) / 2);
}

TEST(Aggregator, KBatchAsyncTakesAnyKGradientsAndNeverIdlesAWorker) {
  Rig r(Variant::KBatchAsync, 2, 2);
  auto a = r.push(1, 0);
  EXPECT_EQ(a.next, Next::Pull);
  EXPECT_TRUE(r.push(1, 0).update_due);  // the same worker twice
  auto u = r.update();
  EXPECT_FALSE(u.cancel_all);
  EXPECT_TRUE(u.wake.empty());
  EXPECT_EQ(r.param(), -2.f);
}

TEST(Aggregator, StalenessBoundDropsExactlyTheOldOnes) {
  Rig r(Variant::Async, 2, 1, /*max_staleness=*/1);
  for (int i = 0; i < 3; ++i) {
    r.push(0, i);
    r.update();
  }
  ASSERT_EQ(r.agg->version(), 3);
  EXPECT_TRUE(r.agg->accepts(2));
  EXPECT_FALSE(r.agg->accepts(1));
  auto ok = r.push(1, 2);  // staleness 1: within the bound
  EXPECT_TRUE(ok.counted);
  r.update();
  auto old = r.push(1, 2);  // now staleness 2
  EXPECT_FALSE(old.counted);
  EXPECT_EQ(old.drop, Drop::OverBound);
  EXPECT_EQ(old.next, Next::Pull);
  EXPECT_EQ(r.agg->stats().dropped_bound, 1);
}

TEST(Aggregator, NonFiniteGradientsAreDroppedAndTheWorkerGoesOn) {
  Rig s(Variant::KSync, 2, 2);
  auto a = s.push(0, 0, false);
  EXPECT_EQ(a.drop, Drop::NonFinite);
  EXPECT_EQ(a.next, Next::Continue);  // a sync worker tries another batch at w_j
  Rig r(Variant::KAsync, 2, 1);
  auto b = r.push(0, 0, false);
  EXPECT_EQ(b.drop, Drop::NonFinite);
  EXPECT_EQ(b.next, Next::Pull);
  EXPECT_EQ(r.agg->stats().dropped_nonfinite, 1);
  EXPECT_EQ(r.param(), 0.f);
}

TEST(Aggregator, KChangesBetweenUpdatesAndIsClampedToP) {
  Rig r(Variant::KAsync, 4, 1);
  EXPECT_TRUE(r.push(0, 0).update_due);
  r.update();
  r.agg->set_k(3);
  EXPECT_FALSE(r.push(0, 1).update_due);
  EXPECT_FALSE(r.push(1, 1).update_due);
  EXPECT_TRUE(r.push(2, 1).update_due);
  r.update();
  r.agg->set_k(99);
  EXPECT_EQ(r.agg->k(), 4);
  r.agg->set_k(0);
  EXPECT_EQ(r.agg->k(), 1);
}

TEST(Aggregator, CustomWeightsReplaceTheMean) {
  Rig r(Variant::KAsync, 2, 2);
  r.push(0, 0);
  r.push(1, 0);
  r.agg->update(UpdateRates{0.5f, {1.f, 0.25f}});
  EXPECT_EQ(r.param(), -0.5f * (1.f * 1.f + 0.25f * 2.f));
}

TEST(Variants, ParseAndNameRoundTrip) {
  for (auto v : {Variant::Sync, Variant::KSync, Variant::KBatchSync, Variant::Async, Variant::KAsync,
                 Variant::KBatchAsync})
    EXPECT_EQ(parse_variant(to_string(v)), v);
  EXPECT_THROW(parse_variant("ksync"), UsageError);
}

}  // namespace
}  // namespace adasync
