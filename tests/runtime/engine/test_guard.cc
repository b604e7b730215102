// The stability guard (runtime/engine/guard.h): doubles K when the counted
// losses rise half again above where K began, reads only gradients computed
// after its last change, and never fires on a loss that falls or sits still.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "runtime/engine/guard.h"

namespace adasync {
namespace {

constexpr int kP = 16;

// Feeds one counted loss per update (version v, computed at v - lag) and
// checks after each; returns the first change (version in *at) or nothing.
std::optional<KChange> feed(StabilityGuard& g, int k, int64_t from, int64_t to, int64_t lag,
                            const std::function<double(int64_t)>& loss, int64_t* at = nullptr) {
  for (int64_t v = from; v < to; ++v) {
    g.on_loss(v - lag, float(loss(v)));
    if (auto ch = g.check(double(v), v, k)) {
      if (at) *at = v;
      return ch;
    }
  }
  return std::nullopt;
}

TEST(StabilityGuard, NeverFiresOnAFallingOrSteadyNoisyLoss) {
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> noise(0, 0.5);
    StabilityGuard g(kP, 2.0);
    g.set_reference(2.0);
    // From 2 down to 0.5, then flat at 0.5 with noise of a mini-batch loss (sd 0.5, a coefficient of variation of 1).
    auto loss = [&](int64_t v) { return std::max(0.0, std::max(0.5, 2.0 - 1.5 * double(v) / 5000) + noise(rng)); };
    EXPECT_FALSE(feed(g, 1, 0, 50000, 15, loss)) << "seed " << seed;
  }
}

TEST(StabilityGuard, DoublesKWithinARoundOfAnExponentialRise) {
  StabilityGuard g(kP, 2.0);
  g.set_reference(1.0);
  int64_t at = 0;
  // Stable for 100 updates, then the loss grows 10% per update (delayed gradient descent past its bound).
  auto loss = [](int64_t v) { return v < 100 ? 0.9 : 0.9 * std::pow(1.1, double(v - 100)); };
  auto ch = feed(g, 2, 0, 1000, 15, loss, &at);
  ASSERT_TRUE(ch);
  EXPECT_EQ(ch->k_prev, 2);
  EXPECT_EQ(ch->k, 4);
  EXPECT_EQ(ch->rule, "guard");
  EXPECT_NE(ch->reason.find("stability guard"), std::string::npos);
  // The mean of the last 16 passes 1.5 x 1.0 about 13 updates into the rise (1.1^n averaged over 16).
  EXPECT_GT(at, 100);
  EXPECT_LE(at, 100 + kP);
}

TEST(StabilityGuard, ReadsOnlyGradientsComputedAfterItsChangeAndFiresAgainOnlyWhileTheLossRises) {
  StabilityGuard g(kP, 2.0);
  g.set_reference(1.0);
  int64_t at = 0;
  auto rise = [](int64_t v) { return 0.9 * std::pow(1.1, double(v)); };
  ASSERT_TRUE(feed(g, 1, 0, 1000, 0, rise, &at));
  // Stale gradients from before the change, however large their losses, are not read.
  for (int64_t v = at + 1; v < at + 200; ++v) {
    g.on_loss(at - 1, 1e6f);
    EXPECT_FALSE(g.check(double(v), v, 2)) << v;
  }
  // Fresh ones recovering (falling, though still far above the reference) do not fire again.
  const double peak = rise(at);
  EXPECT_FALSE(feed(g, 2, at + 200, at + 400, 0, [&](int64_t v) { return peak * std::exp(-0.01 * double(v - at - 200)); }));
  // Still rising past where it fired: doubles again, up to P and no further.
  StabilityGuard h(kP, 2.0);
  h.set_reference(1.0);
  int k = 1;
  int64_t v = 0;
  while (auto ch = feed(h, k, v, v + 1000, 0, rise, &at)) {
    EXPECT_EQ(ch->k, std::min(kP, 2 * k));
    k = ch->k, v = at + 1;
  }
  EXPECT_EQ(k, kP);
}

TEST(StabilityGuard, WaitsForAReferenceAndResumesFromItsState) {
  StabilityGuard g(kP, 2.0);
  EXPECT_FALSE(g.has_reference());
  auto rise = [](int64_t v) { return 0.9 * std::pow(1.1, double(v)); };
  EXPECT_FALSE(feed(g, 1, 0, 100, 0, rise)) << "no reference, no test";
  g.set_reference(NAN);
  EXPECT_FALSE(g.has_reference()) << "a NaN window keeps the last reference";
  g.set_reference(1.0);
  // Midway through a rise, a copy restored from the state decides as the original does.
  for (int64_t v = 0; v < 5; ++v) g.on_loss(v, float(rise(v)));
  StabilityGuard copy(kP, 2.0);
  copy.set_state(g.state());
  int64_t a = 0, b = 0;
  auto ca = feed(g, 1, 5, 1000, 0, rise, &a), cb = feed(copy, 1, 5, 1000, 0, rise, &b);
  ASSERT_TRUE(ca && cb);
  EXPECT_EQ(a, b);
  EXPECT_EQ(ca->reason, cb->reason);
}

}  // namespace
}  // namespace adasync
