// SwarmSGD: the lattice quantizer, the gossip graphs, averaging dynamics with
// exact answers, and end-to-end runs on both clocks.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <fstream>
#include <sys/stat.h>

#include "runtime/swarm.h"
#include "runtime/trainer.h"
#include "tests/support/test_util.h"
#include "tests/support/small_data.h"

namespace adasync {
namespace {

TEST(Quantizer, RoundTripIsExactToHalfAStepInsideTheSafeRange) {
  for (int bits : {8, 16}) {
    const double e = bits == 8 ? 1e-3 : 1e-5;
    LatticeQuantizer q(bits, e);
    const size_t n = 20000;
    const auto x = test::random_vector<float>(n, 1, -3, 3);
    // Receiver models within 0.99 of the safe radius of the sent values.
    auto noise = test::random_vector<float>(n, 2, -0.99 * q.safe_radius(), 0.99 * q.safe_radius());
    std::vector<float> b(n), out(n, NAN);
    for (size_t i = 0; i < n; ++i) b[i] = x[i] + noise[i];
    std::vector<unsigned char> msg(q.message_bytes(n));
    EXPECT_EQ(msg.size(), n * size_t(bits / 8));
    q.encode(x.data(), n, msg.data());
    q.decode(msg.data(), b.data(), n, out.data());
    double worst = 0;
    for (size_t i = 0; i < n; ++i) worst = std::max(worst, std::fabs(double(out[i]) - double(x[i])));
    EXPECT_LE(worst, e / 2 * (1 + 1e-3) + 4e-7) << bits << " bits";
    EXPECT_EQ(count_out_of_range(x.data(), out.data(), n, e), 0u);
  }
}

TEST(Quantizer, ValuesOutsideTheSafeRangeAreDetected) {
  LatticeQuantizer q(8, 1e-3);  // safe radius 0.128
  const size_t n = 1000;
  const auto x = test::random_vector<float>(n, 3);
  std::vector<float> b(x), out(n);
  size_t far = 0;
  for (size_t i = 0; i < n; i += 7) b[i] = x[i] + 0.2f, ++far;  // beyond the radius, within one wrap
  std::vector<unsigned char> msg(q.message_bytes(n));
  q.encode(x.data(), n, msg.data());
  q.decode(msg.data(), b.data(), n, out.data());
  EXPECT_EQ(count_out_of_range(x.data(), out.data(), n, 1e-3), far);
}

TEST(Quantizer, FullPrecisionIsTheIdentityAtFourBytesAValue) {
  LatticeQuantizer q(0, 0);
  const auto x = test::random_vector<float>(100, 4);
  std::vector<unsigned char> msg(q.message_bytes(100));
  EXPECT_EQ(msg.size(), 400u);
  std::vector<float> out(100);
  q.encode(x.data(), 100, msg.data());
  q.decode(msg.data(), x.data(), 100, out.data());
  EXPECT_EQ(out, x);
  EXPECT_THROW(LatticeQuantizer(4, 1e-3), UsageError);
}

TEST(GossipGraphs, ShapesAndDegrees) {
  auto c = GossipGraph::make("complete", 6, 0, 1);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.neighbours(i).size(), 5u);
  auto r = GossipGraph::make("ring", 6, 0, 1);
  EXPECT_EQ(r.neighbours(0), (std::vector<int>{1, 5}));
  auto t = GossipGraph::make("torus", 12, 0, 1);  // 3 x 4
  EXPECT_EQ(t.describe(), "3x4 torus");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.neighbours(i).size(), 4u);
  for (uint64_t seed : {1, 2, 3}) {
    auto g = GossipGraph::make("regular", 10, 3, seed);
    EXPECT_TRUE(g.connected());
    for (int i = 0; i < 10; ++i) {
      EXPECT_EQ(g.neighbours(i).size(), 3u);
      for (int j : g.neighbours(i)) {
        EXPECT_NE(i, j);
        const auto& back = g.neighbours(j);
        EXPECT_TRUE(std::find(back.begin(), back.end(), i) != back.end());
      }
    }
  }
  EXPECT_THROW(GossipGraph::make("torus", 7, 0, 1), UsageError);
  EXPECT_THROW(GossipGraph::make("regular", 5, 3, 1), UsageError);  // P * r odd
  EXPECT_THROW(GossipGraph::make("star", 5, 0, 1), UsageError);
}

// Gradient of f(x) = ||x - c||^2 / 2 (or zero): exact, cheap, known optimum.
class QuadraticWorker : public GradientWorker {
 public:
  QuadraticWorker(size_t n, float c, bool zero) : n_(n), c_(c), zero_(zero) {}
  size_t num_params() const override { return n_; }
  void pull(const SnapshotPtr& s) override { x_ = s; }
  bool compute(const std::vector<int32_t>&, float* slot, double, const CancelSource*, uint64_t, GradResult* out) override {
    for (size_t i = 0; i < n_; ++i) slot[i] = zero_ ? 0.f : x_->data[i] - c_;
    out->loss = 0;
    out->finite = true;
    return true;
  }

 private:
  size_t n_;
  float c_;
  bool zero_;
  SnapshotPtr x_;
};

struct StopAfter : SwarmListener {
  explicit StopAfter(int64_t steps) : left(steps) {}
  bool on_time(double) override { return true; }
  bool after_step(int, float, double) override { return --left > 0; }
  int64_t left;
};

struct GossipRig {
  GossipRig(const SwarmConfig& cfg, int P, size_t n, bool zero_gradient, float c = 0.5f)
      : worker(n, c, zero_gradient), st(parse_straggler("exp:mean=1"), {}, P, 3) {
    for (int i = 0; i < P; ++i) samplers.emplace_back(100, 1, uint64_t(i));
    const std::vector<float> zero(n, 0.f);
    eng = std::make_unique<SwarmEngine>(cfg, std::vector<GradientWorker*>{&worker}, &samplers, &st, zero.data(), n, P);
  }
  QuadraticWorker worker;
  std::vector<Sampler> samplers;
  Straggler st;
  std::unique_ptr<SwarmEngine> eng;
};

TEST(Gossip, ExactAveragingPreservesTheMeanAndConvergesAtTheExpectedRate) {
  // With zero gradients only averaging moves the models. On the complete
  // graph a uniformly random pair's averaging removes, in expectation,
  // Phi / (P - 1) from Phi = sum_i ||x_i - x_bar||^2.
  const int P = 8;
  const size_t n = 256;
  SwarmConfig cfg;
  cfg.local_steps = 1;  // one interaction after every (null) step
  cfg.lr = 0;
  GossipRig rig(cfg, P, n, true);
  for (int i = 0; i < P; ++i) rig.eng->set_model(i, test::random_vector<float>(n, 10 + uint64_t(i)).data());
  std::vector<float> mean0(n), mean1(n);
  double phi0 = 0, phi1 = 0;
  rig.eng->average(mean0.data(), &phi0);
  const int64_t T = 120;
  StopAfter stop(T);
  rig.eng->run_virtual(stop);
  rig.eng->average(mean1.data(), &phi1);
  const int64_t interactions = rig.eng->stats().interactions;
  EXPECT_EQ(interactions, T - 1);  // the last step stops the run before its interaction
  for (size_t k = 0; k < n; ++k) EXPECT_NEAR(mean1[k], mean0[k], 1e-5);  // the mean is preserved
  const double observed = std::log(phi1 / phi0) / double(interactions);
  const double expected = std::log(1.0 - 1.0 / (P - 1));
  EXPECT_GT(observed / expected, 0.8);
  EXPECT_LT(observed / expected, 1.5);
}

TEST(Gossip, NodesMinimisingTheSameQuadraticReachConsensusAtItsMinimum) {
  SwarmConfig cfg;
  cfg.graph = "ring";
  cfg.local_steps = 3;
  cfg.bits = 8;
  cfg.quant_step = 4e-3;  // safe radius 0.51: wider than the starting spread of 0.4
  cfg.lr = 0.1f;
  GossipRig rig(cfg, 6, 100, false, 0.5f);
  for (int i = 0; i < 6; ++i) rig.eng->set_model(i, test::random_vector<float>(100, 20 + uint64_t(i), 0.3, 0.7).data());
  StopAfter stop(600);
  rig.eng->run_virtual(stop);
  std::vector<float> mean(100);
  double consensus = 0;
  rig.eng->average(mean.data(), &consensus);
  for (float m : mean) EXPECT_NEAR(m, 0.5f, 4e-3);  // within one lattice step e of the minimum
  EXPECT_LT(consensus, 1e-4);
  EXPECT_EQ(rig.eng->stats().out_of_range, 0);
}

TEST(Gossip, BytesAreCountedExactly) {
  for (bool blocking : {true, false})
    for (int bits : {0, 8, 16}) {
      SwarmConfig cfg;
      cfg.blocking = blocking;
      cfg.bits = bits;
      cfg.quant_step = 1e-3;
      cfg.local_steps = 2;
      cfg.lr = 0;
      const size_t n = 333;
      GossipRig rig(cfg, 4, n, true);
      StopAfter stop(50);
      rig.eng->run_virtual(stop);
      const SwarmStats s = rig.eng->stats();
      const int64_t per_message = int64_t(n) * (bits == 0 ? 4 : bits / 8);
      EXPECT_EQ(s.bytes_total(), s.interactions * per_message * (blocking ? 2 : 1)) << bits << " bits";
      EXPECT_GT(s.interactions, 0);
    }
}

using test::small_data;

TEST(SwarmTrainer, TrainsOnBothClocksAndReportsConsensusAndBytes) {
  for (const std::string clock : {"virtual", "real"})
    for (const std::string mode : {"blocking", "nonblocking"}) {
      const std::string path = ::testing::TempDir() + "/swarm_" + clock + mode + ".jsonl";
      TrainConfig c;
      c.model = "linear";
      c.dataset = "gaussian";
      c.batch = 16;
      c.lr = 0.1;
      c.workers = 4;
      c.variant = "swarm";
      c.graph = "ring";
      c.swarm_mode = mode;
      c.quantize = 8;
      c.clock = clock;
      c.straggler = clock == "real" ? "exp:mean=1ms" : "exp:mean=1";
      c.max_updates = 400;
      c.eval_every = "100";
      c.metrics = path;
      c.progress = "none";
      c.devices = "cpu";
      Trainer t(c, small_data());
      const RunSummary s = t.run();
      EXPECT_GT(s.final_eval.accuracy, 0.6) << clock << " " << mode;
      EXPECT_GT(s.interactions, 0);
      EXPECT_GT(s.bytes_sent, 0);
      std::ifstream in(path);
      std::string line;
      int evals = 0;
      while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["event"] != "eval" && j["event"] != "final") continue;
        ++evals;
        for (const char* key : {"consensus_distance", "bytes_total", "bytes_per_worker", "out_of_range"})
          EXPECT_TRUE(j.contains(key)) << key;
      }
      EXPECT_GE(evals, 2);
    }
}

TEST(SwarmTrainer, FashionMnistInVirtualTime) {
  struct stat st;
  if (stat(test::fashion_mnist_dir().c_str(), &st) != 0) GTEST_SKIP() << "Fashion-MNIST not installed";
  TrainConfig c;
  c.model = "lenet5";
  c.batch = 32;
  c.workers = 8;
  c.variant = "swarm";
  c.graph = "ring";
  c.local_steps = 4;
  c.quantize = 8;
  c.clock = "virtual";
  c.straggler = "exp:mean=1";
  c.time_budget = 150;
  c.eval_every = "0";
  c.progress = "none";
  c.devices = "cpu";
  Trainer t(c);
  const RunSummary s = t.run();
  EXPECT_GT(s.final_eval.accuracy, 0.6);
  EXPECT_EQ(s.out_of_range, 0);
  // 8-bit messages: a quarter of full precision's bytes per interaction.
  EXPECT_EQ(s.bytes_sent, s.interactions * 2 * int64_t(61706));
}

}  // namespace
}  // namespace adasync
