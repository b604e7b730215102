// Host optimizers against straightforward double-precision references over
// many steps on random inputs, with several gradients per step, weight
// decay, in-place and out-of-place, and any thread count (bit-identical).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "runtime/engine/optimizer.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

struct RefState {
  std::vector<double> w, m, v, vh;
};

// The rules exactly as ALGORITHMS.md / optimizer.h state them, in double.
void reference_step(const OptimizerConfig& c, RefState& s, const std::vector<std::vector<float>>& g,
                    const std::vector<float>& coef, double lr, int64_t step) {
  const size_t n = s.w.size();
  double a = lr;
  if ((c.name == OptimizerKind::Adam || c.name == OptimizerKind::AmsGrad) && c.bias_correction)
    a = lr * std::sqrt(1 - std::pow(c.beta2, double(step))) / (1 - std::pow(c.beta1, double(step)));
  for (size_t i = 0; i < n; ++i) {
    double gi = 0;
    for (size_t l = 0; l < g.size(); ++l) gi += double(coef[l]) * g[l][i];
    gi += c.weight_decay * s.w[i];
    if (c.name == OptimizerKind::Sgd) {
      if (c.momentum == 0) {
        s.w[i] -= lr * gi;
      } else {
        s.m[i] = c.momentum * s.m[i] + gi;
        s.w[i] -= lr * (c.nesterov ? gi + c.momentum * s.m[i] : s.m[i]);
      }
    } else {
      s.m[i] = c.beta1 * s.m[i] + (1 - c.beta1) * gi;
      s.v[i] = c.beta2 * s.v[i] + (1 - c.beta2) * gi * gi;
      double denom = s.v[i];
      if (c.name == OptimizerKind::AmsGrad) denom = s.vh[i] = std::max(s.vh[i], s.v[i]);
      s.w[i] -= a * s.m[i] / (std::sqrt(denom) + c.eps);
    }
  }
}

struct OptCase {
  const char* name;
  double momentum;
  bool nesterov;
  bool bias;
  double wd;
};
// CTest names each case by its printed parameter.
void PrintTo(const OptCase& c, std::ostream* os) {
  *os << c.name << " momentum " << c.momentum << (c.nesterov ? " nesterov" : "") << (c.bias ? "" : " no bias") << " wd "
      << c.wd;
}

class Optimizers : public ::testing::TestWithParam<OptCase> {};

TEST_P(Optimizers, MatchTheDoublePrecisionReferenceOverManySteps) {
  const OptCase oc = GetParam();
  OptimizerConfig c;
  c.name = parse_enum<OptimizerKind>(oc.name, "name");
  c.momentum = oc.momentum;
  c.nesterov = oc.nesterov;
  c.bias_correction = oc.bias;
  c.weight_decay = oc.wd;
  const size_t n = 5003;  // several blocks, odd tail
  ThreadPool pool(3);
  HostOptimizer opt(c, n, &pool);
  auto w0 = test::random_vector<float>(n, 1);
  RefState ref;
  ref.w.assign(w0.begin(), w0.end());
  ref.m.assign(n, 0);
  ref.v.assign(n, 0);
  ref.vh.assign(n, 0);
  std::vector<float> w = w0, w_next(n);
  for (int64_t step = 1; step <= 200; ++step) {
    const int k = 1 + int(step % 4);  // 1..4 gradients per update
    std::vector<std::vector<float>> g;
    std::vector<const float*> gp;
    std::vector<float> coef;
    for (int l = 0; l < k; ++l) {
      g.push_back(test::random_vector<float>(n, uint64_t(step * 10 + l), -0.5, 0.5));
      gp.push_back(g.back().data());
      coef.push_back(1.0f / float(k) * (l % 2 ? 0.5f : 1.0f));
    }
    const float lr = c.name == OptimizerKind::Sgd ? 0.01f : 1e-3f;
    // Alternate in-place and out-of-place updates.
    if (step % 2) {
      opt.step(w.data(), w.data(), gp.data(), coef.data(), k, lr);
    } else {
      opt.step(w.data(), w_next.data(), gp.data(), coef.data(), k, lr);
      w.swap(w_next);
    }
    reference_step(c, ref, g, coef, lr, step);
  }
  EXPECT_EQ(opt.steps(), 200);
  EXPECT_LT(test::max_rel_error(w, ref.w), 2e-5) << oc.name;
}

INSTANTIATE_TEST_SUITE_P(All, Optimizers,
                         ::testing::Values(OptCase{"sgd", 0, false, true, 0}, OptCase{"sgd", 0.9, false, true, 1e-3},
                                           OptCase{"sgd", 0.9, true, true, 0}, OptCase{"adam", 0, false, true, 0},
                                           OptCase{"adam", 0, false, false, 1e-4},
                                           OptCase{"amsgrad", 0, false, true, 0},
                                           OptCase{"amsgrad", 0, false, false, 0}),
                         [](const auto& info) {
                           const OptCase& c = info.param;
                           return std::string(c.name) + (c.momentum > 0 ? "_momentum" : "") +
                                  (c.nesterov ? "_nesterov" : "") + (c.bias ? "" : "_nobias") +
                                  (c.wd > 0 ? "_decay" : "");
                         });

TEST(Optimizers, AmsGradKeepsTheRunningMaximumOfV) {
  OptimizerConfig c;
  c.name = OptimizerKind::AmsGrad;
  HostOptimizer opt(c, 1, nullptr);
  float w = 0;
  const float big = 1.f, small = 1e-3f;
  const float* g = &big;
  const float coef = 1.f;
  opt.step(&w, &w, &g, &coef, 1, 1e-3f);
  const float vh_after_big = (*opt.state()[2].second)[0];
  g = &small;
  for (int i = 0; i < 50; ++i) opt.step(&w, &w, &g, &coef, 1, 1e-3f);
  EXPECT_EQ(opt.state()[2].first, "vhat");
  EXPECT_GE((*opt.state()[2].second)[0], (*opt.state()[1].second)[0]);  // vhat >= v
  EXPECT_NEAR((*opt.state()[2].second)[0], vh_after_big, 1e-9);          // never decreased since
}

TEST(Optimizers, ResultsAreBitIdenticalForAnyThreadCount) {
  OptimizerConfig c;
  c.name = OptimizerKind::Adam;
  const size_t n = 300000;
  const auto g1 = test::random_vector<float>(n, 3), g2 = test::random_vector<float>(n, 4);
  const float* gp[] = {g1.data(), g2.data()};
  const float coef[] = {0.5f, 0.5f};
  std::vector<std::vector<float>> out;
  for (int t : {1, 2, 5}) {
    ThreadPool pool(t);
    HostOptimizer opt(c, n, &pool);
    auto w = test::random_vector<float>(n, 5);
    for (int s = 0; s < 3; ++s) opt.step(w.data(), w.data(), gp, coef, 2, 1e-3f);
    out.push_back(w);
  }
  EXPECT_EQ(0, std::memcmp(out[0].data(), out[1].data(), n * 4));
  EXPECT_EQ(0, std::memcmp(out[0].data(), out[2].data(), n * 4));
}

TEST(Optimizers, BadConfigurationsAreRejected) {
  OptimizerConfig c;
  c.name = OptimizerKind::Adam;  // (an unknown name is the CLI's to refuse: BadFlags)
  c.beta2 = 1.0;
  EXPECT_THROW(validate(c), UsageError);
  c.beta2 = 0.999;
  c.eps = 0;
  EXPECT_THROW(validate(c), UsageError);
}

// Batch-norm buffers after the parameters: stepped by no rule, folded as
// ALGORITHMS.md section 8 says, with exact (power-of-two) inputs.
TEST(Optimizers, BuffersFoldThePlainMeanOfThePushedStatistics) {
  // w = [p0 p1 p2 | mean var count]; --no-decay-bn spares p1 (a bias).
  ParamLayout l;
  l.trainable = 3;
  l.total = 6;
  l.no_decay = {{1, 1, TensorKind::Param}};
  l.buffers = {{3, 2, TensorKind::RunningStat}, {5, 1, TensorKind::Count}};
  l.bn_momentum = 0.25;
  OptimizerConfig c;
  c.momentum = 0;
  c.weight_decay = 0.5;
  c.no_decay_bn = true;
  HostOptimizer opt(c, 6, nullptr);
  opt.set_layout(l);
  const std::vector<float> g1 = {1, 1, 1, 2, 8, 1}, g2 = {3, 3, 3, 4, 0, 1};
  const float* gp[] = {g1.data(), g2.data()};
  const float coef[] = {0.25f, 0.75f};  // staleness weights apply to gradients, never to statistics
  std::vector<float> w = {1, 1, 1, 0, 1, 7}, out(6);
  opt.step(w.data(), out.data(), gp, coef, 2, 0.5f);
  EXPECT_EQ(out[0], 1 - 0.5f * (2.5f + 0.5f));  // decayed
  EXPECT_EQ(out[1], 1 - 0.5f * 2.5f);           // not decayed
  EXPECT_EQ(out[2], 1 - 0.5f * (2.5f + 0.5f));
  EXPECT_EQ(out[3], 0.75f * 0 + 0.25f * 3);  // mean of 2 and 4
  EXPECT_EQ(out[4], 0.75f * 1 + 0.25f * 4);  // mean of 8 and 0
  EXPECT_EQ(out[5], 8);                       // one update, one count
  EXPECT_THROW(opt.set_layout(ParamLayout::plain(5)), Error);
}

}  // namespace
}  // namespace adasync
