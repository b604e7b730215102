// Golden trajectories: the final parameter checksums of virtual-clock runs
// covering every variant, the schedules and rate rules, APAM with a bound,
// the swarm graphs, modes and quantisation. A change that moves one says why
// in its commit and records the new value here. Float results depend on the
// build's vector ISA and OpenBLAS's kernel, so the table holds for one
// fingerprint; elsewhere the test skips, printing the values to record.
#include <gtest/gtest.h>

#include <cblas.h>

#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "runtime/trainer.h"

namespace adasync {
namespace {

std::string fingerprint() {
  std::string f;
#if defined(__AVX512F__)
  f += "avx512f";
#elif defined(__AVX2__)
  f += "avx2";
#else
  f += "generic";
#endif
#if defined(__FMA__)
  f += "+fma";
#endif
  return f + "/" + openblas_get_corename();
}

struct Golden {
  const char* name;
  std::function<void(TrainConfig&)> set;
  uint64_t checksum;
};

TrainConfig base() {
  TrainConfig c;
  c.dataset = "gaussian";
  c.model = "mlp";
  c.workers = 4;
  c.batch = 16;
  c.clock = "virtual";
  c.straggler = "exp:mean=1";
  c.time_budget = 60;
  c.eval_every = "0";
  c.threads = 1;
  c.progress = "none";
  c.devices = "cpu";
  c.seed = 3;
  return c;
}

// Recorded on the project's AMD EPYC machines with AVX-512 (build -march=native;
// OpenBLAS runs its Haswell kernels there, OPENBLAS_CORETYPE=Haswell).
const char* kFingerprint = "avx512f+fma/Haswell";

const std::vector<Golden>& table() {
  static const std::vector<Golden> t = {
      {"sync", [](TrainConfig& c) { c.variant = "sync"; }, 0xf9fb5cc72f01f7f8},
      {"k_sync", [](TrainConfig& c) { c.variant = "k-sync", c.k = 2; }, 0x0618dd45227ae669},
      {"k_batch_sync", [](TrainConfig& c) { c.variant = "k-batch-sync", c.k = 3; }, 0x9a8c6c008f04695c},
      {"async", [](TrainConfig& c) { c.variant = "async"; }, 0x646f09ed52df781e},
      {"k_async", [](TrainConfig& c) { c.variant = "k-async", c.k = 2; }, 0x901a2f1ebca3b6e8},
      {"k_batch_async", [](TrainConfig& c) { c.variant = "k-batch-async", c.k = 2; }, 0xfa4357d27192f10e},
      {"adasync_sqrt", [](TrainConfig& c) { c.variant = "k-async", c.schedule = "adasync", c.adasync_rule = "sqrt", c.schedule_every = 5; }, 0x911cbba456800f55},
      {"adasync_order_stat_k_sync", [](TrainConfig& c) { c.variant = "k-sync", c.schedule = "adasync", c.adasync_rule = "order-stat", c.schedule_every = 5; }, 0x74a5e327e816cd5c},
      {"adasync_sample_estimate", [](TrainConfig& c) { c.variant = "k-async", c.schedule = "adasync", c.adasync_rule = "sqrt", c.loss_estimate = "sample", c.schedule_every = 5; }, 0xe19e87f4c10e95b1},
      {"adasync_default", [](TrainConfig& c) { c.variant = "k-async", c.schedule = "adasync"; }, 0xb44a1ca639bac133},
      {"adasync_plateau", [](TrainConfig& c) { c.variant = "k-sync", c.schedule = "adasync", c.adasync_rule = "plateau", c.plateau_updates = 20; }, 0x6d809c64975feaea},
      {"piecewise", [](TrainConfig& c) { c.variant = "k-async", c.schedule = "piecewise", c.schedule_points = "0:1,20:2,40:4"; }, 0x31800644dca43e6b},
      {"lr_staleness", [](TrainConfig& c) { c.variant = "async", c.lr_rule = "staleness"; }, 0x96183a6170082682},
      {"lr_distance", [](TrainConfig& c) { c.variant = "k-async", c.k = 2, c.lr_rule = "distance", c.lr_c = 1e-6; }, 0x696f4cbdab4c95b6},
      {"apam_bound", [](TrainConfig& c) { c.variant = "async", c.opt.name = "amsgrad", c.lr = 1e-3, c.max_staleness = 4; }, 0x57278951641a0cd3},
      {"ps_time", [](TrainConfig& c) { c.variant = "async", c.ps_time = 0.2; }, 0xed7b9ec5ed5e123f},
      {"sync_no_momentum", [](TrainConfig& c) { c.variant = "sync", c.momentum = 0; }, 0x5ae7bd41ded9839e},
      {"swarm_ring", [](TrainConfig& c) { c.variant = "swarm", c.graph = "ring"; }, 0xceadffd571c93902},
      {"swarm_complete_nonblocking", [](TrainConfig& c) { c.variant = "swarm", c.swarm_mode = "nonblocking"; }, 0xe9f8a6ec7e7193bc},
      {"swarm_torus", [](TrainConfig& c) { c.variant = "swarm", c.graph = "torus"; }, 0xddc7d4c277146dad},
      {"swarm_regular_16bit", [](TrainConfig& c) { c.variant = "swarm", c.graph = "regular", c.degree = 3, c.quantize = 16; }, 0x304ad892ea4c5b0b},
      {"swarm_ring_8bit", [](TrainConfig& c) { c.variant = "swarm", c.graph = "ring", c.quantize = 8; }, 0x595c94157a36dacd},
  };
  return t;
}

TEST(Golden, VirtualClockTrajectoriesKeepTheirChecksums) {
  std::vector<uint64_t> got;
  for (const Golden& g : table()) {
    TrainConfig c = base();
    g.set(c);
    got.push_back(Trainer(c).run().checksum);
  }
  if (fingerprint() != kFingerprint) {
    std::string values;
    for (size_t i = 0; i < got.size(); ++i) {
      char line[96];
      std::snprintf(line, sizeof line, "  %s 0x%016llx\n", table()[i].name, static_cast<unsigned long long>(got[i]));
      values += line;
    }
    GTEST_SKIP() << "golden checksums are recorded for " << kFingerprint << ", this build is " << fingerprint()
                 << "; its values:\n" << values;
  }
  for (size_t i = 0; i < got.size(); ++i)
    EXPECT_EQ(got[i], table()[i].checksum) << table()[i].name << ": found 0x" << std::hex << got[i];
}

}  // namespace
}  // namespace adasync
