// The engine on GPUs: CUDA workers against CPU workers, the update on the
// device against the host parameter server, asynchronous variants with
// workers sharing one GPU, bit-exact replay and the virtual clock on the device.
// Labelled gpu: each test skips, saying why, when no device is usable.
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <filesystem>

#include "kernels/collective.h"
#include "runtime/run/trainer.h"
#include "tests/support/test_util.h"

namespace adasync {
namespace {

using test::l2_rel_error;

std::shared_ptr<const DataSplit> fashion() {
  static std::shared_ptr<const DataSplit> d = [] {
    struct stat st;
    if (stat(test::fashion_mnist_dir().c_str(), &st) != 0) return std::shared_ptr<const DataSplit>();
    return std::make_shared<const DataSplit>(load_dataset("fashion-mnist", "", 1));
  }();
  return d;
}

class Gpu : public test::GpuTest {
 protected:
  void SetUp() override {
    GpuTest::SetUp();
    if (IsSkipped()) return;
    if (!fashion()) GTEST_SKIP() << "Fashion-MNIST not installed at " << test::fashion_mnist_dir();
  }
};

TEST_F(Gpu, CudaWorkerGradientMatchesTheCpuWorker) {
  const DataSplit& d = *fashion();
  auto cpu_ctx = Context::cpu();
  auto gpu_ctx = Context::cuda(0, "w0");
  gpu_ctx->tf32_conv = false;  // FP32 throughout: the twins must agree closely
  ModelWorker cw(0, *cpu_ctx, "cnn", d.train, 32), gw(0, *gpu_ctx, "cnn", d.train, 32);
  std::vector<float> init(cw.num_params());
  cw.model().init_params(init.data(), 9);
  auto snap = std::make_shared<Snapshot>(Snapshot{0, init.data(), init.size()});
  std::vector<int32_t> idx(32);
  for (int i = 0; i < 32; ++i) idx[size_t(i)] = i * 997 % 60000;
  Buffer<float> gpu_slot(MemKind::Pinned, init.size());
  std::vector<float> cpu_slot(init.size());
  for (int rep = 0; rep < 4; ++rep) {  // eager steps, then the captured graph
    GradResult rc, rg;
    cw.pull(snap);
    gw.pull(snap);
    ASSERT_TRUE(cw.compute(idx, cpu_slot.data(), 0, nullptr, 0, &rc));
    ASSERT_TRUE(gw.compute(idx, gpu_slot.data(), 0, nullptr, 0, &rg));
    EXPECT_NEAR(rg.loss, rc.loss, 1e-4 * rc.loss) << "step " << rep;
    EXPECT_TRUE(rg.finite);
    const std::vector<float> g(gpu_slot.data(), gpu_slot.data() + init.size());
    EXPECT_LT(l2_rel_error(g, cpu_slot), 1e-4) << "step " << rep;
  }
}

// A residual network with batch norm and dropout, its images augmented: the
// batch statistics, masks, crops and flips of the CUDA worker (graph replays
// included, with a new epoch each step) are the CPU worker's.
TEST_F(Gpu, CudaResidualWorkerMatchesTheCpuWorker) {
  const DataSplit& d = *fashion();
  auto cpu_ctx = Context::cpu();
  auto gpu_ctx = Context::cuda(0, "w0");
  gpu_ctx->tf32_conv = false;
  const std::string arch = "conv3x3-16,bn,relu,res16,drop20,res32-s2,res32-s2-proj,gap,fc";
  ModelWorker cw(0, *cpu_ctx, arch, d.train, 32), gw(0, *gpu_ctx, arch, d.train, 32);
  Augmentation a;
  a.on = true;
  a.seed = 5;
  a.fill = {-0.8f};
  cw.set_augmentation(a);
  gw.set_augmentation(a);
  std::vector<float> init(cw.num_params());
  cw.model().init_params(init.data(), 9);
  auto snap = std::make_shared<Snapshot>(Snapshot{0, init.data(), init.size()});
  std::vector<int32_t> idx(32);
  for (int i = 0; i < 32; ++i) idx[size_t(i)] = i * 997 % 60000;
  Buffer<float> gpu_slot(MemKind::Pinned, init.size());
  std::vector<float> cpu_slot(init.size());
  for (int rep = 0; rep < 4; ++rep) {
    GradResult rc, rg;
    cw.pull(snap);
    gw.pull(snap);
    cw.set_epoch(uint64_t(rep));
    gw.set_epoch(uint64_t(rep));
    ASSERT_TRUE(cw.compute(idx, cpu_slot.data(), 0, nullptr, 0, &rc));
    ASSERT_TRUE(gw.compute(idx, gpu_slot.data(), 0, nullptr, 0, &rg));
    EXPECT_NEAR(rg.loss, rc.loss, 1e-4 * rc.loss) << "step " << rep;
    const std::vector<float> g(gpu_slot.data(), gpu_slot.data() + init.size());
    EXPECT_LT(l2_rel_error(g, cpu_slot), 1e-4) << "step " << rep;  // statistics in the buffer slots too
  }
}

TrainConfig gpu_config() {
  TrainConfig c;
  c.devices = Devices::Cuda;
  c.eval_every = "0";
  c.progress = Progress::None;
  return c;
}

TEST_F(Gpu, CnnOnTheGpuReachesTheCpuAccuracyBand) {
  TrainConfig c = gpu_config();
  c.max_updates = 300;
  Trainer g(c, fashion());
  const RunSummary sg = g.run();
  c.devices = Devices::Cpu;
  Trainer cpu(c, fashion());
  const RunSummary sc = cpu.run();
  EXPECT_EQ(sg.updates, 300);
  EXPECT_GE(sg.final_eval.accuracy, 0.80);
  EXPECT_NEAR(sg.final_eval.accuracy, sc.final_eval.accuracy, 0.025);
}

TEST_F(Gpu, DeviceUpdateMatchesTheHostParameterServer) {
  TrainConfig c = gpu_config();
  c.max_updates = 5;
  c.deterministic = true;
  c.aggregate = Aggregate::Device;
  Trainer dev(c, fashion());
  const RunSummary a = dev.run();
  c.aggregate = Aggregate::Host;
  Trainer host(c, fashion());
  const RunSummary b = host.run();
  EXPECT_EQ(a.updates, 5);
  EXPECT_EQ(b.updates, 5);
  EXPECT_LT(l2_rel_error(a.params, b.params), 1e-5);
}

TEST_F(Gpu, FourAsyncWorkersShareOneGpuAndRecordStaleness) {
  TrainConfig c = gpu_config();
  c.workers = 4;
  c.set_variant("k-async");
  c.k = 2;
  c.max_updates = 200;
  c.straggler = "exp:mean=2ms";
  Trainer t(c, fashion());
  const RunSummary s = t.run();
  EXPECT_EQ(s.updates, 200);
  EXPECT_GT(s.stats.staleness_max, 0);
  EXPECT_GT(s.final_eval.accuracy, 0.6);
  for (int w = 0; w < 4; ++w) EXPECT_GT(s.stats.counted_by_worker[size_t(w)], 0) << "worker " << w;
}

TEST_F(Gpu, KSyncCancelsStragglersOnTheDevice) {
  TrainConfig c = gpu_config();
  c.workers = 4;
  c.set_variant("k-sync");
  c.k = 2;
  c.max_updates = 60;
  c.straggler = "exp:mean=5ms";
  Trainer t(c, fashion());
  const RunSummary s = t.run();
  EXPECT_EQ(s.updates, 60);
  EXPECT_EQ(s.stats.staleness_max, 0);
  EXPECT_GT(s.stats.cancelled + s.stats.dropped_stale, 0);
}

TEST_F(Gpu, RecordedAsyncRunReplaysBitForBitOnTheDevice) {
  const std::string trace = ::testing::TempDir() + "/gpu_trace.jsonl";
  TrainConfig c = gpu_config();
  c.workers = 3;
  c.set_variant("async");
  c.max_updates = 40;
  c.deterministic = true;
  c.trace = trace;
  Trainer rec(c, fashion());
  const RunSummary a = rec.run();
  TrainConfig r = gpu_config();
  r.replay = trace;
  r.deterministic = true;
  Trainer rep(r, fashion());
  const RunSummary b = rep.run();
  EXPECT_EQ(a.checksum, b.checksum);
}

TEST_F(Gpu, DeviceSyncCheckpointResumesWhereItStopped) {
  const std::string dir = ::testing::TempDir() + "/gpu_ckpt";
  std::filesystem::remove_all(dir);
  TrainConfig whole = gpu_config();
  whole.max_updates = 60;
  whole.deterministic = true;
  const RunSummary a = Trainer(whole, fashion()).run();
  TrainConfig first = whole;
  first.max_updates = 25;
  first.checkpoint_dir = dir;
  const RunSummary f = Trainer(first, fashion()).run();
  TrainConfig rest = whole;
  rest.checkpoint_dir = dir;
  rest.resume = true;
  const RunSummary b = Trainer(rest, fashion()).run();
  // All three took the device path (NCCL + device optimizer), not the PS.
  EXPECT_TRUE(a.device_update);
  EXPECT_TRUE(f.device_update);
  EXPECT_TRUE(b.device_update);
  EXPECT_EQ(f.updates, 25);
  EXPECT_EQ(b.updates, 60);
  // Same batches, same parameters and momentum, deterministic kernels.
  EXPECT_LT(l2_rel_error(b.params, a.params), 1e-6);
}

TEST_F(Gpu, VirtualClockOnTheGpuIsBitIdenticalAcrossRuns) {
  TrainConfig c = gpu_config();
  c.clock = ClockKind::Virtual;
  c.workers = 4;
  c.set_variant("k-async");
  c.k = 2;
  c.straggler = "exp:mean=1";
  c.max_updates = 100;
  c.deterministic = true;
  const RunSummary a = Trainer(c, fashion()).run();
  const RunSummary b = Trainer(c, fashion()).run();
  EXPECT_EQ(a.updates, 100);
  EXPECT_FALSE(a.device_update);  // the virtual clock always goes through the PS
  EXPECT_GT(a.stats.staleness_max, 0);
  EXPECT_EQ(a.checksum, b.checksum);
  EXPECT_EQ(a.params, b.params);
  // And it trained: the GPU gradients moved the loss.
  EXPECT_GT(a.final_eval.accuracy, 0.5);
}

TEST_F(Gpu, SwarmNodesShareTheGpu) {
  TrainConfig c = gpu_config();
  c.model = "lenet5";
  c.set_variant("swarm");
  c.workers = 3;
  c.graph = GraphKind::Ring;
  c.quantize = 8;
  c.max_updates = 600;
  const RunSummary s = Trainer(c, fashion()).run();
  EXPECT_GT(s.interactions, 0);
  EXPECT_GT(s.final_eval.accuracy, 0.6);
}

TEST_F(Gpu, AFailedGpuWorkerLeavesAndTheRestFinish) {
  TrainConfig c = gpu_config();
  c.workers = 3;
  c.set_variant("k-async");
  c.k = 2;
  c.max_updates = 80;
  c.inject = "throw@2:5";
  testing::internal::CaptureStderr();
  const RunSummary s = Trainer(c, fashion()).run();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.updates, 80);
  EXPECT_EQ(s.failed_workers, std::vector<int>{2});
}

TEST_F(Gpu, NcclAllReduceSumsAcrossEveryGpu) {
  const int n = cuda_device_count();
  // One rank sums nothing: that would pass whatever NCCL did.
  if (n < 2) GTEST_SKIP() << "NCCL all-reduce needs at least 2 GPUs, found " << n;
  std::vector<std::unique_ptr<Context>> ctxs;
  std::vector<Context*> ranks;
  std::vector<Buffer<float>> bufs;
  std::vector<float*> ptrs;
  for (int d = 0; d < n; ++d) {
    ctxs.push_back(Context::cuda(d, "rank" + std::to_string(d)));
    ranks.push_back(ctxs.back().get());
    bufs.push_back(test::upload(*ctxs.back(), std::vector<float>(1000, float(d + 1))));
    ptrs.push_back(bufs.back().data());
  }
  Communicator comm(ranks);
  comm.all_reduce_sum(ptrs, 1000);
  const float expect = float(n * (n + 1) / 2);
  for (int d = 0; d < n; ++d) EXPECT_EQ(test::download(*ctxs[size_t(d)], ptrs[size_t(d)], 1000), std::vector<float>(1000, expect));
}

}  // namespace
}  // namespace adasync
