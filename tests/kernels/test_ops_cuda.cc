// Every CUDA op against its CPU twin on fresh random input. Outputs are
// poisoned first (NaN / -1 bytes), so an element the kernel does not write
// fails. FP32 paths must agree to ~1e-5 (L2-relative), TF32 paths to ~1e-3.
// Labelled gpu: each test skips, saying why, when no device is usable.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

using test::download;
using test::l2_rel_error;
using test::poisoned;
using test::random_vector;
using test::upload;

class CudaOps : public test::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    gpu = Context::cuda(0, "test");
    cpu = Context::cpu();
  }
  std::unique_ptr<Context> gpu, cpu;
  uint64_t seed = uint64_t(::testing::UnitTest::GetInstance()->random_seed()) * 1000 + 1;
};

TEST_F(CudaOps, GemmAllTransposesFp32AndTf32) {
  for (bool tf32 : {false, true})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int m = 45, n = 77, k = 123;
        const auto a = random_vector<float>(size_t(m) * k, seed++);
        const auto b = random_vector<float>(size_t(k) * n, seed++);
        const auto c0 = random_vector<float>(size_t(m) * n, seed++);
        std::vector<float> ref = c0;
        cpu::gemm<float>(*cpu, ta, tb, m, n, k, 1.5f, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.5f, ref.data(), n);
        gpu->tf32_gemm = tf32;
        auto da = upload(*gpu, a), db = upload(*gpu, b), dc = upload(*gpu, c0);
        ops::gemm<float>(*gpu, ta, tb, m, n, k, 1.5f, da.data(), ta ? m : k, db.data(), tb ? k : n, 0.5f, dc.data(), n);
        EXPECT_LT(l2_rel_error(download(*gpu, dc.data(), dc.size()), ref), tf32 ? 2e-3 : 1e-5)
            << "tf32 " << tf32 << " ta " << ta << " tb " << tb;
      }
}

TEST_F(CudaOps, ConvolutionForwardAndBackwardFp32AndTf32) {
  for (bool tf32 : {false, true}) {
    ConvShape s;
    s.n = 5, s.c = 3, s.h = 13, s.w = 11, s.k = 8, s.r = s.s = 5, s.pad_h = s.pad_w = 2;
    const auto x = random_vector<float>(s.x_size(), seed++);
    const auto w = random_vector<float>(s.w_size(), seed++);
    const auto b = random_vector<float>(size_t(s.k), seed++);
    const auto dy = random_vector<float>(s.y_size(), seed++);
    std::vector<float> y(s.y_size()), dx(s.x_size()), dw(s.w_size()), dbias(size_t(s.k));
    cpu::conv2d_forward<float>(*cpu, s, x.data(), w.data(), b.data(), y.data());
    cpu::conv2d_backward_data<float>(*cpu, s, dy.data(), w.data(), dx.data());
    cpu::conv2d_backward_filter<float>(*cpu, s, x.data(), dy.data(), dw.data(), dbias.data());
    gpu->tf32_conv = tf32;
    auto gx = upload(*gpu, x), gw = upload(*gpu, w), gb = upload(*gpu, b), gdy = upload(*gpu, dy);
    auto gy = poisoned<float>(*gpu, y.size()), gdx = poisoned<float>(*gpu, dx.size());
    auto gdw = poisoned<float>(*gpu, dw.size()), gdb = poisoned<float>(*gpu, dbias.size());
    ops::conv2d_forward<float>(*gpu, s, gx.data(), gw.data(), gb.data(), gy.data());
    ops::conv2d_backward_data<float>(*gpu, s, gdy.data(), gw.data(), gdx.data());
    ops::conv2d_backward_filter<float>(*gpu, s, gx.data(), gdy.data(), gdw.data(), gdb.data());
    const double tol = tf32 ? 2e-3 : 1e-5;
    EXPECT_LT(l2_rel_error(download(*gpu, gy.data(), y.size()), y), tol) << "forward tf32=" << tf32;
    EXPECT_LT(l2_rel_error(download(*gpu, gdx.data(), dx.size()), dx), tol) << "backward data tf32=" << tf32;
    EXPECT_LT(l2_rel_error(download(*gpu, gdw.data(), dw.size()), dw), tol) << "backward filter tf32=" << tf32;
    EXPECT_LT(l2_rel_error(download(*gpu, gdb.data(), dbias.size()), dbias), 1e-5) << "bias";
  }
}

TEST_F(CudaOps, DeterministicConvolutionIsBitStable) {
  gpu->deterministic = true;
  ConvShape s;
  s.n = 16, s.c = 32, s.h = 14, s.w = 14, s.k = 64, s.r = s.s = 5, s.pad_h = s.pad_w = 2;
  auto gx = upload(*gpu, random_vector<float>(s.x_size(), seed++));
  auto gdy = upload(*gpu, random_vector<float>(s.y_size(), seed++));
  auto dw1 = poisoned<float>(*gpu, s.w_size()), dw2 = poisoned<float>(*gpu, s.w_size());
  ops::conv2d_backward_filter<float>(*gpu, s, gx.data(), gdy.data(), dw1.data(), nullptr);
  ops::conv2d_backward_filter<float>(*gpu, s, gx.data(), gdy.data(), dw2.data(), nullptr);
  EXPECT_EQ(download(*gpu, dw1.data(), dw1.size()), download(*gpu, dw2.data(), dw2.size()));
}

TEST_F(CudaOps, MaxPoolPlainFusedAndOverlappingMatchExactly) {
  for (auto [size, stride, relu] : {std::tuple{2, 2, false}, std::tuple{2, 2, true}, std::tuple{3, 2, true}}) {
    PoolShape s;
    s.n = 4, s.c = 3, s.h = 12, s.w = 10, s.size = size, s.stride = stride;
    auto x = random_vector<float>(s.x_size(), seed++);
    for (auto& v : x) v = std::round(v * 4) / 4;  // ties: the first maximum must win on both
    const auto dy = random_vector<float>(s.y_size(), seed++);
    std::vector<float> y(s.y_size()), dx(s.x_size());
    std::vector<int32_t> am(s.y_size());
    cpu::maxpool2d_forward<float>(*cpu, s, x.data(), y.data(), am.data(), relu);
    cpu::maxpool2d_backward<float>(*cpu, s, dy.data(), am.data(), dx.data());
    auto gx = upload(*gpu, x), gdy = upload(*gpu, dy);
    auto gy = poisoned<float>(*gpu, y.size()), gdx = poisoned<float>(*gpu, dx.size());
    auto gam = poisoned<int32_t>(*gpu, am.size());
    ops::maxpool2d_forward<float>(*gpu, s, gx.data(), gy.data(), gam.data(), relu);
    ops::maxpool2d_backward<float>(*gpu, s, gdy.data(), gam.data(), gdx.data());
    EXPECT_EQ(download(*gpu, gy.data(), y.size()), y);
    EXPECT_EQ(download(*gpu, gam.data(), am.size()), am);
    EXPECT_LT(l2_rel_error(download(*gpu, gdx.data(), dx.size()), dx), 1e-6);
  }
}

TEST_F(CudaOps, ElementwiseBiasAndBlas1) {
  const size_t n = 100003;
  const auto x = random_vector<float>(n, seed++), dy = random_vector<float>(n, seed++);
  std::vector<float> y(n), dx(n);
  cpu::relu_forward<float>(*cpu, x.data(), y.data(), n);
  cpu::relu_backward<float>(*cpu, y.data(), dy.data(), dx.data(), n);
  auto gx = upload(*gpu, x), gdy = upload(*gpu, dy);
  auto gy = poisoned<float>(*gpu, n), gdx = poisoned<float>(*gpu, n);
  ops::relu_forward<float>(*gpu, gx.data(), gy.data(), n);
  ops::relu_backward<float>(*gpu, gy.data(), gdy.data(), gdx.data(), n);
  EXPECT_EQ(download(*gpu, gy.data(), n), y);
  EXPECT_EQ(download(*gpu, gdx.data(), n), dx);

  const int rows = 67, cols = 1031;
  auto m = random_vector<float>(size_t(rows) * cols, seed++);
  const auto b = random_vector<float>(size_t(cols), seed++);
  auto gm = upload(*gpu, m), gbias = upload(*gpu, b);
  auto gdb = poisoned<float>(*gpu, size_t(cols));
  std::vector<float> db(static_cast<size_t>(cols));
  cpu::bias_grad<float>(*cpu, m.data(), db.data(), rows, cols);
  ops::bias_grad<float>(*gpu, gm.data(), gdb.data(), rows, cols);
  EXPECT_LT(l2_rel_error(download(*gpu, gdb.data(), db.size()), db), 1e-6);
  cpu::bias_add<float>(*cpu, m.data(), b.data(), rows, cols);
  ops::bias_add<float>(*gpu, gm.data(), gbias.data(), rows, cols);
  EXPECT_EQ(download(*gpu, gm.data(), m.size()), m);

  auto z = random_vector<float>(n, seed++);
  auto gz = upload(*gpu, z);
  cpu::axpy<float>(*cpu, 0.25f, x.data(), z.data(), n);
  cpu::scale<float>(*cpu, -2.f, z.data(), z.data(), n);
  ops::axpy<float>(*gpu, 0.25f, gx.data(), gz.data(), n);
  ops::scale<float>(*gpu, -2.f, gz.data(), gz.data(), n);
  EXPECT_LT(l2_rel_error(download(*gpu, gz.data(), n), z), 1e-7);
  ops::fill<float>(*gpu, gz.data(), 3.f, n);
  EXPECT_EQ(download(*gpu, gz.data(), n), std::vector<float>(n, 3.f));
}

TEST_F(CudaOps, SoftmaxCrossEntropyAndAccuracy) {
  for (int rows : {1, 64, 1000}) {
    const int classes = 10;
    const auto z = random_vector<float>(size_t(rows) * classes, seed++, -4, 4);
    std::vector<int32_t> y(static_cast<size_t>(rows));
    for (int r = 0; r < rows; ++r) y[size_t(r)] = int32_t((r * 7 + int(seed)) % classes);
    float loss = 0;
    int32_t correct = -1;
    std::vector<float> dz(z.size());
    cpu::softmax_xent<float>(*cpu, z.data(), y.data(), rows, classes, &loss, dz.data());
    cpu::count_correct<float>(*cpu, z.data(), y.data(), rows, classes, &correct);
    auto gz = upload(*gpu, z);
    auto gy = upload(*gpu, y);
    auto gloss = poisoned<float>(*gpu, 1), gdz = poisoned<float>(*gpu, dz.size());
    auto gc = poisoned<int32_t>(*gpu, 1);
    ops::softmax_xent<float>(*gpu, gz.data(), gy.data(), rows, classes, gloss.data(), gdz.data());
    ops::count_correct<float>(*gpu, gz.data(), gy.data(), rows, classes, gc.data());
    EXPECT_NEAR(download(*gpu, gloss.data(), 1)[0], loss, 1e-5 * std::max(1.f, std::fabs(loss)));
    EXPECT_LT(l2_rel_error(download(*gpu, gdz.data(), dz.size()), dz), 1e-5);
    EXPECT_EQ(download(*gpu, gc.data(), 1)[0], correct);
  }
}

TEST_F(CudaOps, SgdGatherAndNonFiniteCount) {
  const size_t n = 77777;
  auto w = random_vector<float>(n, seed++), v = random_vector<float>(n, seed++);
  const auto g = random_vector<float>(n, seed++);
  auto gw = upload(*gpu, w), gv = upload(*gpu, v), gg = upload(*gpu, g);
  cpu::sgd_update(*cpu, w.data(), g.data(), v.data(), n, 0.05f, 0.9f, 1e-4f, true);
  ops::sgd_update(*gpu, gw.data(), gg.data(), gv.data(), n, 0.05f, 0.9f, 1e-4f, true);
  EXPECT_LT(l2_rel_error(download(*gpu, gw.data(), n), w), 1e-6);
  EXPECT_LT(l2_rel_error(download(*gpu, gv.data(), n), v), 1e-6);

  const size_t dim = 37;
  const auto rows = random_vector<float>(100 * dim, seed++);
  std::vector<int32_t> labels(100), idx = {99, 0, 5, 5, 42};
  for (int i = 0; i < 100; ++i) labels[size_t(i)] = i % 10;
  std::vector<float> out(idx.size() * dim);
  std::vector<int32_t> out_l(idx.size());
  cpu::gather_rows(*cpu, rows.data(), labels.data(), idx.data(), int(idx.size()), dim, out.data(), out_l.data());
  auto grows = upload(*gpu, rows);
  auto glabels = upload(*gpu, labels), gidx = upload(*gpu, idx);
  auto gout = poisoned<float>(*gpu, out.size());
  auto gout_l = poisoned<int32_t>(*gpu, out_l.size());
  ops::gather_rows(*gpu, grows.data(), glabels.data(), gidx.data(), int(idx.size()), dim, gout.data(), gout_l.data());
  EXPECT_EQ(download(*gpu, gout.data(), out.size()), out);
  EXPECT_EQ(download(*gpu, gout_l.data(), out_l.size()), out_l);

  auto f = random_vector<float>(1 << 20, seed++);
  f[3] = NAN;
  f[1 << 19] = INFINITY;
  f[(1 << 20) - 1] = -INFINITY;
  auto gf = upload(*gpu, f);
  auto gcount = poisoned<int32_t>(*gpu, 1);
  ops::count_nonfinite(*gpu, gf.data(), f.size(), gcount.data());
  EXPECT_EQ(download(*gpu, gcount.data(), 1)[0], 3);
}

TEST_F(CudaOps, SpinDelayWaitsAndStopsEarlyWhenCancelled) {
  bool mapped = false;
  auto* flag = static_cast<volatile uint32_t*>(mapped_alloc(sizeof(uint32_t), &mapped));
  ASSERT_TRUE(mapped);
  *flag = 5;
  auto t0 = std::chrono::steady_clock::now();
  ops::spin_delay(*gpu, 0.05, flag, 5);
  gpu->synchronize();
  const double full = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(full, 0.045);
  t0 = std::chrono::steady_clock::now();
  ops::spin_delay(*gpu, 5.0, flag, 5);
  *flag = 6;  // the host cancels: the kernel must return long before 5 s
  gpu->synchronize();
  const double cut = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(cut, 1.0);
  mapped_free(const_cast<uint32_t*>(flag), true);
}

TEST_F(CudaOps, GraphReplayEqualsEagerLaunches) {
  const size_t n = 4096;
  const auto x = random_vector<float>(n, seed++);
  auto gx = upload(*gpu, x);
  auto ye = poisoned<float>(*gpu, n), yg = poisoned<float>(*gpu, n);
  auto step = [&](float* y) {
    ops::relu_forward<float>(*gpu, gx.data(), y, n);
    ops::scale<float>(*gpu, 3.f, y, y, n);
    ops::axpy<float>(*gpu, 1.f, gx.data(), y, n);
  };
  step(ye.data());
  Graph g;
  g.begin_capture(*gpu);
  step(yg.data());
  g.end_capture(*gpu);
  ASSERT_TRUE(g.ready());
  EXPECT_TRUE(std::isnan(download(*gpu, yg.data(), 1)[0]));  // captured, not run
  g.launch(*gpu);
  EXPECT_EQ(download(*gpu, yg.data(), n), download(*gpu, ye.data(), n));
}

// Batch norm (training, evaluation, backward) on odd shapes, batch 1 included,
// through cuDNN and through our kernels (double sums: closer to the CPU twin's).
TEST_F(CudaOps, BatchNormMatchesCpu) {
  for (const bool use_cudnn : {true, false})
  for (const BnShape s : {BnShape{5, 3, 37}, BnShape{1, 4, 9}, BnShape{128, 16, 64}, BnShape{7, 2, 1}}) {
    gpu->cudnn_batchnorm = use_cudnn;
    // cuDNN sums in float: its statistics round at about 1e-6 of a sum of n hw terms.
    const double tol = use_cudnn ? 1e-5 : 1e-6, tol_dx = use_cudnn ? 1e-4 : 1e-5;
    const auto x = random_vector<float>(s.size(), seed++, -2, 3);
    const auto dy = random_vector<float>(s.size(), seed++);
    const auto gamma = random_vector<float>(size_t(s.c), seed++, 0.5, 1.5);
    const auto beta = random_vector<float>(size_t(s.c), seed++);
    const auto rm = random_vector<float>(size_t(s.c), seed++);
    const auto rv = random_vector<float>(size_t(s.c), seed++, 0.5, 2);
    const size_t c = size_t(s.c);
    std::vector<float> y(s.size()), ye(s.size()), mean(c), invstd(c), var(c), dx(s.size()), dg(c), db(c);
    cpu::batchnorm_forward_train<float>(*cpu, s, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                                        invstd.data(), var.data());
    cpu::batchnorm_forward_eval<float>(*cpu, s, x.data(), gamma.data(), beta.data(), rm.data(), rv.data(), 1e-5,
                                       ye.data());
    cpu::batchnorm_backward<float>(*cpu, s, x.data(), dy.data(), gamma.data(), mean.data(), invstd.data(), dx.data(),
                                   dg.data(), db.data());
    auto gx = upload(*gpu, x), gdy = upload(*gpu, dy), gg = upload(*gpu, gamma), gb = upload(*gpu, beta);
    auto grm = upload(*gpu, rm), grv = upload(*gpu, rv);
    auto gy = poisoned<float>(*gpu, y.size()), gye = poisoned<float>(*gpu, y.size()), gdx = poisoned<float>(*gpu, y.size());
    auto gm = poisoned<float>(*gpu, c), gi = poisoned<float>(*gpu, c), gv = poisoned<float>(*gpu, c);
    auto gdg = poisoned<float>(*gpu, c), gdb = poisoned<float>(*gpu, c);
    ops::batchnorm_forward_train<float>(*gpu, s, gx.data(), gg.data(), gb.data(), 1e-5, gy.data(), gm.data(), gi.data(),
                                        gv.data());
    ops::batchnorm_forward_eval<float>(*gpu, s, gx.data(), gg.data(), gb.data(), grm.data(), grv.data(), 1e-5,
                                       gye.data());
    ops::batchnorm_backward<float>(*gpu, s, gx.data(), gdy.data(), gg.data(), gm.data(), gi.data(), gdx.data(),
                                   gdg.data(), gdb.data());
    const std::string at = std::string(use_cudnn ? "cudnn" : "own") + " n " + std::to_string(s.n) + " c " + std::to_string(s.c) + " hw " + std::to_string(s.hw);
    EXPECT_LT(l2_rel_error(download(*gpu, gy.data(), y.size()), y), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gye.data(), y.size()), ye), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gm.data(), c), mean), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gi.data(), c), invstd), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gv.data(), c), var), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gdx.data(), y.size()), dx), tol_dx) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gdg.data(), c), dg), tol) << at;
    EXPECT_LT(l2_rel_error(download(*gpu, gdb.data(), c), db), tol) << at;
    // The residual epilogue: + add, ReLU; backward masked by the ReLU's output.
    const auto add = random_vector<float>(s.size(), seed++, -2, 2);
    auto gadd = upload(*gpu, add);
    cpu::batchnorm_forward_train<float>(*cpu, s, x.data(), gamma.data(), beta.data(), 1e-5, y.data(), mean.data(),
                                        invstd.data(), var.data(), add.data(), true);
    cpu::batchnorm_backward<float>(*cpu, s, x.data(), dy.data(), gamma.data(), mean.data(), invstd.data(), dx.data(),
                                   dg.data(), db.data(), y.data());
    ops::batchnorm_forward_train<float>(*gpu, s, gx.data(), gg.data(), gb.data(), 1e-5, gy.data(), gm.data(), gi.data(),
                                        gv.data(), gadd.data(), true);
    ops::batchnorm_backward<float>(*gpu, s, gx.data(), gdy.data(), gg.data(), gm.data(), gi.data(), gdx.data(),
                                   gdg.data(), gdb.data(), gy.data());
    const auto fy = download(*gpu, gy.data(), y.size());
    EXPECT_LT(l2_rel_error(fy, y), tol) << at << " fused";
    // A value at the ReLU's edge may round to the other side; the masks agree elsewhere.
    size_t flipped = 0;
    for (size_t i = 0; i < y.size(); ++i) flipped += (fy[i] > 0) != (y[i] > 0);
    EXPECT_LE(flipped, y.size() / 1000) << at;
    if (flipped == 0) {
      EXPECT_LT(l2_rel_error(download(*gpu, gdx.data(), y.size()), dx), tol_dx) << at << " fused";
      EXPECT_LT(l2_rel_error(download(*gpu, gdg.data(), c), dg), tol) << at << " fused";
      EXPECT_LT(l2_rel_error(download(*gpu, gdb.data(), c), db), tol) << at << " fused";
    }
  }
  gpu->cudnn_batchnorm = true;
}

TEST_F(CudaOps, GlobalPoolShortcutDropoutAndEmaMatchCpu) {
  const int n = 3, c = 5, hw = 49;
  const auto x = random_vector<float>(size_t(n) * c * hw, seed++);
  const auto dy = random_vector<float>(size_t(n) * c, seed++);
  std::vector<float> y(size_t(n) * c), dx(x.size());
  cpu::global_avgpool_forward<float>(*cpu, n, c, hw, x.data(), y.data());
  cpu::global_avgpool_backward<float>(*cpu, n, c, hw, dy.data(), dx.data());
  auto gx = upload(*gpu, x), gdy = upload(*gpu, dy);
  auto gy = poisoned<float>(*gpu, y.size()), gdx = poisoned<float>(*gpu, dx.size());
  ops::global_avgpool_forward<float>(*gpu, n, c, hw, gx.data(), gy.data());
  ops::global_avgpool_backward<float>(*gpu, n, c, hw, gdy.data(), gdx.data());
  EXPECT_LT(l2_rel_error(download(*gpu, gy.data(), y.size()), y), 1e-6);
  EXPECT_LT(l2_rel_error(download(*gpu, gdx.data(), dx.size()), dx), 1e-6);

  for (const ShortcutShape s : {ShortcutShape{2, 4, 7, 7, 8, 2}, ShortcutShape{3, 16, 32, 32, 32, 2}, ShortcutShape{1, 3, 5, 6, 5, 1}}) {
    const auto xs = random_vector<float>(size_t(s.n) * s.c_in * s.h * s.w, seed++);
    const size_t ny = size_t(s.n) * s.c_out * s.out_h() * s.out_w();
    const auto y0 = random_vector<float>(ny, seed++);
    const auto dx0 = random_vector<float>(xs.size(), seed++);
    std::vector<float> ys = y0, dxs = dx0;
    cpu::shortcut_add<float>(*cpu, s, xs.data(), ys.data());
    cpu::shortcut_add_backward<float>(*cpu, s, y0.data(), dxs.data());
    auto gxs = upload(*gpu, xs), gys = upload(*gpu, y0), gy0 = upload(*gpu, y0), gdxs = upload(*gpu, dx0);
    ops::shortcut_add<float>(*gpu, s, gxs.data(), gys.data());
    ops::shortcut_add_backward<float>(*gpu, s, gy0.data(), gdxs.data());
    EXPECT_EQ(download(*gpu, gys.data(), ny), ys);
    EXPECT_EQ(download(*gpu, gdxs.data(), xs.size()), dxs);
  }

  // Dropout: the same key gives the same mask on both devices, bit for bit.
  const std::vector<int32_t> idx = {5, 17, 2, 99, 4};
  uint64_t key_cpu = 0;
  cpu::batch_key(*cpu, idx.data(), int(idx.size()), 3, &key_cpu);
  auto gidx = upload(*gpu, idx);
  auto gkey = poisoned<uint64_t>(*gpu, 1);
  ops::batch_key(*gpu, gidx.data(), int(idx.size()), 3, gkey.data());
  ASSERT_EQ(download(*gpu, gkey.data(), 1)[0], key_cpu);
  std::vector<float> yd(x.size()), dxd(x.size());
  cpu::dropout_forward<float>(*cpu, x.data(), yd.data(), x.size(), 0.3f, &key_cpu);
  cpu::dropout_backward<float>(*cpu, x.data(), dxd.data(), x.size(), 0.3f, &key_cpu);
  auto gyd = poisoned<float>(*gpu, x.size()), gdxd = poisoned<float>(*gpu, x.size());
  ops::dropout_forward<float>(*gpu, gx.data(), gyd.data(), x.size(), 0.3f, gkey.data());
  ops::dropout_backward<float>(*gpu, gx.data(), gdxd.data(), x.size(), 0.3f, gkey.data());
  EXPECT_EQ(download(*gpu, gyd.data(), x.size()), yd);
  EXPECT_EQ(download(*gpu, gdxd.data(), x.size()), dxd);

  const auto r0 = random_vector<float>(33, seed++), st = random_vector<float>(33, seed++);
  std::vector<float> r = r0;
  cpu::ema_update(*cpu, r.data(), st.data(), r.size(), 0.1f, 0.25f);
  auto gr = upload(*gpu, r0), gst = upload(*gpu, st);
  ops::ema_update(*gpu, gr.data(), gst.data(), r.size(), 0.1f, 0.25f);
  EXPECT_LT(l2_rel_error(download(*gpu, gr.data(), r.size()), r), 1e-7);
}

TEST_F(CudaOps, AugmentationMatchesCpu) {
  const int n = 4, c = 3, h = 32, w = 32;
  const auto x = random_vector<float>(size_t(n) * c * h * w, seed++);
  const std::vector<int32_t> idx = {5, 49999, 0, 123, 77, 1};  // then the epoch's two words: 77 + 2^32
  const std::vector<float> fill = {-0.5f, 0.25f, 1.f};
  std::vector<float> y(x.size());
  cpu::augment_crop_flip(*cpu, x.data(), y.data(), idx.data(), n, c, h, w, 4, true, 11, idx.data() + n, fill.data());
  auto gx = upload(*gpu, x), gfill = upload(*gpu, fill);
  auto gidx = upload(*gpu, idx);
  auto gy = poisoned<float>(*gpu, y.size());
  ops::augment_crop_flip(*gpu, gx.data(), gy.data(), gidx.data(), n, c, h, w, 4, true, 11, gidx.data() + n, gfill.data());
  EXPECT_EQ(download(*gpu, gy.data(), y.size()), y);
}

}  // namespace
}  // namespace adasync
