// The normalisation and residual ops on the CPU: batch norm against a direct
// double-precision formula, the option-A shortcut against its definition,
// dropout's masks (rate, determinism, backward = forward mask), and every op
// giving the same bits with one thread or several.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/mix_hash.h"
#include "kernels/thread_pool.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

using test::random_vector;

TEST(BatchNormCpu, TrainingModeMatchesTheDefinition) {
  for (const BnShape s : {BnShape{4, 3, 25}, BnShape{1, 2, 7}, BnShape{9, 5, 1}}) {
    auto ctx = Context::cpu();
    const auto x = random_vector<float>(s.size(), 1 + s.n, -3, 5);
    const auto gamma = random_vector<float>(size_t(s.c), 2, 0.5, 2);
    const auto beta = random_vector<float>(size_t(s.c), 3);
    std::vector<float> y(s.size()), mean(size_t(s.c)), invstd(size_t(s.c)), var(size_t(s.c));
    cpu::batchnorm_forward_train<float>(*ctx, s, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                                        invstd.data(), var.data());
    const double m = double(s.n) * s.hw;
    for (int k = 0; k < s.c; ++k) {
      double mu = 0, ss = 0;
      for (int i = 0; i < s.n; ++i)
        for (int q = 0; q < s.hw; ++q) mu += x[(size_t(i) * s.c + k) * s.hw + q];
      mu /= m;
      for (int i = 0; i < s.n; ++i)
        for (int q = 0; q < s.hw; ++q) ss += std::pow(x[(size_t(i) * s.c + k) * s.hw + q] - mu, 2);
      EXPECT_NEAR(mean[size_t(k)], mu, 1e-6);
      EXPECT_NEAR(var[size_t(k)], m > 1 ? ss / (m - 1) : ss / m, 1e-5);  // unbiased, as PyTorch's running_var
      EXPECT_NEAR(invstd[size_t(k)], 1 / std::sqrt(ss / m + 1e-5), 1e-4);
      for (int i = 0; i < s.n; ++i)
        for (int q = 0; q < s.hw; ++q) {
          const size_t j = (size_t(i) * s.c + k) * s.hw + q;
          EXPECT_NEAR(y[j], gamma[size_t(k)] * (x[j] - mu) / std::sqrt(ss / m + 1e-5) + beta[size_t(k)], 1e-4);
        }
    }
  }
}

// The residual block's epilogue in batch norm's passes (add, ReLU; the ReLU's
// backward as a mask) gives the bits of the separate ops, odd sizes included.
TEST(BatchNormCpu, FusedAddAndReluEqualTheSeparateOps) {
  for (const BnShape s : {BnShape{4, 3, 25}, BnShape{1, 2, 7}, BnShape{3, 16, 64}, BnShape{9, 5, 1}}) {
    ThreadPool pool(2);
    auto ctx = Context::cpu(&pool);
    const auto x = random_vector<float>(s.size(), 7 + s.hw, -3, 5);
    const auto add = random_vector<float>(s.size(), 8 + s.hw, -4, 4);
    const auto dy = random_vector<float>(s.size(), 9 + s.hw);
    const auto gamma = random_vector<float>(size_t(s.c), 2, 0.5, 2), beta = random_vector<float>(size_t(s.c), 3);
    const size_t c = size_t(s.c);
    std::vector<float> mean(c), invstd(c), var(c);
    for (const bool with_add : {false, true}) {
      std::vector<float> y(s.size()), fused(s.size());
      cpu::batchnorm_forward_train<float>(*ctx, s, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                                          invstd.data(), var.data());
      if (with_add) cpu::axpy<float>(*ctx, 1.f, add.data(), y.data(), y.size());
      cpu::relu_forward<float>(*ctx, y.data(), y.data(), y.size());
      cpu::batchnorm_forward_train<float>(*ctx, s, x.data(), gamma.data(), beta.data(), 1e-5, fused.data(),
                                          mean.data(), invstd.data(), var.data(), with_add ? add.data() : nullptr, true);
      EXPECT_EQ(y, fused) << "add " << with_add << " hw " << s.hw;
      // Backward through the ReLU whose output is y.
      std::vector<float> g(s.size()), dx(s.size()), dg(c), db(c), dxf(s.size()), dgf(c), dbf(c);
      cpu::relu_backward<float>(*ctx, y.data(), dy.data(), g.data(), g.size());
      cpu::batchnorm_backward<float>(*ctx, s, x.data(), g.data(), gamma.data(), mean.data(), invstd.data(), dx.data(),
                                     dg.data(), db.data());
      cpu::batchnorm_backward<float>(*ctx, s, x.data(), dy.data(), gamma.data(), mean.data(), invstd.data(),
                                     dxf.data(), dgf.data(), dbf.data(), y.data());
      EXPECT_EQ(dx, dxf);
      EXPECT_EQ(dg, dgf);
      EXPECT_EQ(db, dbf);
    }
  }
}

TEST(BatchNormCpu, EvalModeWithTheBatchStatisticsEqualsTrainingMode) {
  auto ctx = Context::cpu();
  const BnShape s{6, 4, 10};
  const auto x = random_vector<double>(s.size(), 4, -2, 2);
  const auto gamma = random_vector<double>(4, 5), beta = random_vector<double>(4, 6);
  std::vector<double> y(s.size()), ye(s.size()), mean(4), invstd(4), var(4), biased(4);
  cpu::batchnorm_forward_train<double>(*ctx, s, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                                       invstd.data(), var.data());
  for (int k = 0; k < 4; ++k) biased[size_t(k)] = 1 / (invstd[size_t(k)] * invstd[size_t(k)]) - 1e-5;
  cpu::batchnorm_forward_eval<double>(*ctx, s, x.data(), gamma.data(), beta.data(), mean.data(), biased.data(), 1e-5,
                                      ye.data());
  EXPECT_LT(test::max_rel_error(ye, y), 1e-12);
}

TEST(ShortcutCpu, SubsamplesAndPadsChannelsAsTheDefinition) {
  auto ctx = Context::cpu();
  const ShortcutShape s{2, 3, 7, 6, 7, 2};  // odd height: ceil(7/2) = 4 rows; pad 2 channels each side
  ASSERT_EQ(s.out_h(), 4);
  ASSERT_EQ(s.out_w(), 3);
  const auto x = random_vector<float>(size_t(2) * 3 * 7 * 6, 7);
  std::vector<float> y(size_t(2) * 7 * 4 * 3, 1.f);
  cpu::shortcut_add<float>(*ctx, s, x.data(), y.data());
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < 7; ++c)
      for (int r = 0; r < 4; ++r)
        for (int q = 0; q < 3; ++q) {
          const int ci = c - 2;
          const float want = 1.f + (ci >= 0 && ci < 3 ? x[((size_t(i) * 3 + ci) * 7 + 2 * r) * 6 + 2 * q] : 0.f);
          EXPECT_EQ(y[((size_t(i) * 7 + c) * 4 + r) * 3 + q], want);
        }
  // The backward is the transpose: <S x, d> = <x, S^T d>.
  const auto d = random_vector<double>(y.size(), 8);
  const std::vector<double> xd(x.begin(), x.end());
  std::vector<double> sx(y.size(), 0.0), std_(x.size(), 0.0);
  cpu::shortcut_add<double>(*ctx, s, xd.data(), sx.data());
  cpu::shortcut_add_backward<double>(*ctx, s, d.data(), std_.data());
  double a = 0, b = 0;
  for (size_t j = 0; j < d.size(); ++j) a += sx[j] * d[j];
  for (size_t j = 0; j < xd.size(); ++j) b += xd[j] * std_[j];
  EXPECT_NEAR(a, b, 1e-12);
}

TEST(DropoutCpu, MasksAreKeyedAtTheRateAndScaled) {
  auto ctx = Context::cpu();
  const size_t n = 200000;
  const std::vector<float> x(n, 2.f);
  std::vector<float> y(n), y2(n), y3(n), dx(n);
  const std::vector<int32_t> a = {1, 2, 3}, b = {1, 2, 4};
  uint64_t ka = 0, kb = 0, ka2 = 0;
  cpu::batch_key(*ctx, a.data(), 3, 0, &ka);
  cpu::batch_key(*ctx, a.data(), 3, 0, &ka2);
  cpu::batch_key(*ctx, b.data(), 3, 0, &kb);
  EXPECT_EQ(ka, ka2);
  EXPECT_NE(ka, kb);
  cpu::dropout_forward<float>(*ctx, x.data(), y.data(), n, 0.3f, &ka);
  cpu::dropout_forward<float>(*ctx, x.data(), y2.data(), n, 0.3f, &ka);
  cpu::dropout_forward<float>(*ctx, x.data(), y3.data(), n, 0.3f, &kb);
  EXPECT_EQ(y, y2);
  EXPECT_NE(y, y3);
  size_t dropped = 0;
  for (float v : y) {
    if (v == 0.f) ++dropped;
    else EXPECT_FLOAT_EQ(v, 2.f / 0.7f);
  }
  EXPECT_NEAR(double(dropped) / n, 0.3, 0.005);  // 200k draws: sd 0.001
  cpu::dropout_backward<float>(*ctx, x.data(), dx.data(), n, 0.3f, &ka);
  EXPECT_EQ(dx, y);  // the same mask and scale
}

TEST(NormOpsCpu, SameBitsForAnyThreadCount) {
  ThreadPool pool(3);
  auto one = Context::cpu(), many = Context::cpu(&pool);
  const BnShape s{16, 7, 33};
  const auto x = random_vector<float>(s.size(), 9), dy = random_vector<float>(s.size(), 10);
  const auto g = random_vector<float>(7, 11), b = random_vector<float>(7, 12);
  auto run = [&](Context& ctx) {
    std::vector<float> y(s.size()), m(7), is(7), v(7), dx(s.size()), dg(7), db(7), gap(size_t(16) * 7);
    cpu::batchnorm_forward_train<float>(ctx, s, x.data(), g.data(), b.data(), 1e-5, y.data(), m.data(), is.data(),
                                        v.data());
    cpu::batchnorm_backward<float>(ctx, s, x.data(), dy.data(), g.data(), m.data(), is.data(), dx.data(), dg.data(),
                                   db.data());
    cpu::global_avgpool_forward<float>(ctx, 16, 7, 33, x.data(), gap.data());
    y.insert(y.end(), dx.begin(), dx.end());
    y.insert(y.end(), dg.begin(), dg.end());
    y.insert(y.end(), gap.begin(), gap.end());
    return y;
  };
  EXPECT_EQ(run(*one), run(*many));
}

TEST(AugmentCpu, CropsAndFlipsAsDrawnAndTheDrawsDependOnSeedEpochAndSample) {
  auto ctx = Context::cpu();
  const int n = 3, c = 2, h = 5, w = 6, pad = 2;
  const auto x = random_vector<float>(size_t(n) * c * h * w, 21);
  const std::vector<int32_t> idx = {7, 1000, 3};
  const std::vector<float> fill = {-1.5f, 2.5f};
  const int32_t epoch[2] = {3, 0};
  std::vector<float> y(x.size());
  cpu::augment_crop_flip(*ctx, x.data(), y.data(), idx.data(), n, c, h, w, pad, true, 99, epoch, fill.data());
  for (int s = 0; s < n; ++s) {
    const AugmentDraw d = augment_draw(99, 3, idx[size_t(s)], pad);
    EXPECT_LE(std::abs(d.dy), pad);
    EXPECT_LE(std::abs(d.dx), pad);
    for (int ch = 0; ch < c; ++ch)
      for (int i = 0; i < h; ++i)
        for (int j = 0; j < w; ++j) {
          const int si = i + d.dy, sj = (d.flip ? w - 1 - j : j) + d.dx;
          const float want = si >= 0 && si < h && sj >= 0 && sj < w
                                 ? x[((size_t(s) * c + ch) * h + si) * w + sj]
                                 : fill[size_t(ch)];
          EXPECT_EQ(y[((size_t(s) * c + ch) * h + i) * w + j], want);
        }
  }
  // Every shift and both flips occur, about evenly; another epoch or seed draws again.
  std::vector<int> shifts(2 * pad + 1), flips(2);
  int same_next_epoch = 0;
  for (int32_t sample = 0; sample < 5000; ++sample) {
    const AugmentDraw d = augment_draw(99, 3, sample, pad);
    ++shifts[size_t(d.dx + pad)];
    ++flips[d.flip];
    const AugmentDraw e = augment_draw(99, 4, sample, pad);
    same_next_epoch += d.dx == e.dx && d.dy == e.dy && d.flip == e.flip;
  }
  for (int k : shifts) EXPECT_NEAR(k, 1000, 150);
  EXPECT_NEAR(flips[1], 2500, 200);
  EXPECT_LT(same_next_epoch, 5000 / 25 + 100);  // 1 in 50 by chance
}

}  // namespace
}  // namespace adasync
