// Finite-difference gradient checks, in double precision on the CPU, for
// every layer (in each configuration the zoo uses and a few more) and for
// whole models through the softmax cross-entropy loss.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>

#include "models/model.h"
#include "tests/support/test_util.h"

namespace adasync {
inline void PrintTo(const Shape& s, std::ostream* os) { *os << to_string(s); }  // CTest's name for the case

namespace {

using test::random_vector;

// Checks d<r, layer(x)>/d(param, input) by central differences.
void check_layer(Layer<double>& layer, int n, uint64_t seed) {
  auto ctx = Context::cpu();
  layer.setup(*ctx, n);
  const size_t np = layer.num_params(), nx = size_t(n) * layer.in_shape().size(),
               ny = size_t(n) * layer.out_shape().size();
  auto w = random_vector<double>(np, seed);
  auto x = random_vector<double>(nx, seed + 1);
  const auto r = random_vector<double>(ny, seed + 2);
  std::vector<double> dw(np, NAN), dx(nx, NAN), y(ny);
  layer.bind(w.data(), dw.data());
  auto objective = [&] {
    layer.forward(*ctx, x.data(), y.data(), int(n));
    double s = 0;
    for (size_t i = 0; i < ny; ++i) s += r[i] * y[i];
    return s;
  };
  objective();
  layer.backward(*ctx, x.data(), y.data(), r.data(), dx.data(), n);
  const double eps = 1e-6;
  auto numeric = [&](double& v) {
    const double v0 = v;
    v = v0 + eps;
    const double up = objective();
    v = v0 - eps;
    const double down = objective();
    v = v0;
    return (up - down) / (2 * eps);
  };
  double worst = 0;
  for (size_t i = 0; i < np; ++i) {
    const double g = numeric(w[i]);
    worst = std::max(worst, std::fabs(g - dw[i]) / std::max(1.0, std::fabs(g)));
  }
  for (size_t i = 0; i < nx; ++i) {
    const double g = numeric(x[i]);
    worst = std::max(worst, std::fabs(g - dx[i]) / std::max(1.0, std::fabs(g)));
  }
  EXPECT_LT(worst, 1e-7) << layer.describe();
}

TEST(GradCheck, Linear) {
  Linear<double> l(Shape{3, 2, 2}, 5);
  check_layer(l, 4, 1);
}

TEST(GradCheck, Conv2dSamePadding) {
  Conv2d<double> l(Shape{2, 6, 5}, 3, 3, 1);
  check_layer(l, 2, 2);
}

TEST(GradCheck, Conv2dFiveByFiveLikeTheZoo) {
  Conv2d<double> l(Shape{2, 7, 7}, 3, 5, 2);
  check_layer(l, 2, 3);
}

TEST(GradCheck, Conv2dValidStrided) {
  Conv2d<double> l(Shape{2, 7, 8}, 2, 3, 0, 2);
  check_layer(l, 3, 4);
}

TEST(GradCheck, Conv2dPointwise) {
  Conv2d<double> l(Shape{4, 3, 3}, 2, 1, 0);
  check_layer(l, 9, 5);  // more images than one backward-filter group
}

TEST(GradCheck, MaxPool) {
  MaxPool2d<double> l(Shape{2, 6, 6}, 2, 2);
  check_layer(l, 2, 6);
}

TEST(GradCheck, MaxPoolOverlappingWindows) {
  MaxPool2d<double> l(Shape{2, 7, 7}, 3, 2);
  check_layer(l, 2, 7);
}

TEST(GradCheck, ReluMaxPoolFused) {
  MaxPool2d<double> l(Shape{3, 6, 4}, 2, 2, true);
  check_layer(l, 2, 8);
}

TEST(GradCheck, Relu) {
  ReLU<double> l(Shape{3, 2, 5});
  check_layer(l, 3, 9);
}

TEST(GradCheck, Conv2dWithoutBias) {
  Conv2d<double> l(Shape{3, 5, 5}, 4, 3, 1, 2, false);
  EXPECT_EQ(l.num_params(), size_t(4 * 3 * 9));
  check_layer(l, 2, 10);
}

TEST(GradCheck, BatchNormTrainingMode) {
  BatchNorm2d<double> l(Shape{3, 4, 5});
  check_layer(l, 3, 11);
}

TEST(GradCheck, BatchNormOnFeatureVectors) {
  BatchNorm2d<double> l(Shape{4, 1, 1});  // statistics over the batch alone
  check_layer(l, 5, 12);
}

TEST(GradCheck, GlobalAvgPool) {
  GlobalAvgPool<double> l(Shape{3, 5, 7});
  check_layer(l, 2, 13);
}

TEST(GradCheck, DropoutWithAFixedKey) {
  Dropout<double> l(Shape{4, 3, 3}, 0.4f);
  const uint64_t key = 12345;
  l.set_key(&key);
  check_layer(l, 3, 14);
}

TEST(GradCheck, BasicBlockIdentityShortcut) {
  BasicBlock<double> l(Shape{4, 5, 5}, 4, 1, false);
  check_layer(l, 2, 15);
}

TEST(GradCheck, BasicBlockOptionAOnAnOddSize) {
  BasicBlock<double> l(Shape{2, 7, 7}, 4, 2, false);
  EXPECT_EQ(l.out_shape(), (Shape{4, 4, 4}));
  check_layer(l, 2, 16);
}

TEST(GradCheck, BasicBlockProjectionShortcut) {
  BasicBlock<double> l(Shape{2, 6, 6}, 3, 2, true);
  check_layer(l, 3, 17);
}

// Whole model: loss = softmax cross-entropy of the logits; checks a sample of
// parameters (every parameter for the small ones).
void check_model(const std::string& arch, Shape in, int classes, int n, size_t max_checked) {
  auto ctx = Context::cpu();
  Model<double> m(*ctx, arch, in, classes, n);
  std::vector<double> p(m.num_params());
  m.init_params(p.data(), 3);
  m.use_params(p.data());
  const auto x = random_vector<double>(size_t(n) * in.size(), 11, -2, 2);
  std::vector<int32_t> y(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) y[size_t(i)] = (i * 7 + 1) % classes;
  ASSERT_TRUE(m.forward_backward(x.data(), y.data(), n));
  const std::vector<double> g(m.grads(), m.grads() + m.num_params());
  p.resize(m.num_trainable());  // buffers (after the parameters) take no gradient
  std::vector<double> full(m.num_params());
  m.init_params(full.data(), 3);
  std::copy(p.begin(), p.end(), full.begin());
  m.use_params(full.data());
  auto loss = [&] {
    m.forward_loss(x.data(), y.data(), n);
    return *m.loss_ptr();
  };
  Rng pick(5);
  double worst = 0;
  const size_t checks = std::min(max_checked, p.size());
  for (size_t t = 0; t < checks; ++t) {
    const size_t i = checks == p.size() ? t : size_t(pick.below(p.size()));
    const double eps = 1e-6, v0 = full[i];
    full[i] = v0 + eps;
    const double up = loss();
    full[i] = v0 - eps;
    const double down = loss();
    full[i] = v0;
    const double num = (up - down) / (2 * eps);
    worst = std::max(worst, std::fabs(num - g[i]) / std::max(1e-3, std::fabs(num) + std::fabs(g[i])));
  }
  EXPECT_LT(worst, 1e-5) << arch;
}

TEST(GradCheck, LinearModelEveryParameter) { check_model("linear", Shape{1, 3, 4}, 4, 5, 1000); }
TEST(GradCheck, MlpModel) { check_model("mlp", Shape{1, 4, 4}, 3, 4, 400); }
TEST(GradCheck, Lenet5Model) { check_model("lenet5", Shape{1, 28, 28}, 10, 2, 150); }
TEST(GradCheck, CnnModel) { check_model("cnn", Shape{1, 12, 12}, 10, 2, 120); }
// A described model off the zoo's paths: strided conv, overlapping pool, two channels in.
TEST(GradCheck, DescribedModel) { check_model("conv3x3-4-s2,relu,pool3-s1,fc7,relu,fc", Shape{2, 9, 9}, 3, 2, 300); }
// Residual networks: every kind of block, batch norm, global pooling, a batch of one image per class.
TEST(GradCheck, ResidualModel) {
  check_model("conv3x3-4,bn,relu,res4,res6-s2,res8-s2-proj,gap,fc", Shape{3, 9, 9}, 3, 3, 400);
}
TEST(GradCheck, Resnet20Model) { check_model("resnet20", Shape{3, 8, 8}, 10, 2, 150); }
TEST(GradCheck, AllCnnModelWithDropout) {
  check_model("drop20,conv3x3-6,relu,conv3x3-6-s2,relu,drop50,conv3x3-8-p0,relu,conv1x1-4,relu,gap", Shape{3, 9, 9},
              4, 2, 300);
}

TEST(Model, InitIsDeterministicAndLayoutIsFlat) {
  auto ctx = Context::cpu();
  Model<float> a(*ctx, "cnn", Shape{1, 28, 28}, 10, 4), b(*ctx, "cnn", Shape{1, 28, 28}, 10, 4);
  // conv 32*25+32, conv 64*800+64, fc 3136*1024+1024, fc 1024*10+10.
  EXPECT_EQ(a.num_params(), size_t(832 + 51264 + 3212288 + 10250));
  std::vector<float> pa(a.num_params()), pb(a.num_params()), pc(a.num_params());
  a.init_params(pa.data(), 7);
  b.init_params(pb.data(), 7);
  a.init_params(pc.data(), 8);
  EXPECT_EQ(pa, pb);
  EXPECT_NE(pa, pc);
  // Every value inside PyTorch's default bound 1/sqrt(fan_in) for its layer.
  for (size_t i = 0; i < 832; ++i) EXPECT_LE(std::fabs(pa[i]), 1 / std::sqrt(25.f) + 1e-6f);
  EXPECT_THROW(Model<float>(*ctx, "resnet", Shape{1, 28, 28}, 10, 4), UsageError);
  EXPECT_THROW(Model<float>(*ctx, "cnn", Shape{1, 1, 32}, 10, 4), Error);  // conv5x5 does not fit 1x1 inputs
}

TEST(Model, FloatTrainingStepMatchesDouble) {
  auto ctx = Context::cpu();
  Model<float> mf(*ctx, "lenet5", Shape{1, 28, 28}, 10, 3);
  Model<double> md(*ctx, "lenet5", Shape{1, 28, 28}, 10, 3);
  std::vector<float> pf(mf.num_params());
  std::vector<double> pd(md.num_params());
  mf.init_params(pf.data(), 1);
  md.init_params(pd.data(), 1);
  mf.use_params(pf.data());
  md.use_params(pd.data());
  const auto xd = random_vector<double>(3 * 784, 2);
  const std::vector<float> xf(xd.begin(), xd.end());
  const std::vector<int32_t> y = {1, 5, 9};
  mf.forward_backward(xf.data(), y.data(), 3);
  md.forward_backward(xd.data(), y.data(), 3);
  EXPECT_NEAR(*mf.loss_ptr(), *md.loss_ptr(), 1e-5);
  std::vector<float> gf(mf.grads(), mf.grads() + mf.num_params());
  std::vector<double> gd(md.grads(), md.grads() + md.num_params());
  EXPECT_LT(test::max_rel_error(gf, gd), 1e-4);
}

// The float kernels (SIMD paths, Winograd, OpenBLAS) against the double model
// on a residual network after a perturbation of every parameter (batch norm's
// scales away from 1, so no cancellation hides a wrong term). On 28x28 the
// first stage's 3x3 convolutions take Winograd F(4x4, 3x3), the others the
// direct kernels; on 16x16 all three stages take it.
class FloatResnet : public ::testing::TestWithParam<Shape> {};

TEST_P(FloatResnet, StepMatchesDouble) {
  auto ctx = Context::cpu();
  const Shape in = GetParam();
  const int n = 8;
  Model<float> mf(*ctx, "resnet20", in, 10, n);
  Model<double> md(*ctx, "resnet20", in, 10, n);
  std::vector<double> pd(md.num_params());
  md.init_params(pd.data(), 1);
  const auto noise = random_vector<double>(md.num_trainable(), 4, -0.2, 0.2);
  for (size_t i = 0; i < noise.size(); ++i) pd[i] += noise[i];
  const std::vector<float> pf(pd.begin(), pd.end());
  const std::vector<double> pdr(pf.begin(), pf.end());  // the same rounded start for both
  mf.use_params(pf.data());
  md.use_params(pdr.data());
  const auto xd = random_vector<double>(size_t(n) * in.size(), 2);
  const std::vector<float> xf(xd.begin(), xd.end());
  const std::vector<double> xdr(xf.begin(), xf.end());
  std::vector<int32_t> y(n);
  for (int i = 0; i < n; ++i) y[size_t(i)] = i % 10;
  mf.forward_backward(xf.data(), y.data(), n);
  md.forward_backward(xdr.data(), y.data(), n);
  EXPECT_NEAR(*mf.loss_ptr(), *md.loss_ptr(), 1e-4);
  for (const auto& t : mf.param_tensors()) {
    std::vector<float> gf(mf.grads() + t.offset, mf.grads() + t.offset + t.count);
    std::vector<double> gd(md.grads() + t.offset, md.grads() + t.offset + t.count);
    EXPECT_LT(test::l2_rel_error(gf, gd), 1e-4) << t.name;
  }
}

INSTANTIATE_TEST_SUITE_P(Inputs, FloatResnet, ::testing::Values(Shape{1, 28, 28}, Shape{3, 16, 16}));

}  // namespace
}  // namespace adasync
