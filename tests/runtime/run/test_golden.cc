// Golden trajectories: the final parameter checksums of virtual-clock runs
// covering every variant, the schedules and rate rules, APAM with a bound,
// the swarm graphs, modes and quantisation. A change that moves one says why
// in its commit and records the new value here. Float results depend on the
// CPU kernels' path chosen at run time (kernels/cpu/simd.h) and OpenBLAS's
// kernel, so the table holds for the fingerprints listed (with -march=native,
// and without it: CI's sanitizer stages); elsewhere the test skips, printing
// the values to record.
#include <gtest/gtest.h>

#include <cblas.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "kernels/cpu/simd.h"
#include "runtime/run/trainer.h"

namespace adasync {
namespace {

// The CPU path taken at run time, the ISA the rest of the build was compiled
// for (the host optimizer and the layers' glue round differently without FMA
// contraction) and OpenBLAS's kernel.
std::string fingerprint() {
  std::string build;
#if defined(__AVX512F__)
  build = "avx512f";
#elif defined(__AVX2__)
  build = "avx2";
#else
  build = "generic";
#endif
#if defined(__FMA__)
  build += "+fma";
#endif
  return std::string(cpu::cpu_kernel_path()) + "/" + build + "/" + openblas_get_corename();
}

struct Golden {
  const char* name;
  std::function<void(TrainConfig&)> set;
  uint64_t checksum;       // avx512 and avx2 paths: the linear layers on the path's own GEMM tiles
  uint64_t checksum_blas;  // scalar path: the linear layers on OpenBLAS
  // Runs whose convolutions take OpenBLAS's GEMM on every path (1x1 and small
  // 3x3 ones): (avx paths, scalar path) per OpenBLAS kernel; compared where
  // this kernel is recorded, printed elsewhere.
  std::map<std::string, std::pair<uint64_t, uint64_t>> by_core = {};
};

TrainConfig base() {
  TrainConfig c;
  c.dataset = "gaussian";
  c.model = "mlp";
  c.workers = 4;
  c.batch = 16;
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.time_budget = 60;
  c.eval_every = "0";
  c.threads = 1;
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.seed = 3;
  return c;
}

// Recorded on the project's AMD EPYC machines with AVX-512 (OpenBLAS runs its
// Haswell kernels there, OPENBLAS_CORETYPE=Haswell), with
// ADASYNC_CPU_PATH=avx512, avx2 and scalar. These runs train the mlp: the
// AVX paths give the same bits (their GEMM tiles sum in the same order), the
// scalar path's OpenBLAS GEMM others.
// The build: -march=native there (ADASYNC_NATIVE=ON, the default). On the
// project's AVX2-only EPYC machines (family 25, no AVX-512: an AVX2 build,
// OpenBLAS's Zen kernel) all 22 runs give the same bits as the AVX paths above;
// so do both AVX paths on the Zen 4 EPYC machines (family 25, model 17), where
// OpenBLAS picks its Cooperlake kernel, and on the Intel Xeon machines with
// AVX-512 and AMX (family 6), where it picks SkylakeX, and on the Emerald
// Rapids Xeons (family 6, model 207), which OpenBLAS 0.3.21 does not know and
// runs its SSE3 Prescott kernels on (on the AVX paths no OpenBLAS product
// reaches these checksums).
const std::vector<std::string> kFingerprints = {"avx512/avx512f+fma/Haswell",   "avx2/avx512f+fma/Haswell",
                                                "avx2/avx2+fma/Zen",            "avx512/avx512f+fma/Cooperlake",
                                                "avx2/avx512f+fma/Cooperlake",  "avx512/avx512f+fma/SkylakeX",
                                                "avx2/avx512f+fma/SkylakeX",    "avx512/avx512f+fma/Prescott",
                                                "avx2/avx512f+fma/Prescott"};
const std::vector<std::string> kFingerprintsBlas = {"scalar/avx512f+fma/Haswell"};

// The same runs from a build without -march=native (ADASYNC_NATIVE=OFF, as
// CI's sanitizer stages build: the glue code rounds without FMA contraction),
// on the AVX paths (both give the same bits), recorded on the Zen 4 EPYC
// machines with OpenBLAS's Cooperlake kernel and with OPENBLAS_CORETYPE=Haswell
// (the runs of `by_core` above differ between the two, the others do not),
// and on the AVX2-only EPYC machines (OpenBLAS's Zen kernel, which gives the
// Haswell kernel's bits here as in the native build).
const std::vector<std::string> kFingerprintsGeneric = {"avx512/generic/Cooperlake", "avx2/generic/Cooperlake",
                                                       "avx512/generic/Haswell", "avx2/generic/Haswell",
                                                       "avx2/generic/Zen"};
const std::map<std::string, uint64_t> kGeneric = {
    {"sync", 0xd1b798f963aa007d},
    {"k_sync", 0xc5d24bea2a7eb31a},
    {"k_batch_sync", 0x387703f9b2d123bc},
    {"async", 0xf5b8070886f2af36},
    {"k_async", 0x662b0651f46cba53},
    {"k_batch_async", 0x38b3adb1f7971ba4},
    {"adasync_sqrt", 0x7b2e5f6bf1936d53},
    {"adasync_order_stat_k_sync", 0x9516c3e8dbd89eb9},
    {"adasync_sample_estimate", 0x14a7e753055360a2},
    {"adasync_default", 0x45cbbb55652c6206},
    {"adasync_plateau", 0xde010b16914d3422},
    {"piecewise", 0x95b66a20fc272125},
    {"lr_staleness", 0xda7945eea440695e},
    {"lr_distance", 0xbafcbf61b5eede0d},
    {"apam_bound", 0x4470d12d711cff6b},
    {"ps_time", 0xee99a86732a1cb26},
    {"sync_no_momentum", 0x96e0045eec3da687},
    {"swarm_ring", 0x7058d6c7b0e424e5},
    {"swarm_complete_nonblocking", 0xc067cfba1b356e51},
    {"swarm_torus", 0xd7111e9bba057e0e},
    {"swarm_regular_16bit", 0x0a1e140675b27898},
    {"swarm_ring_8bit", 0x083612c4293754ad}};
const std::map<std::string, std::map<std::string, uint64_t>> kGenericByCore = {
    {"residual_k_async",
     {{"Cooperlake", 0xfb55b80d5bfd9efb}, {"Haswell", 0xffe90440ce790b07}, {"Zen", 0xffe90440ce790b07}}},
    {"residual_k_batch_sync_momentum",
     {{"Cooperlake", 0x24ae9ff5dbe6429b}, {"Haswell", 0xadc8223d54fc0608}, {"Zen", 0xadc8223d54fc0608}}},
    {"residual_swarm",
     {{"Cooperlake", 0x5584252aa6836d78}, {"Haswell", 0x258fac32f798aabd}, {"Zen", 0x258fac32f798aabd}}}};

constexpr const char* kResidual = "conv1x1-8,bn,relu,res8,drop10,res16-s2,gap,fc";

const std::vector<Golden>& table() {
  static const std::vector<Golden> t = {
      {"sync", [](TrainConfig& c) { c.set_variant("sync"); }, 0xf01172413dd6cb20, 0xf9fb5cc72f01f7f8},
      {"k_sync", [](TrainConfig& c) { c.set_variant("k-sync"), c.k = 2; }, 0x9acfce5dc19160c0, 0x0618dd45227ae669},
      {"k_batch_sync", [](TrainConfig& c) { c.set_variant("k-batch-sync"), c.k = 3; }, 0x453a929376a865a1, 0x9a8c6c008f04695c},
      {"async", [](TrainConfig& c) { c.set_variant("async"); }, 0x5d4a959b9a9609b4, 0x646f09ed52df781e},
      {"k_async", [](TrainConfig& c) { c.set_variant("k-async"), c.k = 2; }, 0x1d779c89b52f793d, 0x901a2f1ebca3b6e8},
      {"k_batch_async", [](TrainConfig& c) { c.set_variant("k-batch-async"), c.k = 2; }, 0xca62af21c26fe469, 0xfa4357d27192f10e},
      {"adasync_sqrt", [](TrainConfig& c) { c.set_variant("k-async"), c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Sqrt, c.schedule_every = 5, c.k0 = 1; }, 0xf59fd80e7a003577, 0x911cbba456800f55},
      {"adasync_order_stat_k_sync", [](TrainConfig& c) { c.set_variant("k-sync"), c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::OrderStat, c.schedule_every = 5; }, 0xaf2535d363a53e18, 0x74a5e327e816cd5c},
      {"adasync_sample_estimate", [](TrainConfig& c) { c.set_variant("k-async"), c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Sqrt, c.loss_estimate = LossEstimate::Sample, c.schedule_every = 5, c.k0 = 1; }, 0xfa5162126e3ef890, 0xe19e87f4c10e95b1},
      {"adasync_default", [](TrainConfig& c) { c.set_variant("k-async"), c.schedule = ScheduleKind::AdaSync; }, 0xb37d74e63acb7482, 0xba6e3619b8915666},
      {"adasync_plateau", [](TrainConfig& c) { c.set_variant("k-sync"), c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Plateau, c.plateau_updates = 20; }, 0x17e83e0413230cc6, 0x6d809c64975feaea},
      {"piecewise", [](TrainConfig& c) { c.set_variant("k-async"), c.schedule = ScheduleKind::Piecewise, c.schedule_points = "0:1,20:2,40:4"; }, 0x10b9229c3585f96a, 0x31800644dca43e6b},
      {"lr_staleness", [](TrainConfig& c) { c.set_variant("async"), c.lr_rule = LrKind::Staleness; }, 0x5c444b49bd464d50, 0x96183a6170082682},
      {"lr_distance", [](TrainConfig& c) { c.set_variant("k-async"), c.k = 2, c.lr_rule = LrKind::Distance, c.lr_c = 1e-6; }, 0x2fc5fd6ffdb2b631, 0x696f4cbdab4c95b6},
      {"apam_bound", [](TrainConfig& c) { c.set_variant("async"), c.opt.name = OptimizerKind::AmsGrad, c.lr = 1e-3, c.max_staleness = 4; }, 0xc3b2e21c9ea0a775, 0x57278951641a0cd3},
      {"ps_time", [](TrainConfig& c) { c.set_variant("async"), c.ps_time = 0.2; }, 0xdcc150ca5fa16568, 0xed7b9ec5ed5e123f},
      {"sync_no_momentum", [](TrainConfig& c) { c.set_variant("sync"), c.momentum = 0; }, 0x830d1f6a09067039, 0x5ae7bd41ded9839e},
      {"swarm_ring", [](TrainConfig& c) { c.set_variant("swarm"), c.graph = GraphKind::Ring; }, 0xf9509b7eed2b8cc0, 0xceadffd571c93902},
      {"swarm_complete_nonblocking", [](TrainConfig& c) { c.set_variant("swarm"), c.swarm_mode = SwarmMode::Nonblocking; }, 0x1fc4f2c7e61679d4, 0xe9f8a6ec7e7193bc},
      {"swarm_torus", [](TrainConfig& c) { c.set_variant("swarm"), c.graph = GraphKind::Torus; }, 0xbdce7d3ef6677eb7, 0xddc7d4c277146dad},
      {"swarm_regular_16bit", [](TrainConfig& c) { c.set_variant("swarm"), c.graph = GraphKind::Regular, c.degree = 3, c.quantize = 16; }, 0x95fe3a22ba4a71db, 0x304ad892ea4c5b0b},
      {"swarm_ring_8bit", [](TrainConfig& c) { c.set_variant("swarm"), c.graph = GraphKind::Ring, c.quantize = 8; }, 0x7557a6c787e51c63, 0x595c94157a36dacd},
      // Batch norm's buffers folded by the PS and by SwarmSGD, residual blocks, dropout keyed by the batch.
      {"residual_k_async", [](TrainConfig& c) { c.set_variant("k-async"), c.k = 2, c.model = kResidual; }, 0, 0,
       {{"Cooperlake", {0x57f7c55f5280be10, 0x52145665c9d1b7f5}}, {"Haswell", {0x2c8a59610e8b3c46, 0x923ca71c820c8689}}}},
      {"residual_k_batch_sync_momentum", [](TrainConfig& c) { c.set_variant("k-batch-sync"), c.k = 3, c.model = kResidual, c.momentum = 0.9, c.opt.weight_decay = 5e-4, c.opt.no_decay_bn = true; }, 0, 0,
       {{"Cooperlake", {0x73ea9491752f7ec4, 0xdb6d7365c1cca56d}}, {"Haswell", {0x9df89afa2ccb84cc, 0x30a27813386c17eb}}}},
      {"residual_swarm", [](TrainConfig& c) { c.set_variant("swarm"), c.graph = GraphKind::Ring, c.model = kResidual; }, 0, 0,
       {{"Cooperlake", {0x648c5ba89af22b46, 0x266dc4bfb356f73f}}, {"Haswell", {0x787329463e4e3547, 0xee537e9310e966f9}}}},
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
  auto listed = [](const std::vector<std::string>& v) { return std::find(v.begin(), v.end(), fingerprint()) != v.end(); };
  if (listed(kFingerprintsGeneric)) {
    for (size_t i = 0; i < got.size(); ++i) {
      const std::string name = table()[i].name;
      uint64_t want = 0;
      if (const auto at = kGeneric.find(name); at != kGeneric.end()) want = at->second;
      else want = kGenericByCore.at(name).at(openblas_get_corename());
      EXPECT_EQ(got[i], want) << name << " (a build without -march=native): found 0x" << std::hex << got[i];
    }
    return;
  }
  const bool blas = listed(kFingerprintsBlas);
  if (!listed(kFingerprints) && !blas) {
    std::string values;
    for (size_t i = 0; i < got.size(); ++i) {
      char line[96];
      std::snprintf(line, sizeof line, "  %s 0x%016llx\n", table()[i].name, static_cast<unsigned long long>(got[i]));
      values += line;
    }
    GTEST_SKIP() << "golden checksums are recorded for " << kFingerprints[0] << " (and the avx2, scalar paths there), this run is " << fingerprint()
                 << "; its values:\n" << values;
  }
  for (size_t i = 0; i < got.size(); ++i) {
    const Golden& g = table()[i];
    if (g.by_core.empty()) {
      EXPECT_EQ(got[i], blas ? g.checksum_blas : g.checksum) << g.name << ": found 0x" << std::hex << got[i];
      continue;
    }
    const auto at = g.by_core.find(openblas_get_corename());
    if (at != g.by_core.end())
      EXPECT_EQ(got[i], blas ? at->second.second : at->second.first) << g.name << ": found 0x" << std::hex << got[i];
    else
      std::cout << g.name << ": not recorded for OpenBLAS's " << openblas_get_corename() << " kernel, found 0x"
                << std::hex << got[i] << std::dec << "\n";
  }
}

// The zoo's resnet20 on 1x16x16 Gaussian images: its 3x3 convolutions take
// the Winograd kernels on the AVX paths at all three stages (16, 8 and 4
// pixels; F(2x2, 3x3) in the first stage's forward pass, F(4x4, 3x3)
// elsewhere), the stride-2 ones and the stem OpenBLAS's GEMM; so its
// checksum is recorded per OpenBLAS kernel, for the AVX paths.
TEST(Golden, Resnet20OnImagesKeepsItsChecksum) {
  // Zen: OpenBLAS runs its Haswell kernels there (the same checksum, seen on an AVX2-only EPYC).
  static const std::map<std::string, uint64_t> kByCore = {
      {"Cooperlake", 0x43662cafe3951ad0}, {"Haswell", 0xadb313b25c1388ad}, {"Zen", 0xadb313b25c1388ad}};
  // Without -march=native (kFingerprintsGeneric).
  static const std::map<std::string, uint64_t> kByCoreGeneric = {
      {"Cooperlake", 0xe984e7251ac0ac3e}, {"Haswell", 0xfe4c2b794437eb29}, {"Zen", 0xfe4c2b794437eb29}};
  auto split = std::make_shared<DataSplit>(make_gaussian_classes(2000, 200, 256, 10, 1.0, 5));
  for (Dataset* d : {&split->train, &split->test}) d->c = 1, d->h = d->w = 16;
  normalize(*split);
  TrainConfig c = base();
  c.model = "resnet20";
  c.set_variant("k-async"), c.k = 2;
  c.batch = 4, c.momentum = 0.9, c.max_updates = 30;
  const uint64_t got = Trainer(c, split).run().checksum;
  const bool generic =
      std::find(kFingerprintsGeneric.begin(), kFingerprintsGeneric.end(), fingerprint()) != kFingerprintsGeneric.end();
  const auto& by_core = generic ? kByCoreGeneric : kByCore;
  const auto at = by_core.find(openblas_get_corename());
  const bool listed =
      generic || std::find(kFingerprints.begin(), kFingerprints.end(), fingerprint()) != kFingerprints.end();
  if (!listed || at == by_core.end())
    GTEST_SKIP() << "recorded for the AVX paths with OpenBLAS's Cooperlake and Haswell kernels; this run is "
                 << fingerprint() << ", found 0x" << std::hex << got;
  EXPECT_EQ(got, at->second) << "found 0x" << std::hex << got;
}

}  // namespace
}  // namespace adasync
