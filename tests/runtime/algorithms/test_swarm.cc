// SwarmSGD: the lattice quantizer, the gossip graphs, averaging dynamics with
// exact answers, and end-to-end runs on both clocks.
#include <atomic>
#include <gtest/gtest.h>
#include <pthread.h>

#include <cmath>
#include <set>
#include <fstream>
#include <sys/stat.h>
#include <thread>

#include "runtime/algorithms/swarm.h"
#include "runtime/drivers/swarm_drivers.h"
#include "runtime/run/trainer.h"
#include "tests/support/small_data.h"
#include "tests/support/test_util.h"

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
  EXPECT_THROW(LatticeQuantizer(4, 1e-3), Error);  // a contract: the flags are validated (BadFlags)
}

// Receiver models b = x + d with heavy-tailed d (Cauchy, scaled), and the
// per-block max |x - b| a sender that knew b would bound it by.
struct Pair {
  std::vector<float> x, b, true_bound;
};
Pair heavy_tailed_pair(size_t n, size_t block, double scale, uint64_t seed) {
  Pair p;
  p.x = test::random_vector<float>(n, seed, -2, 2);
  const auto u = test::random_vector<double>(n, seed + 100, 0.001, 0.999);
  p.b.resize(n);
  for (size_t i = 0; i < n; ++i) p.b[i] = p.x[i] + float(scale * std::tan(M_PI * (u[i] - 0.5)));
  for (size_t off = 0; off < n; off += block) {
    double m = 0;
    for (size_t i = off; i < std::min(n, off + block); ++i) m = std::max(m, std::fabs(double(p.x[i]) - double(p.b[i])));
    p.true_bound.push_back(float(m));
  }
  return p;
}

// The largest |out - x| / (e/2) over the decoded blocks (1 is exact to e/2).
double worst_half_steps(const SwarmCodec& c, const std::vector<unsigned char>& msg, const std::vector<float>& x,
                        const std::vector<float>& out, const std::vector<unsigned char>& failed) {
  double worst = 0;
  for (size_t k = 0, off = 0; off < x.size(); ++k, off += c.block()) {
    if (failed[k]) continue;
    const double e = c.step(msg.data(), k);
    for (size_t i = off; i < std::min(x.size(), off + c.block()); ++i) {
      const double err = std::fabs(double(out[i]) - double(x[i])) - 1e-7 * std::fabs(double(x[i]));
      worst = std::max(worst, err / (e / 2));
    }
  }
  return worst;
}

TEST(SwarmCodec, AdaptiveRoundTripIsExactToHalfAStepForEveryTrueBound) {
  for (int bits : {8, 16})
    for (size_t block : {size_t(1), size_t(7), size_t(256), size_t(1024)})
      for (double scale : {1e-6, 1e-2, 3.0})      // Cauchy differences: some far beyond the scale
        for (double slack : {1.0, 1.5, 40.0}) {  // a tight, a loose and a very loose bound
          SwarmCodec c(bits, 0, block);
          const size_t n = 5000;
          Pair p = heavy_tailed_pair(n, block, scale, uint64_t(bits + block));
          std::vector<float> bound(p.true_bound);
          for (float& v : bound) v *= float(slack);
          std::vector<unsigned char> msg(c.message_bytes(n)), failed(c.blocks(n), 9);
          std::vector<float> out(n, NAN);
          c.encode(p.x.data(), n, bound.data(), msg.data());
          const std::string where = std::to_string(bits) + " bits, block " + std::to_string(block) + ", scale " +
                                    std::to_string(scale) + ", slack " + std::to_string(slack);
          EXPECT_EQ(c.decode(msg.data(), p.b.data(), n, out.data(), failed.data()), 0u) << where;
          EXPECT_LE(worst_half_steps(c, msg, p.x, out, failed), 1.0) << where;
          // Each block's step is the rule's, not merely a safe one: 2 bound / (q - 4), or the floor.
          for (size_t k = 0; k < c.blocks(n); ++k) {
            double amax = 0;
            for (size_t i = k * block; i < std::min(n, (k + 1) * block); ++i) amax = std::max(amax, double(std::fabs(p.x[i])));
            const double rule = std::max(2.0 * bound[k] / ((1 << bits) - 4), amax * 0x1p-23);
            EXPECT_NEAR(c.step(msg.data(), k), rule, rule * 1e-6 + 1e-30) << where << ", block " << k;
          }
        }
}

TEST(SwarmCodec, BlocksBeyondTheSafeRangeAreSentAgainAtFullPrecision) {
  for (int bits : {8, 16})
    for (double fixed : {0.0, bits == 8 ? 1e-4 : 1e-6}) {  // safe radius 0.0128 or 0.0328
      SwarmCodec c(bits, fixed, 256);
      const size_t n = 4000;  // 16 blocks, the last one short
      Pair p = heavy_tailed_pair(n, 256, 1e-2, 7);
      // A sender guessing a tenth of the truth (or a fixed step): some blocks cannot decode.
      std::vector<float> bound(p.true_bound);
      for (float& v : bound) v *= 0.1f;
      std::vector<float> out(n, NAN), dist(c.blocks(n), -1);
      TransferScratch scratch;
      const TransferCount t = transfer(c, p.x.data(), p.b.data(), n, bound.data(), out.data(), dist.data(), &scratch);
      const std::string where = std::to_string(bits) + " bits, fixed " + std::to_string(fixed);
      EXPECT_GT(t.fallback_blocks, 0) << where;
      EXPECT_EQ(t.out_of_range, 0) << where;
      EXPECT_EQ(t.blocks, 16);
      // Every block either decodes to within e/2 or is the sender's, bit for bit.
      int64_t resent = 0, resent_coords = 0;
      for (size_t k = 0; k < 16; ++k) {
        const size_t off = k * 256, len = std::min<size_t>(256, n - off);
        if (scratch.failed[k]) {
          ++resent, resent_coords += int64_t(len);
          for (size_t i = off; i < off + len; ++i) ASSERT_EQ(out[i], p.x[i]) << where;
          EXPECT_FLOAT_EQ(dist[k], p.true_bound[k]) << where;  // exact where sent again
        } else {
          EXPECT_GE(dist[k], p.true_bound[k]) << where;  // the receiver's bound is a bound
        }
      }
      EXPECT_EQ(t.fallback_blocks, resent);
      EXPECT_LE(worst_half_steps(c, scratch.msg, p.x, out, scratch.failed), 1.0) << where;
      // Bytes: the message, the NACK (one bit per block: 2 bytes) and the blocks again in floats.
      const int64_t message = int64_t(n) * (bits / 8) + 16 * 8;
      EXPECT_EQ(int64_t(c.message_bytes(n)), message);
      EXPECT_EQ(t.sender_bytes, message + 4 * resent_coords) << where;
      EXPECT_EQ(t.receiver_bytes, 2) << where;
      EXPECT_EQ(t.fallback_bytes, 2 + 4 * resent_coords) << where;
      // The same data with the raw quantizer and a fixed step decodes some values wrongly.
      if (fixed > 0) {
        LatticeQuantizer raw(bits, fixed);
        std::vector<unsigned char> m(raw.message_bytes(n));
        std::vector<float> o(n);
        raw.encode(p.x.data(), n, m.data());
        raw.decode(m.data(), p.b.data(), n, o.data());
        EXPECT_GT(count_out_of_range(p.x.data(), o.data(), n, fixed), 0u);
      }
    }
}

TEST(SwarmCodec, NonFiniteValuesAndByteCounts) {
  SwarmCodec c8(8, 0, 1024), c16(16, 0, 1024), fp(0, 0, 1024);
  EXPECT_EQ(c8.message_bytes(1), 1u + 8);
  EXPECT_EQ(c8.message_bytes(1024), 1024u + 8);
  EXPECT_EQ(c8.message_bytes(1025), 1025u + 16);
  EXPECT_EQ(c16.message_bytes(1025), 2050u + 16);
  EXPECT_EQ(fp.message_bytes(1025), 4100u);
  EXPECT_EQ(c8.nack_bytes(1025), 1u);
  EXPECT_EQ(c8.nack_bytes(9 * 1024), 2u);
  EXPECT_THROW(SwarmCodec(8, -1, 1024), Error);  // contracts: the flags are validated (BadFlags)
  EXPECT_THROW(SwarmCodec(4, 0, 1024), Error);
  // A NaN cannot be quantised: its block goes at full precision, the others not.
  const size_t n = 3000;
  auto x = test::random_vector<float>(n, 5);
  x[1500] = NAN;
  const std::vector<float> bound(c8.blocks(n), 0.f);
  std::vector<float> out(n);
  TransferScratch s;
  const TransferCount t = transfer(c8, x.data(), x.data(), n, bound.data(), out.data(), nullptr, &s);
  EXPECT_EQ(t.fallback_blocks, 1);
  EXPECT_EQ(s.failed[1], 1);
  EXPECT_TRUE(std::isnan(out[1500]));
  EXPECT_EQ(t.out_of_range, 0);
}

TEST(GossipGraphs, ShapesAndDegrees) {
  auto c = GossipGraph::make(GraphKind::Complete, 6, 0, 1);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(c.neighbours(i).size(), 5u);
  auto r = GossipGraph::make(GraphKind::Ring, 6, 0, 1);
  EXPECT_EQ(r.neighbours(0), (std::vector<int>{1, 5}));
  auto t = GossipGraph::make(GraphKind::Torus, 12, 0, 1);  // 3 x 4
  EXPECT_EQ(t.describe(), "3x4 torus");
  for (int i = 0; i < 12; ++i) EXPECT_EQ(t.neighbours(i).size(), 4u);
  for (uint64_t seed : {1, 2, 3}) {
    auto g = GossipGraph::make(GraphKind::Regular, 10, 3, seed);
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
  // Contracts: the flags are validated before a graph is made (BadFlags).
  EXPECT_THROW(GossipGraph::make(GraphKind::Torus, 7, 0, 1), Error);
  EXPECT_THROW(GossipGraph::make(GraphKind::Regular, 5, 3, 1), Error);  // P * r odd
}

// Gradient of f(x) = ||x - c||^2 / 2 (or zero): exact, cheap, known optimum.
class QuadraticWorker : public GradientWorker {
 public:
  QuadraticWorker(size_t n, float c, bool zero) : n_(n), c_(c), zero_(zero) {}
  size_t num_params() const override { return n_; }
  void pull(const SnapshotPtr& s) override { x_ = s; }
  bool compute(const std::vector<int32_t>&, float* slot, double delay, const CancelSource* cancel, uint64_t gen,
               GradResult* out) override {
    if (delay > 0 && cancel != nullptr && !cancel->sleep_unless_cancelled(delay, gen)) return false;
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

// Node threads call it at once on the real clock: the count is atomic.
struct StopAfter : SwarmListener {
  explicit StopAfter(int64_t steps) : left(steps) {}
  bool on_time(double) override { return true; }
  bool after_step(int, float, bool, double) override { return left.fetch_sub(1) > 1; }
  std::atomic<int64_t> left;
};

struct GossipRig {
  GossipRig(const SwarmConfig& cfg, int P, size_t n, bool zero_gradient, float c = 0.5f)
      : worker(n, c, zero_gradient), st(parse_straggler("exp:mean=1", "--straggler"), {}, P, 3) {
    for (int i = 0; i < P; ++i) samplers.emplace_back(100, 1, uint64_t(i));
    const std::vector<float> zero(n, 0.f);
    eng = std::make_unique<SwarmEngine>(cfg, zero.data(), n, P);
    setup = SwarmSetup{{&worker}, &samplers, &st, nullptr};
  }
  double run(SwarmListener& l) { return run_swarm_virtual(*eng, setup, l); }
  QuadraticWorker worker;
  std::vector<Sampler> samplers;
  Straggler st;
  std::unique_ptr<SwarmEngine> eng;
  SwarmSetup setup;
};

// --inject is parsed once, at the flag, into typed faults that print back as
// written; a bad item is named with the flag.
TEST(FaultList, ParsesIntoTypedFaultsThatPrintBack) {
  const std::vector<Fault> f = parse_faults("nan@2:10,throw@1:5,hang@3:20:2s", "--inject");
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].kind, Fault::Kind::Nan);
  EXPECT_EQ(f[1].worker, 1);
  EXPECT_EQ(f[1].at, 5);
  EXPECT_DOUBLE_EQ(f[2].seconds, 2);
  EXPECT_EQ(to_string(f[0]) + "," + to_string(f[1]) + "," + to_string(f[2]), "nan@2:10,throw@1:5,hang@3:20:2s");
  EXPECT_TRUE(parse_faults("", "--inject").empty());
  for (const char* bad : {"nan@1", "boom@1:2", "throw@x:1", "nan@1:0", "hang@1:2", "nan@-2:1"}) {
    try {
      parse_faults(bad, "--inject");
      ADD_FAILURE() << bad << " parsed";
    } catch (const UsageError& e) {
      EXPECT_EQ(std::string(e.what()).rfind("--inject: ", 0), 0u) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

// Fault injection takes the worker step every algorithm shares: node i's
// n-th computation is worker i's. A node whose computation throws leaves: no
// more steps, nobody's partner, not in the average.
struct Recorder : SwarmListener {
  explicit Recorder(int64_t steps) : left(steps) {}
  bool on_time(double) override { return true; }
  bool after_step(int node, float, bool finite, double now) override {
    if (!finite) nonfinite.push_back(node);
    if (node == watch) times.push_back(now);
    return --left > 0;
  }
  bool node_failed(int node, const std::string& what, int l, double now) override {
    failed.push_back(node);
    this->what = what;
    at = now;
    if (eng != nullptr) {  // its model as it leaves
      std::vector<float> pub(n), dist(eng->blocks());
      frozen.resize(n);
      eng->node_state(node, frozen.data(), pub.data(), dist.data());
    }
    return l > 0;
  }
  int64_t left;
  int watch = -1;
  SwarmEngine* eng = nullptr;
  size_t n = 0;
  std::vector<int> nonfinite, failed;
  std::vector<double> times;
  std::vector<float> frozen;
  std::string what;
  double at = -1;
};

TEST(SwarmFaults, AFailedNodeLeavesTheGraphAndTheAverage) {
  const int P = 4;
  const size_t n = 64;
  SwarmConfig cfg;
  cfg.local_steps = 1;
  cfg.lr = 0;  // only averaging moves the models
  GossipRig rig(cfg, P, n, true);
  for (int i = 0; i < P; ++i) rig.eng->set_model(i, test::random_vector<float>(n, 40 + uint64_t(i)).data());
  const FaultPlan faults(parse_faults("throw@1:3", "--inject"));
  rig.setup.faults = &faults;
  Recorder rec(200);
  rec.eng = rig.eng.get();
  rec.n = n;
  rig.run(rec);
  ASSERT_EQ(rec.failed, std::vector<int>{1});
  EXPECT_EQ(rec.what, "injected failure at computation 3");
  EXPECT_EQ(rig.eng->stats().steps_by_node[1], 2);  // two steps, the third threw
  // Nobody averaged with it afterwards: its model is as it left.
  std::vector<float> x1(n), pub(n), dist(rig.eng->blocks());
  rig.eng->node_state(1, x1.data(), pub.data(), dist.data());
  EXPECT_EQ(x1, rec.frozen);
  // The average is that of the three others; they reached consensus.
  std::vector<float> avg(n), x(n), mean(n, 0.f);
  double consensus = 0;
  rig.eng->average(avg.data(), &consensus);
  for (int i : {0, 2, 3}) {
    rig.eng->node_state(i, x.data(), pub.data(), dist.data());
    for (size_t k = 0; k < n; ++k) mean[k] += x[k] / 3;
  }
  for (size_t k = 0; k < n; ++k) EXPECT_NEAR(avg[k], mean[k], 1e-5);
  EXPECT_LT(consensus, 1e-6);
}

TEST(SwarmFaults, NonFiniteStepsAreNotTakenAndHangsDelayTheStep) {
  const int P = 3;
  const size_t n = 16;
  SwarmConfig cfg;
  cfg.local_steps = 2;
  cfg.lr = 0.1f;
  QuadraticWorker worker(n, 0.5f, false);
  Straggler st(parse_straggler("const:value=1", "--straggler"), {}, P, 3);
  std::vector<Sampler> samplers;
  for (int i = 0; i < P; ++i) samplers.emplace_back(100, 1, uint64_t(i));
  const std::vector<float> zero(n, 0.f);
  SwarmEngine eng(cfg, zero.data(), n, P);
  const FaultPlan faults(parse_faults("nan@0:2,nan@0:5,hang@2:4:5", "--inject"));
  Recorder rec(60);
  rec.watch = 2;
  run_swarm_virtual(eng, SwarmSetup{{&worker}, &samplers, &st, &faults}, rec);
  EXPECT_EQ(rec.nonfinite, (std::vector<int>{0, 0}));
  EXPECT_EQ(eng.stats().nonfinite, 2);
  EXPECT_EQ(eng.stats().local_steps + 2, 60);
  std::vector<float> avg(n);
  double consensus = 0;
  eng.average(avg.data(), &consensus);
  for (float v : avg) EXPECT_TRUE(std::isfinite(v));
  // Node 2 computes for 1 s a step; its 4th takes 5 s more.
  ASSERT_GE(rec.times.size(), 5u);
  EXPECT_EQ(std::vector<double>(rec.times.begin(), rec.times.begin() + 5),
            (std::vector<double>{1, 2, 3, 9, 10}));
}

TEST(SwarmFaultsRealClock, StopEndsAnInjectedHangAtOnce) {
  const int P = 2;
  const size_t n = 16;
  SwarmConfig cfg;
  QuadraticWorker w0(n, 0.5f, false), w1(n, 0.5f, false);
  Straggler st(parse_straggler("const:value=1ms", "--straggler"), {}, P, 3);
  std::vector<Sampler> samplers;
  for (int i = 0; i < P; ++i) samplers.emplace_back(100, 1, uint64_t(i));
  const std::vector<float> zero(n, 0.f);
  SwarmEngine eng(cfg, zero.data(), n, P);
  const FaultPlan faults(parse_faults("hang@1:2:60s", "--inject"));
  SwarmThreads nodes(eng, SwarmSetup{{&w0, &w1}, &samplers, &st, &faults});
  StopAfter stop(50);  // node 0's steps end the run while node 1 hangs
  const WallTimer t;
  nodes.run(stop);
  EXPECT_LT(t.seconds(), 20.0);
  EXPECT_EQ(eng.stats().steps_by_node[1], 1);
}

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
  rig.run(stop);
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
  cfg.graph = GraphKind::Ring;
  cfg.local_steps = 3;
  cfg.bits = 8;
  cfg.quant_step = 4e-3;  // safe radius 0.51: wider than the starting spread of 0.4
  cfg.lr = 0.1f;
  GossipRig rig(cfg, 6, 100, false, 0.5f);
  for (int i = 0; i < 6; ++i) rig.eng->set_model(i, test::random_vector<float>(100, 20 + uint64_t(i), 0.3, 0.7).data());
  StopAfter stop(600);
  rig.run(stop);
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
      rig.run(stop);
      const SwarmStats s = rig.eng->stats();
      // 333 coordinates: one block, with its 8-byte header (step and check).
      const int64_t per_message = bits == 0 ? 4 * int64_t(n) : int64_t(n) * (bits / 8) + 8;
      EXPECT_EQ(s.fallback_bytes, 0);  // identical models: nothing is sent again
      EXPECT_EQ(s.bytes_total(), s.interactions * per_message * (blocking ? 2 : 1)) << bits << " bits";
      EXPECT_GT(s.interactions, 0);
    }
}

TEST(Gossip, TwoNodesFarApartAverageCorrectlyWithAnyStep) {
  // Models 10 apart: 78 times the 8-bit safe radius of a fixed step 1e-3.
  for (bool blocking : {true, false})
    for (double fixed : {0.0, 1e-3}) {
      SwarmConfig cfg;
      cfg.graph = GraphKind::Ring;
      cfg.blocking = blocking;
      cfg.bits = 8;
      cfg.quant_step = fixed;
      cfg.local_steps = 1;
      cfg.lr = 0;
      const size_t n = 3000;
      GossipRig rig(cfg, 2, n, true);
      const auto x0 = test::random_vector<float>(n, 30, -1, 1);
      auto x1 = test::random_vector<float>(n, 31, -1, 1);
      for (float& v : x1) v += 10;
      rig.eng->set_model(0, x0.data());
      rig.eng->set_model(1, x1.data());
      StopAfter stop(2);  // one interaction
      rig.run(stop);
      const SwarmStats s = rig.eng->stats();
      ASSERT_EQ(s.interactions, 1);
      EXPECT_EQ(s.out_of_range, 0);
      // Nothing told the first sender how far apart the models are: its 3
      // blocks are sent again. An adaptive reply uses the distance it learnt
      // and decodes; a fixed one cannot and is sent again too.
      const int64_t resent_messages = blocking && fixed > 0 ? 2 : 1;
      EXPECT_EQ(s.fallback_blocks, 3 * resent_messages);
      const int64_t message = int64_t(n) + 3 * 8;
      EXPECT_EQ(s.bytes_total(), message * (blocking ? 2 : 1) + resent_messages * (1 + 4 * int64_t(n)));
      EXPECT_EQ(s.fallback_bytes, resent_messages * (1 + 4 * int64_t(n)));
      // Blocking: both hold the average, up to half the reply's step (its
      // bound is at most 12). Non-blocking: the initiator holds it alone.
      std::vector<float> avg(n);
      double consensus = 0;
      rig.eng->average(avg.data(), &consensus);
      const double half_step = fixed > 0 ? fixed / 2 : 12.0 / 252;
      if (blocking) {
        for (size_t k = 0; k < n; ++k) ASSERT_NEAR(avg[k], 0.5 * (x0[k] + x1[k]), half_step / 2) << k;
        EXPECT_LT(consensus, double(n) * half_step * half_step);
      } else {
        // The initiator's model and the other's, averaged: (3 x_a + x_b) / 4 for one of the two.
        double err0 = 0, err1 = 0;
        for (size_t k = 0; k < n; ++k) {
          err0 = std::max(err0, std::fabs(avg[k] - 0.25 * (3 * x0[k] + x1[k])));
          err1 = std::max(err1, std::fabs(avg[k] - 0.25 * (x0[k] + 3 * x1[k])));
        }
        EXPECT_LE(std::min(err0, err1), half_step / 4 + 1e-5);
      }
    }
}

TEST(Gossip, AdaptiveStepReachesConsensusAtTheMinimumWithFewResends) {
  for (bool blocking : {true, false}) {
    SwarmConfig cfg;
    cfg.graph = GraphKind::Torus;
    cfg.blocking = blocking;
    cfg.local_steps = 3;
    cfg.bits = 8;
    cfg.quant_block = 64;
    cfg.lr = 0.1f;
    GossipRig rig(cfg, 6, 1000, false, 0.5f);
    for (int i = 0; i < 6; ++i) rig.eng->set_model(i, test::random_vector<float>(1000, 40 + uint64_t(i), -5, 5).data());
    StopAfter stop(1500);
    rig.run(stop);
    std::vector<float> mean(1000);
    double consensus = 0;
    rig.eng->average(mean.data(), &consensus);
    // Models started 10 apart; the step shrinks with their distance, so they meet far
    // more closely than a fixed step fitted to the start (e = 10 / 127) would allow.
    for (float m : mean) ASSERT_NEAR(m, 0.5f, 1e-4) << blocking;
    EXPECT_LT(consensus, 1e-8) << blocking;
    const SwarmStats s = rig.eng->stats();
    EXPECT_EQ(s.out_of_range, 0);
    EXPECT_GT(s.fallback_blocks, 0);  // the first exchanges cannot know the spread
    EXPECT_LT(double(s.fallback_blocks), 0.05 * double(s.blocks_sent)) << blocking;
  }
}

// Nodes in shared memory (SwarmSGD over MPI, ranks on one host): two
// engines holding nodes [0, 3) and [3, 6) of one graph, their arrays and
// process-shared robust locks in memory both reach, average in place exactly
// as one engine holding all six does: the same calls give the same models
// bit for bit, in both modes, at full precision and quantised.
struct SharedArrays {
  SharedArrays(int P, size_t n, size_t blocks) : locks(size_t(P)), data(size_t(P) * (2 * n + blocks)) {
    for (int i = 0; i < P; ++i) {
      init_shared_lock(&locks[size_t(i)]);
      float* x = data.data() + size_t(i) * (2 * n + blocks);
      nodes.push_back(SwarmSharedNode{&locks[size_t(i)], x, x + n, x + 2 * n});
    }
  }
  std::vector<pthread_mutex_t> locks;
  std::vector<float> data;
  std::vector<SwarmSharedNode> nodes;
};

TEST(SwarmSharedMemory, TwoEnginesAverageInPlaceBitForBitAsOne) {
  const int P = 6;
  const size_t n = 700;
  for (bool blocking : {true, false})
    for (int bits : {0, 8}) {
      SwarmConfig cfg;
      cfg.blocking = blocking;
      cfg.bits = bits;
      cfg.quant_block = 256;
      cfg.local_steps = 2;
      cfg.geometric = true;
      cfg.lr = 0.1f;
      const std::vector<float> zero(n, 0.f);
      SwarmEngine one(cfg, zero.data(), n, P);
      SharedArrays mem(P, n, SwarmCodec(bits, 0, 256).blocks(n));
      SwarmEngine lo(cfg, zero.data(), n, P, 0, 3, nullptr, &mem.nodes);
      SwarmEngine hi(cfg, zero.data(), n, P, 3, P, nullptr, &mem.nodes);
      auto owner = [&](int i) -> SwarmEngine& { return i < 3 ? lo : hi; };
      for (int i = 0; i < P; ++i) {
        const auto x = test::random_vector<float>(n, 50 + uint64_t(i), -1, 1);
        one.set_model(i, x.data());
        owner(i).set_model(i, x.data());
      }
      for (int t = 0; t < 40; ++t)
        for (int i = 0; i < P; ++i) {
          const auto g = test::random_vector<float>(n, 1000 + uint64_t(t * P + i), -1, 1);
          for (SwarmEngine* e : {&one, &owner(i)}) {
            std::copy(g.begin(), g.end(), e->gradient(i));
            e->apply(i, true);
            e->after_step(i);
          }
        }
      const SwarmStats a = one.stats();
      SwarmStats b = lo.stats();
      b += hi.stats();
      ASSERT_GT(a.interactions, 50);
      EXPECT_EQ(b.interactions, a.interactions);
      EXPECT_EQ(b.by_message, 0);
      EXPECT_EQ(b.bytes_sent, a.bytes_sent);
      EXPECT_EQ(b.fallback_blocks, a.fallback_blocks);
      const size_t nb = one.blocks();
      std::vector<float> x1(n), p1(n), d1(nb), x2(n), p2(n), d2(nb);
      for (int i = 0; i < P; ++i) {
        one.node_state(i, x1.data(), p1.data(), d1.data());
        owner(i).node_state(i, x2.data(), p2.data(), d2.data());
        ASSERT_EQ(x1, x2) << "node " << i << (blocking ? " blocking " : " non-blocking ") << bits << " bits";
        ASSERT_EQ(p1, p2) << "node " << i;
        ASSERT_EQ(d1, d2) << "node " << i;
      }
    }
}

// A process killed while it held a node's lock (a lost rank) leaves it to
// the next owner: the exchange goes on instead of waiting for ever.
TEST(SwarmSharedMemory, ALockWhoseHolderDiedIsTakenOn) {
  const size_t n = 64;
  SwarmConfig cfg;
  cfg.graph = GraphKind::Ring;
  cfg.local_steps = 1;
  cfg.lr = 0;
  const std::vector<float> zero(n, 0.f), one_v(n, 1.f);
  SharedArrays mem(2, n, 0);
  SwarmEngine a(cfg, zero.data(), n, 2, 0, 1, nullptr, &mem.nodes);
  SwarmEngine b(cfg, one_v.data(), n, 2, 1, 2, nullptr, &mem.nodes);
  std::thread([&] { pthread_mutex_lock(mem.nodes[1].lock); }).join();  // ends holding node 1's lock
  std::fill(a.gradient(0), a.gradient(0) + n, 0.f);
  a.apply(0, true);
  a.after_step(0);  // node 0 averages with node 1, in place
  EXPECT_EQ(a.stats().interactions, 1);
  std::vector<float> x(n), p(n), d;
  b.node_state(1, x.data(), p.data(), d.data());
  for (float v : x) ASSERT_EQ(v, 0.5f);
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
      c.set_variant("swarm");
      c.graph = GraphKind::Ring;
      c.swarm_mode = parse_enum<SwarmMode>(mode, "--swarm-mode");
      c.quantize = 8;
      c.clock = parse_enum<ClockKind>(clock, "--clock");
      c.straggler = clock == "real" ? "exp:mean=1ms" : "exp:mean=1";
      c.max_updates = 400;
      c.eval_every = "100";
      c.metrics = path;
      c.progress = Progress::None;
      c.devices = Devices::Cpu;
      Trainer t(c, small_data());
      const RunSummary s = t.run();
      EXPECT_GT(s.final_eval.accuracy, 0.6) << clock << " " << mode;
      EXPECT_GT(s.interactions, 0);
      EXPECT_GT(s.bytes_sent, 0);
      EXPECT_EQ(s.out_of_range, 0) << clock << " " << mode;
      std::ifstream in(path);
      std::string line;
      int evals = 0;
      while (std::getline(in, line)) {
        auto j = nlohmann::json::parse(line);
        if (j["event"] != "eval" && j["event"] != "final") continue;
        ++evals;
        for (const char* key : {"consensus_distance", "bytes_total", "bytes_per_worker", "out_of_range",
                                 "fallback_blocks", "fallback_fraction", "fallback_bytes"})
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
  c.set_variant("swarm");
  c.graph = GraphKind::Ring;
  c.local_steps = 4;
  c.quantize = 8;
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.time_budget = 150;
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  Trainer t(c);
  const RunSummary s = t.run();
  EXPECT_GT(s.final_eval.accuracy, 0.6);
  EXPECT_EQ(s.out_of_range, 0);
  // 8-bit messages: a byte per parameter and 8 per block of 1024 (61 blocks),
  // both ways, plus what was sent again at full precision (rare, counted).
  EXPECT_EQ(s.bytes_sent, s.interactions * 2 * int64_t(61706 + 8 * 61) + s.fallback_bytes);
  EXPECT_LT(double(s.bytes_sent) / double(s.interactions * 2 * 4 * 61706), 0.27);
}

}  // namespace
}  // namespace adasync
