// CPU ops against straightforward double-precision references on random
// input, in float and in double, with pooled (threaded) and serial contexts.
// The float ops run on every CPU path (kernels/cpu/simd.h) this machine
// supports; a path it lacks skips, saying which feature is missing.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu/conv_direct.h"
#include "kernels/cpu/conv_winograd.h"
#include "kernels/cpu/ops_cpu.h"
#include "kernels/cpu/simd.h"
#include "kernels/ops.h"
#include "tests/support/test_util.h"

namespace adasync::cpu {
// Test names and failure messages show the path by name (gtest finds this by
// argument-dependent lookup, so it lives in CpuPath's namespace).
inline void PrintTo(CpuPath p, std::ostream* os) { *os << cpu_path_name(p); }
}  // namespace adasync::cpu

namespace adasync {
namespace {

using cpu::CpuPath;
using test::max_rel_error;
using test::random_vector;

const auto kPaths = ::testing::Values(CpuPath::avx512, CpuPath::avx2, CpuPath::scalar);

// Selects a CPU path for the float kernels while alive; the previous one after.
class PathScope {
 public:
  explicit PathScope(CpuPath p) : prev_(cpu::cpu_path()) { cpu::set_cpu_path(p); }
  ~PathScope() { cpu::set_cpu_path(prev_); }
  PathScope(const PathScope&) = delete;
  PathScope& operator=(const PathScope&) = delete;

 private:
  CpuPath prev_;
};

// Runs the rest of the test on path p, or skips naming what is missing.
#define USE_CPU_PATH(p)                                                                                \
  if (std::string why; !cpu::cpu_path_supported(p, &why))                                              \
    GTEST_SKIP() << cpu::cpu_path_name(p) << " kernels cannot run here: " << why;                      \
  PathScope path_scope_(p)

std::string path_param_name(const ::testing::TestParamInfo<CpuPath>& info) { return cpu::cpu_path_name(info.param); }

// y[n][k][oh][ow] = b[k] + sum_{c,r,s} w[k][c][r][s] * x[n][c][oh*sh-ph+r][ow*sw-pw+s]
std::vector<double> conv_ref(const ConvShape& s, const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b) {
  std::vector<double> y(s.y_size());
  const int OH = s.out_h(), OW = s.out_w();
  for (int n = 0; n < s.n; ++n)
    for (int k = 0; k < s.k; ++k)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          double acc = b.empty() ? 0 : b[size_t(k)];
          for (int c = 0; c < s.c; ++c)
            for (int r = 0; r < s.r; ++r)
              for (int q = 0; q < s.s; ++q) {
                const int ih = oh * s.stride_h - s.pad_h + r, iw = ow * s.stride_w - s.pad_w + q;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                acc += w[((size_t(k) * s.c + c) * s.r + r) * s.s + q] * x[((size_t(n) * s.c + c) * s.h + ih) * s.w + iw];
              }
          y[((size_t(n) * s.k + k) * OH + oh) * OW + ow] = acc;
        }
  return y;
}

struct ConvCase {
  int n, c, h, w, k, r, pad, stride;
};
// CTest names each case by its printed parameter.
void PrintTo(const ConvCase& c, std::ostream* os) {
  *os << "n" << c.n << "c" << c.c << "h" << c.h << "w" << c.w << "k" << c.k << "r" << c.r << "pad" << c.pad << "stride"
      << c.stride;
}

class ConvOps : public ::testing::TestWithParam<std::tuple<ConvCase, int, CpuPath>> {};

TEST_P(ConvOps, ForwardAndBothBackwardsMatchTheDirectReference) {
  const auto [cc, threads, path] = GetParam();
  USE_CPU_PATH(path);
  ConvShape s;
  s.n = cc.n, s.c = cc.c, s.h = cc.h, s.w = cc.w, s.k = cc.k, s.r = s.s = cc.r;
  s.pad_h = s.pad_w = cc.pad;
  s.stride_h = s.stride_w = cc.stride;
  ThreadPool pool(threads);
  auto ctx = Context::cpu(&pool);
  const auto x = random_vector<double>(s.x_size(), 1);
  const auto w = random_vector<double>(s.w_size(), 2);
  const auto b = random_vector<double>(size_t(s.k), 3);
  const auto dy = random_vector<double>(s.y_size(), 4);

  // Forward in double and in float.
  std::vector<double> y(s.y_size(), NAN);
  ops::conv2d_forward<double>(*ctx, s, x.data(), w.data(), b.data(), y.data());
  const auto y_ref = conv_ref(s, x, w, b);
  EXPECT_LT(max_rel_error(y, y_ref), 1e-12);
  std::vector<float> xf(x.begin(), x.end()), wf(w.begin(), w.end()), bf(b.begin(), b.end()), yf(s.y_size(), NAN);
  ops::conv2d_forward<float>(*ctx, s, xf.data(), wf.data(), bf.data(), yf.data());
  EXPECT_LT(max_rel_error(yf, y_ref), 1e-5);

  // Backward references from the definition: dx = d/dx <dy, conv(x)>, dw likewise.
  std::vector<double> dx_ref(s.x_size(), 0), dw_ref(s.w_size(), 0), db_ref(size_t(s.k), 0);
  const int OH = s.out_h(), OW = s.out_w();
  for (int n = 0; n < s.n; ++n)
    for (int k = 0; k < s.k; ++k)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          const double g = dy[((size_t(n) * s.k + k) * OH + oh) * OW + ow];
          db_ref[size_t(k)] += g;
          for (int c = 0; c < s.c; ++c)
            for (int r = 0; r < s.r; ++r)
              for (int q = 0; q < s.s; ++q) {
                const int ih = oh * s.stride_h - s.pad_h + r, iw = ow * s.stride_w - s.pad_w + q;
                if (ih < 0 || ih >= s.h || iw < 0 || iw >= s.w) continue;
                const size_t xi = ((size_t(n) * s.c + c) * s.h + ih) * s.w + iw;
                const size_t wi = ((size_t(k) * s.c + c) * s.r + r) * s.s + q;
                dx_ref[xi] += g * w[wi];
                dw_ref[wi] += g * x[xi];
              }
        }
  std::vector<double> dx(s.x_size(), NAN), dw(s.w_size(), NAN), db(size_t(s.k), NAN);
  ops::conv2d_backward_data<double>(*ctx, s, dy.data(), w.data(), dx.data());
  ops::conv2d_backward_filter<double>(*ctx, s, x.data(), dy.data(), dw.data(), db.data());
  EXPECT_LT(max_rel_error(dx, dx_ref), 1e-12);
  EXPECT_LT(max_rel_error(dw, dw_ref), 1e-12);
  EXPECT_LT(max_rel_error(db, db_ref), 1e-12);
  // And in float (the direct kernels of the AVX paths take these shapes when they can).
  std::vector<float> dyf(dy.begin(), dy.end()), dxf(s.x_size(), NAN), dwf(s.w_size(), NAN), dbf(size_t(s.k), NAN);
  ops::conv2d_backward_data<float>(*ctx, s, dyf.data(), wf.data(), dxf.data());
  ops::conv2d_backward_filter<float>(*ctx, s, xf.data(), dyf.data(), dwf.data(), dbf.data());
  EXPECT_LT(max_rel_error(dxf, dx_ref), 1e-5);
  EXPECT_LT(max_rel_error(dwf, dw_ref), 1e-5);
  EXPECT_LT(max_rel_error(dbf, db_ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, ConvOps,
    ::testing::Combine(::testing::Values(ConvCase{3, 2, 7, 7, 4, 3, 1, 1},    // same padding
                                         ConvCase{2, 3, 9, 8, 5, 5, 2, 1},    // 5x5 same, non-square
                                         ConvCase{2, 2, 9, 9, 3, 3, 0, 2},    // valid, strided
                                         ConvCase{17, 2, 5, 5, 3, 1, 0, 1},   // pointwise, more than one group
                                         ConvCase{10, 1, 6, 6, 2, 3, 2, 2},   // wide padding, strided
                                         // Shapes of the direct kernels (channels in multiples of 16):
                                         ConvCase{3, 16, 9, 11, 32, 5, 2, 1},   // like conv2, odd width tails
                                         ConvCase{2, 1, 28, 28, 32, 5, 2, 1},   // conv1 of the cnn
                                         ConvCase{9, 32, 7, 5, 64, 3, 1, 1},    // 3x3, more than one group
                                         ConvCase{2, 16, 8, 8, 48, 5, 0, 1},    // valid, K = 48
                                         ConvCase{2, 16, 6, 17, 48, 5, 2, 1},   // wide rows with tails, K = 48
                                         ConvCase{2, 32, 5, 16, 48, 3, 1, 1},   // 3x3, wide rows, K = 48
                                         ConvCase{2, 64, 14, 14, 64, 5, 2, 1},  // conv2 of the cnn (backward data too)
                                         ConvCase{3, 32, 6, 10, 16, 5, 1, 1},   // Winograd: even, non-square, pad 1
                                         ConvCase{2, 16, 12, 8, 48, 5, 4, 1},   // Winograd: pad 4, 16 x 12 out
                                         // 3x3 Winograd (F(2x2) forward below 32 channels, else F(4x4)): resnet shapes, non-square, valid, pad 2, batch 1
                                         ConvCase{3, 16, 8, 12, 32, 3, 1, 1},   // both ways
                                         ConvCase{1, 64, 8, 8, 64, 3, 1, 1},    // the last stage, one image
                                         ConvCase{2, 32, 10, 6, 16, 3, 0, 1},   // valid: forward only
                                         ConvCase{2, 16, 4, 8, 48, 3, 2, 1},    // pad 2: 6 x 10 out, backward only
                                         ConvCase{8, 16, 28, 28, 16, 3, 1, 1},  // 7 tiles a row (an odd count)
                                         // F(2x2, 3x3) forward only (16 channels, not in whole 4 x 4 tiles)
                                         ConvCase{2, 16, 14, 14, 32, 3, 1, 1},  // 14 x 14 out
                                         ConvCase{3, 16, 12, 10, 16, 3, 0, 1}), // valid: 10 x 8 out
                       ::testing::Values(1, 3), kPaths));

class ConvPaths : public ::testing::TestWithParam<CpuPath> {};

TEST_P(ConvPaths, ResultsDoNotDependOnTheThreadCount) {
  USE_CPU_PATH(GetParam());
  for (int k : {4, 32}) {  // the GEMM path and (except on scalar) the direct path
    ConvShape s;
    s.n = 19, s.c = 16, s.h = 8, s.w = 8, s.k = k, s.r = s.s = 3, s.pad_h = s.pad_w = 1;
    const auto x = random_vector<float>(s.x_size(), 5);
    const auto dy = random_vector<float>(s.y_size(), 6);
    const auto w = random_vector<float>(s.w_size(), 7);
    std::vector<std::vector<float>> outs;
    for (int t : {1, 2, 4}) {
      ThreadPool pool(t);
      auto ctx = Context::cpu(&pool);
      std::vector<float> dw(s.w_size()), db(size_t(s.k)), y(s.y_size()), dx(s.x_size());
      ops::conv2d_backward_filter<float>(*ctx, s, x.data(), dy.data(), dw.data(), db.data());
      ops::conv2d_forward<float>(*ctx, s, x.data(), w.data(), db.data(), y.data());
      ops::conv2d_backward_data<float>(*ctx, s, dy.data(), w.data(), dx.data());
      dw.insert(dw.end(), y.begin(), y.end());
      dw.insert(dw.end(), dx.begin(), dx.end());
      outs.push_back(dw);
    }
    EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4)) << "K=" << k;
    EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[2].data(), outs[0].size() * 4)) << "K=" << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, ConvPaths, kPaths, path_param_name);

// The direct kernels accumulate each output in the same order at every vector
// width, so the AVX2 path reproduces the AVX-512 path's bits (the golden
// checksums then hold for both).
TEST(ConvOps, Avx2AndAvx512DirectKernelsAgreeBitForBit) {
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2})
    if (std::string why; !cpu::cpu_path_supported(p, &why)) GTEST_SKIP() << cpu::cpu_path_name(p) << ": " << why;
  // Rows narrower than a wide tile, and wider ones (17: a wide tile and tails) with K = 48 (channels left
  // over); even sizes take the Winograd kernels forward and for the input gradient.
  for (auto [h, wd, k] : {std::array<int, 3>{9, 13, 64}, std::array<int, 3>{5, 17, 48},
                          std::array<int, 3>{14, 14, 64}, std::array<int, 3>{6, 10, 32}}) {
    ConvShape s;
    s.n = 3, s.c = 32, s.h = h, s.w = wd, s.k = k, s.r = s.s = 5, s.pad_h = s.pad_w = 2;
    const auto x = random_vector<float>(s.x_size(), 31);
    const auto dy = random_vector<float>(s.y_size(), 32);
    const auto w = random_vector<float>(s.w_size(), 33);
    const auto b = random_vector<float>(size_t(s.k), 34);
    std::vector<std::vector<float>> outs;
    for (CpuPath p : {CpuPath::avx512, CpuPath::avx2}) {
      PathScope scope(p);
      ThreadPool pool(2);
      auto ctx = Context::cpu(&pool);
      std::vector<float> y(s.y_size(), NAN), dx(s.x_size(), NAN), dw(s.w_size(), NAN), db(size_t(s.k), NAN);
      ops::conv2d_forward<float>(*ctx, s, x.data(), w.data(), b.data(), y.data());
      ops::conv2d_backward_data<float>(*ctx, s, dy.data(), w.data(), dx.data());
      ops::conv2d_backward_filter<float>(*ctx, s, x.data(), dy.data(), dw.data(), db.data());
      y.insert(y.end(), dx.begin(), dx.end());
      y.insert(y.end(), dw.begin(), dw.end());
      y.insert(y.end(), db.begin(), db.end());
      outs.push_back(y);
    }
    EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4)) << h << "x" << wd << ", K = " << k;
  }
}

// The cnn's second convolution takes the Winograd kernels on the AVX paths
// (forward and input gradient; not the weight gradient, not odd sizes), and
// ADASYNC_NO_WINOGRAD=1 takes the direct ones: the two agree to float
// rounding and differ in their bits, so the switch does switch.
class WinogradPaths : public ::testing::TestWithParam<CpuPath> {};

TEST_P(WinogradPaths, TheCnnsSecondConvolutionTakesThemAndTheSwitchTurnsThemOff) {
  USE_CPU_PATH(GetParam());
  ConvShape s;
  s.n = 2, s.c = 32, s.h = s.w = 14, s.k = 64, s.r = s.s = 5, s.pad_h = s.pad_w = 2;
  ConvShape odd = s;
  odd.h = 13;
  EXPECT_TRUE(cpu::winograd::forward_ok(s));
  EXPECT_TRUE(cpu::winograd::backward_data_ok(s));
  EXPECT_FALSE(cpu::winograd::forward_ok(odd));
  EXPECT_FALSE(cpu::winograd::backward_data_ok(odd));
  ConvShape three = s;  // 3x3 takes F(4x4, 3x3): 14 x 14 is not in whole 4 x 4 tiles, 16 x 16 is
  three.r = three.s = 3, three.pad_h = three.pad_w = 1;
  EXPECT_FALSE(cpu::winograd::forward_ok(three));
  EXPECT_FALSE(cpu::winograd::backward_data_ok(three));
  three.h = three.w = 16;
  EXPECT_TRUE(cpu::winograd::forward_ok(three));
  EXPECT_TRUE(cpu::winograd::backward_data_ok(three));
  // Below 32 channels the forward pass takes F(2x2, 3x3) (14 x 14 is in whole
  // 2 x 2 tiles), the input gradient still F(4x4, 3x3).
  EXPECT_EQ(cpu::winograd::tile(3, 32, 64, true), 4);
  EXPECT_EQ(cpu::winograd::tile(3, 16, 64, true), 2);
  EXPECT_EQ(cpu::winograd::tile(3, 16, 16, false), 4);
  ConvShape narrow = three;
  narrow.c = 16, narrow.h = narrow.w = 14;
  EXPECT_TRUE(cpu::winograd::forward_ok(narrow));
  EXPECT_FALSE(cpu::winograd::backward_data_ok(narrow));
  three.stride_h = three.stride_w = 2;
  EXPECT_FALSE(cpu::winograd::forward_ok(three));
  const auto x = random_vector<float>(s.x_size(), 41), w = random_vector<float>(s.w_size(), 42);
  const auto b = random_vector<float>(size_t(s.k), 43), dy = random_vector<float>(s.y_size(), 44);
  ThreadPool pool(2);
  auto ctx = Context::cpu(&pool);
  auto run = [&] {
    std::vector<float> y(s.y_size(), NAN), dx(s.x_size(), NAN);
    ops::conv2d_forward<float>(*ctx, s, x.data(), w.data(), b.data(), y.data());
    ops::conv2d_backward_data<float>(*ctx, s, dy.data(), w.data(), dx.data());
    y.insert(y.end(), dx.begin(), dx.end());
    return y;
  };
  const auto wino = run();
  ASSERT_EQ(setenv("ADASYNC_NO_WINOGRAD", "1", 1), 0);
  EXPECT_FALSE(cpu::winograd::forward_ok(s));
  const auto direct = run();
  unsetenv("ADASYNC_NO_WINOGRAD");
  EXPECT_LT(max_rel_error(wino, direct), 1e-5);
  EXPECT_NE(0, std::memcmp(wino.data(), direct.data(), wino.size() * sizeof(float)));
}

TEST(WinogradPaths, TheScalarPathHasNone) {
  USE_CPU_PATH(CpuPath::scalar);
  ConvShape s;
  s.n = 2, s.c = 32, s.h = s.w = 14, s.k = 64, s.r = s.s = 5, s.pad_h = s.pad_w = 2;
  EXPECT_FALSE(cpu::winograd::forward_ok(s));
  EXPECT_FALSE(cpu::winograd::backward_data_ok(s));
}

INSTANTIATE_TEST_SUITE_P(Paths, WinogradPaths, ::testing::Values(CpuPath::avx512, CpuPath::avx2), path_param_name);

class GemmOps : public ::testing::TestWithParam<std::tuple<bool, bool, int>> {};

TEST_P(GemmOps, MatchesTheTripleLoopInEveryTransposeAndThreadCount) {
  const auto [ta, tb, threads] = GetParam();
  ThreadPool pool(threads);
  auto ctx = Context::cpu(&pool);
  // Large enough that the threaded split is used (> 4 MFLOP), odd sizes.
  const int m = 67, n = 131, k = 301;
  const auto a = random_vector<float>(size_t(m) * k, 7);
  const auto b = random_vector<float>(size_t(k) * n, 8);
  auto c = random_vector<float>(size_t(m) * n, 9);
  std::vector<double> ref(c.size());
  const float alpha = 0.75f, beta = -0.5f;
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double acc = 0;
      for (int l = 0; l < k; ++l)
        acc += double(ta ? a[size_t(l) * m + i] : a[size_t(i) * k + l]) * double(tb ? b[size_t(j) * k + l] : b[size_t(l) * n + j]);
      ref[size_t(i) * n + j] = alpha * acc + beta * double(c[size_t(i) * n + j]);
    }
  ops::gemm<float>(*ctx, ta, tb, m, n, k, alpha, a.data(), ta ? m : k, b.data(), tb ? k : n, beta, c.data(), n);
  EXPECT_LT(max_rel_error(c, ref), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(All, GemmOps, ::testing::Combine(::testing::Bool(), ::testing::Bool(), ::testing::Values(1, 2, 3)));

// The linear layers' products (alpha 1, beta 0) run the path's own tiles on
// the AVX paths along whole multiples of 16, the rest by OpenBLAS: each
// transpose the layers use, with row and column tails, a lane dimension that
// is not a multiple of 16 (the evaluation's batches of 500) or shorter than
// 16, k longer than one k-block, rows of B far apart (packed per panel), and
// in every thread count the same bits.
class GemmPaths : public ::testing::TestWithParam<CpuPath> {};

TEST_P(GemmPaths, LinearLayerProductsMatchTheTripleLoopAndTheThreadCount) {
  USE_CPU_PATH(GetParam());
  struct Case {
    bool ta, tb;
    int m, n, k;
  };
  // forward (x W^T), weight gradient (dY^T X), input gradient (dY W)
  for (const Case& cs : {Case{false, true, 32, 13, 301}, Case{false, true, 64, 70, 600},
                         Case{false, true, 500, 10, 96}, Case{false, true, 37, 21, 40}, Case{false, true, 9, 16, 40},
                         Case{true, false, 23, 48, 64}, Case{true, false, 1030, 80, 17},
                         Case{true, false, 10, 53, 64}, Case{false, false, 7, 48, 600},
                         Case{false, false, 64, 112, 10}, Case{false, false, 64, 1027, 300},
                         Case{false, false, 20, 12, 30}, Case{true, false, 40, 700, 33},
                         Case{false, false, 13, 720, 260}}) {
    const auto [ta, tb, m, n, k] = cs;
    const auto a = random_vector<float>(size_t(m) * k, 21);
    const auto b = random_vector<float>(size_t(k) * n, 22);
    std::vector<double> ref(size_t(m) * n);
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) {
        double acc = 0;
        for (int l = 0; l < k; ++l)
          acc += double(ta ? a[size_t(l) * m + i] : a[size_t(i) * k + l]) * double(tb ? b[size_t(j) * k + l] : b[size_t(l) * n + j]);
        ref[size_t(i) * n + j] = acc;
      }
    std::vector<std::vector<float>> outs;
    for (int threads : {1, 3}) {
      ThreadPool pool(threads);
      auto ctx = Context::cpu(&pool);
      std::vector<float> c(size_t(m) * n, NAN);
      ops::gemm<float>(*ctx, ta, tb, m, n, k, 1.f, a.data(), ta ? m : k, b.data(), tb ? k : n, 0.f, c.data(), n);
      EXPECT_LT(max_rel_error(c, ref), 1e-5) << ta << tb << " " << m << "x" << n << "x" << k;
      outs.push_back(c);
    }
    EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[1].data(), outs[0].size() * 4)) << ta << tb << " " << m << "x" << n;
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, GemmPaths, kPaths, path_param_name);

class PoolOps : public ::testing::TestWithParam<std::tuple<std::tuple<int, int, bool>, CpuPath>> {};

TEST_P(PoolOps, ForwardTakesTheFirstMaximumAndBackwardRoutesToIt) {
  const auto [size, stride, relu] = std::get<0>(GetParam());
  USE_CPU_PATH(std::get<1>(GetParam()));
  ThreadPool pool(2);
  auto ctx = Context::cpu(&pool);
  // 8 wide: one partial vector of outputs; 37: a full vector of 16 and a tail.
  for (int w : {8, 37}) {
    PoolShape s;
    s.n = 3, s.c = 4, s.h = 9, s.w = w, s.size = size, s.stride = stride;
    // Few distinct values, so ties are common and the first-maximum rule is exercised.
    auto x = random_vector<float>(s.x_size(), 10);
    for (auto& v : x) v = std::round(v * 3) / 3;
    std::vector<float> y(s.y_size(), NAN);
    std::vector<int32_t> am(s.y_size(), -7);
    ops::maxpool2d_forward<float>(*ctx, s, x.data(), y.data(), am.data(), relu);
    const int OH = s.out_h(), OW = s.out_w();
    const auto dy = random_vector<float>(s.y_size(), 11);
    std::vector<double> dx_ref(s.x_size(), 0);
    for (int p = 0; p < s.n * s.c; ++p)
      for (int oh = 0; oh < OH; ++oh)
        for (int ow = 0; ow < OW; ++ow) {
          int best = -1;
          float v = -INFINITY;
          for (int i = 0; i < size; ++i)
            for (int j = 0; j < size; ++j) {
              const int idx = (oh * stride + i) * s.w + ow * stride + j;
              if (x[size_t(p) * s.h * s.w + idx] > v) v = x[size_t(p) * s.h * s.w + idx], best = idx;
            }
          if (relu && !(v > 0)) v = 0, best = -1;
          const size_t o = (size_t(p) * OH + oh) * OW + ow;
          EXPECT_EQ(y[o], v);
          EXPECT_EQ(am[o], best) << "width " << w;
          if (best >= 0) dx_ref[size_t(p) * s.h * s.w + size_t(best)] += dy[o];
        }
    std::vector<float> dx(s.x_size(), NAN);
    ops::maxpool2d_backward<float>(*ctx, s, dy.data(), am.data(), dx.data());
    EXPECT_LT(max_rel_error(dx, dx_ref), 1e-7);
  }
}

INSTANTIATE_TEST_SUITE_P(All, PoolOps,
                         ::testing::Combine(::testing::Values(std::make_tuple(2, 2, false), std::make_tuple(2, 2, true),
                                                              std::make_tuple(3, 2, false), std::make_tuple(3, 3, true),
                                                              std::make_tuple(2, 1, true)),
                                            kPaths));

class ElementwiseOps : public ::testing::TestWithParam<CpuPath> {};

TEST_P(ElementwiseOps, ReluBiasAndBlasLevel1MatchTheirDefinitions) {
  USE_CPU_PATH(GetParam());
  auto ctx = Context::cpu();
  const size_t n = 1000;
  const auto x = random_vector<float>(n, 12);
  const auto dy = random_vector<float>(n, 13);
  std::vector<float> y(n, NAN), dx(n, NAN);
  ops::relu_forward<float>(*ctx, x.data(), y.data(), n);
  ops::relu_backward<float>(*ctx, y.data(), dy.data(), dx.data(), n);
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(y[i], x[i] > 0 ? x[i] : 0.f);
    EXPECT_EQ(dx[i], x[i] > 0 ? dy[i] : 0.f);
  }
  const int rows = 7, cols = 13;
  auto m = random_vector<float>(size_t(rows) * cols, 14);
  const auto b = random_vector<float>(size_t(cols), 15);
  const auto m0 = m;
  ops::bias_add<float>(*ctx, m.data(), b.data(), rows, cols);
  std::vector<float> db(size_t(cols), NAN);
  ops::bias_grad<float>(*ctx, m0.data(), db.data(), rows, cols);
  for (int c = 0; c < cols; ++c) {
    double s = 0;
    for (int r = 0; r < rows; ++r) {
      EXPECT_EQ(m[size_t(r) * cols + c], m0[size_t(r) * cols + c] + b[size_t(c)]);
      s += m0[size_t(r) * cols + c];
    }
    EXPECT_NEAR(db[size_t(c)], s, 1e-5);
  }
  std::vector<float> z(n, 1.f);
  ops::axpy<float>(*ctx, 2.f, x.data(), z.data(), n);
  ops::scale<float>(*ctx, 0.5f, z.data(), z.data(), n);
  for (size_t i = 0; i < n; ++i) EXPECT_FLOAT_EQ(z[i], 0.5f * (1.f + 2.f * x[i]));
}

INSTANTIATE_TEST_SUITE_P(Paths, ElementwiseOps, kPaths, path_param_name);

// The direct convolutions' and linear layers' transposes: register blocks of
// 16 x 16 (AVX-512) or 8 x 8 (AVX2) and scalar edges, with strided rows.
TEST_P(ElementwiseOps, TransposeMovesEveryElementOnce) {
  USE_CPU_PATH(GetParam());
  for (auto [rows, cols] : {std::array<int, 2>{64, 196}, std::array<int, 2>{37, 45}, std::array<int, 2>{16, 7},
                            std::array<int, 2>{5, 33}}) {
    const size_t lds = size_t(cols) + 3, ldd = size_t(rows) + 5;
    const auto src = random_vector<float>(size_t(rows) * lds, 16);
    std::vector<float> dst(size_t(cols) * ldd, NAN);
    cpu::direct::transpose(src.data(), rows, size_t(cols), lds, dst.data(), ldd);
    for (int c = 0; c < cols; ++c)
      for (size_t r = 0; r < ldd; ++r) {
        if (r < size_t(rows)) ASSERT_EQ(dst[size_t(c) * ldd + r], src[r * lds + size_t(c)]) << rows << "x" << cols;
        else ASSERT_TRUE(std::isnan(dst[size_t(c) * ldd + r])) << "wrote past row " << rows;
      }
  }
}

TEST(LossOps, SoftmaxCrossEntropyAndAccuracyMatchTheDefinition) {
  auto ctx = Context::cpu();
  const int rows = 9, classes = 5;
  const auto z = random_vector<double>(size_t(rows) * classes, 16, -3, 3);
  std::vector<int32_t> y(static_cast<size_t>(rows));
  for (int r = 0; r < rows; ++r) y[size_t(r)] = (r * 3) % classes;
  double loss = NAN;
  std::vector<double> d(z.size(), NAN);
  ops::softmax_xent<double>(*ctx, z.data(), y.data(), rows, classes, &loss, d.data());
  double ref = 0;
  int correct_ref = 0;
  for (int r = 0; r < rows; ++r) {
    double sum = 0;
    int best = 0;
    for (int c = 0; c < classes; ++c) {
      sum += std::exp(z[size_t(r) * classes + c]);
      if (z[size_t(r) * classes + c] > z[size_t(r) * classes + best]) best = c;
    }
    correct_ref += best == y[size_t(r)];
    ref += -std::log(std::exp(z[size_t(r) * classes + y[size_t(r)]]) / sum);
    for (int c = 0; c < classes; ++c) {
      const double p = std::exp(z[size_t(r) * classes + c]) / sum;
      EXPECT_NEAR(d[size_t(r) * classes + c], (p - (c == y[size_t(r)])) / rows, 1e-12);
    }
  }
  EXPECT_NEAR(loss, ref / rows, 1e-12);
  int32_t correct = -1;
  ops::count_correct<double>(*ctx, z.data(), y.data(), rows, classes, &correct);
  EXPECT_EQ(correct, correct_ref);
  // A label out of range is a clear error, not a silent read out of bounds.
  y[0] = classes;
  EXPECT_THROW(ops::softmax_xent<double>(*ctx, z.data(), y.data(), rows, classes, &loss, d.data()), Error);
}

class OptimOps : public ::testing::TestWithParam<CpuPath> {};

TEST_P(OptimOps, SgdUpdateAndGatherAndNonFiniteCount) {
  USE_CPU_PATH(GetParam());
  auto ctx = Context::cpu();
  const size_t n = 257;
  auto w = random_vector<float>(n, 17);
  const auto g = random_vector<float>(n, 18);
  auto v = random_vector<float>(n, 19);
  const auto w0 = w, v0 = v;
  ops::sgd_update(*ctx, w.data(), g.data(), v.data(), n, 0.1f, 0.9f, 0.01f, true);
  // In double; the bound is a few float roundings of the terms, which the
  // step's cancellation (w0 minus a step of its size) can leave larger than
  // the result's own ulps.
  for (size_t i = 0; i < n; ++i) {
    const double gi = double(g[i]) + 0.01 * double(w0[i]);
    const double vi = 0.9 * double(v0[i]) + gi;
    const double step = 0.1 * (gi + 0.9 * vi);
    EXPECT_NEAR(v[i], vi, 4 * 6e-8 * (std::fabs(0.9 * v0[i]) + std::fabs(gi)));
    EXPECT_NEAR(w[i], double(w0[i]) - step, 8 * 6e-8 * (std::fabs(w0[i]) + std::fabs(step)));
  }
  const std::vector<float> rows = {0, 1, 2, 3, 4, 5};
  const std::vector<int32_t> labels = {7, 8, 9};
  const std::vector<int32_t> idx = {2, 0, 2};
  std::vector<float> out(6, NAN);
  std::vector<int32_t> out_l(3, -1);
  ops::gather_rows(*ctx, rows.data(), labels.data(), idx.data(), 3, 2, out.data(), out_l.data());
  EXPECT_EQ(out, (std::vector<float>{4, 5, 0, 1, 4, 5}));
  EXPECT_EQ(out_l, (std::vector<int32_t>{9, 7, 9}));
  std::vector<float> f(100000, 1.f);
  f[5] = NAN;
  f[99999] = INFINITY;
  f[50000] = -INFINITY;
  ThreadPool pool(3);
  ctx->set_pool(&pool);
  int32_t bad = -1;
  ops::count_nonfinite(*ctx, f.data(), f.size(), &bad);
  EXPECT_EQ(bad, 3);
}

INSTANTIATE_TEST_SUITE_P(Paths, OptimOps, kPaths, path_param_name);

TEST(CpuPaths, TheBestPathIsSupportedAndTheChoiceCanBeLoweredAndRestored) {
  const CpuPath best = cpu::best_cpu_path();
  std::string why;
  EXPECT_TRUE(cpu::cpu_path_supported(best, &why)) << why;
  EXPECT_TRUE(cpu::cpu_path_supported(CpuPath::scalar));
  {
    PathScope scope(CpuPath::scalar);
    EXPECT_STREQ(cpu::cpu_kernel_path(), "scalar");
    EXPECT_EQ(cpu::simd::kernels().conv_image, nullptr);  // scalar: im2col + GEMM only
    EXPECT_NE(cpu::cpu_kernel_path_summary().find("forced"), std::string::npos);
  }
  for (CpuPath p : {CpuPath::avx512, CpuPath::avx2})
    if (!cpu::cpu_path_supported(p)) EXPECT_THROW(cpu::set_cpu_path(p), UsageError) << cpu::cpu_path_name(p);
    else EXPECT_NE(cpu::simd::kernels(p).conv_image, nullptr);
}

TEST(CpuPaths, TheStartupLineWarnsWhenOpenBlasRunsItsSse3KernelsOnAnAvx2Cpu) {
  EXPECT_NE(cpu::blas_core_note("Prescott", true).find("OPENBLAS_CORETYPE=Haswell"), std::string::npos);
  EXPECT_EQ(cpu::blas_core_note("Prescott", false), "");  // no AVX2: nothing faster to pick
  EXPECT_EQ(cpu::blas_core_note("Haswell", true), "");
  EXPECT_EQ(cpu::blas_core_note("SkylakeX", true), "");
  EXPECT_FALSE(cpu::blas_core().empty());
  const bool warned = cpu::cpu_kernel_path_summary().find("Prescott") != std::string::npos;
  EXPECT_EQ(warned, cpu::blas_core() == "Prescott" && cpu::best_cpu_path() != CpuPath::scalar);
}

}  // namespace
}  // namespace adasync
