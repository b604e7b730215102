// Reliability: checkpoint and resume (bit-exact on the virtual clock),
// damaged checkpoints, SIGKILL and SIGINT on a real process, non-finite
// gradients, failing and stalling workers, and bad flags.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/run/trainer.h"
#include "tests/support/files.h"
#include "tests/support/small_data.h"

extern char** environ;

namespace adasync {
namespace {
using test::read_all;
using test::removed_path;
using test::trainer_path;
namespace fs = std::filesystem;

std::shared_ptr<const DataSplit> data() { return test::small_data(); }

TrainConfig base(const std::string& variant, const std::string& clock) {
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.05;
  c.workers = 4;
  c.set_variant(variant);
  c.k = 2;
  c.clock = parse_enum<ClockKind>(clock, "--clock");
  c.straggler = clock == "real" ? "exp:mean=1ms" : "exp:mean=1";
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  return c;
}

struct ResumeCase {
  const char* variant;
  const char* extra;  // schedule / rate rule
};

// Batch norm (running buffers folded by the PS), residual blocks and dropout
// (masks keyed by the batch) on the gaussian set's 1x1x32 inputs.
constexpr const char* kResidual = "conv1x1-8,bn,relu,res8,drop10,res16-s2,gap,fc";

void PrintTo(const ResumeCase& r, std::ostream* os) { *os << r.variant << (*r.extra ? " " : "") << r.extra; }

class VirtualResume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(VirtualResume, ContinuesExactlyLikeAnUninterruptedRun) {
  const ResumeCase rc = GetParam();
  auto configure = [&](TrainConfig c) {
    if (std::string(rc.extra) == "adasync") c.schedule = ScheduleKind::AdaSync, c.schedule_every = 20;
    if (std::string(rc.extra) == "plateau") c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Plateau, c.plateau_updates = 20;
    if (std::string(rc.extra) == "runtime") c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Runtime, c.schedule_every = 20;
    if (std::string(rc.extra) == "goodput")  // at lr 0.3 the mlp's K rises within the 300 updates
      c.schedule = ScheduleKind::AdaSync, c.adasync_rule = AdaRule::Goodput, c.schedule_every = 15, c.lr = 0.3;
    if (std::string(rc.extra) == "ps-time") c.ps_time = 0.3;
    if (std::string(rc.extra) == "piecewise") c.schedule = ScheduleKind::Piecewise, c.schedule_points = "0:1,20:2,60:4";
    if (std::string(rc.extra) == "distance") c.lr_rule = LrKind::Distance, c.lr_c = 1.0;
    if (std::string(rc.extra) == "momentum") c.momentum = 0.9;
    if (std::string(rc.extra) == "resnet") c.model = kResidual;
    if (std::string(rc.extra) == "faults") c.inject = "throw@1:20,throw@3:60";  // 1 before the checkpoint, 3 after
    if (std::string(rc.extra) == "resnet20") c.model = "resnet20", c.batch = 4;  // the zoo's, on 1x4x4 inputs
    // 8 workers from K = 1 at this rate: the loss climbs, the stability guard doubles K before
    // the checkpoint, and the schedule raises K again after it.
    if (std::string(rc.extra) == "guard") c.schedule = ScheduleKind::AdaSync, c.k0 = 1, c.lr = 0.6, c.workers = 8;
    return c;
  };
  TrainConfig whole = configure(base(rc.variant, "virtual"));
  whole.max_updates = 300;
  const RunSummary a = Trainer(whole, data()).run();

  const std::string dir = removed_path(std::string("resume_") + rc.variant + rc.extra);
  TrainConfig first = configure(base(rc.variant, "virtual"));
  first.max_updates = 130;
  first.checkpoint_dir = dir;
  first.checkpoint_every = "40";
  const RunSummary before = Trainer(first, data()).run();
  EXPECT_EQ(list_checkpoints(dir).size(), 3u);  // kept: 80, 120, 130 (40 was rotated out)

  TrainConfig rest = configure(base(rc.variant, "virtual"));
  rest.max_updates = 300;
  rest.checkpoint_dir = dir;
  rest.resume = true;
  const RunSummary b = Trainer(rest, data()).run();
  EXPECT_EQ(b.updates, 300);
  EXPECT_EQ(a.checksum, b.checksum) << rc.variant << " " << rc.extra;
  EXPECT_EQ(a.stats.pushes, b.stats.pushes);
  EXPECT_EQ(a.stats.staleness_sum, b.stats.staleness_sum);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.k_changes.size(), b.k_changes.size());
  EXPECT_EQ(a.failed_workers, b.failed_workers) << "the resumed run's summary names every worker the run lost";
  if (std::string(rc.extra) == "faults") {
    EXPECT_EQ(a.failed_workers, (std::vector<int>{1, 3}));
  }
  if (std::string(rc.extra) == "plateau" || std::string(rc.extra) == "runtime" || std::string(rc.extra) == "piecewise" ||
      std::string(rc.extra) == "goodput") {
    EXPECT_FALSE(a.k_changes.empty()) << "the schedule's state is exercised only if K changes";
  }
  for (size_t i = 0; i < a.k_changes.size() && i < b.k_changes.size(); ++i) {
    EXPECT_EQ(a.k_changes[i].k, b.k_changes[i].k) << i;
    EXPECT_EQ(a.k_changes[i].rule, b.k_changes[i].rule) << i;
    EXPECT_EQ(a.k_changes[i].time, b.k_changes[i].time) << i;
  }
  if (std::string(rc.extra) == "guard") {  // the guard's state crossed the checkpoint
    const auto fired = [](const RunSummary& s) {
      return std::count_if(s.k_changes.begin(), s.k_changes.end(), [](const KChange& c) { return c.rule == "guard"; });
    };
    EXPECT_GE(fired(before), 1) << "the guard fires before the checkpoint";
    EXPECT_GE(fired(a), fired(before));
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, VirtualResume,
                         ::testing::Values(ResumeCase{"k-async", ""}, ResumeCase{"k-sync", "momentum"},
                                           ResumeCase{"k-batch-sync", ""}, ResumeCase{"k-batch-async", "distance"},
                                           ResumeCase{"k-async", "adasync"}, ResumeCase{"k-sync", "plateau"},
                                           ResumeCase{"k-async", "runtime"}, ResumeCase{"async", "ps-time"},
                                           ResumeCase{"k-async", "piecewise"}, ResumeCase{"k-async", "resnet"},
                                           ResumeCase{"k-batch-sync", "resnet"}, ResumeCase{"k-sync", "resnet20"},
                                           ResumeCase{"k-async", "goodput"}, ResumeCase{"k-async", "faults"},
                                           ResumeCase{"k-async", "guard"}),
                         [](const auto& info) {
                           std::string n = std::string(info.param.variant) + "_" + info.param.extra;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

// ALGORITHMS.md section 8: the PS owns the batch-norm buffers. Each update
// counts once (num_batches_tracked = updates) and moves the running statistics
// toward the mean of the pushed batch statistics; SwarmSGD's nodes fold their
// own on every local step. The same seed gives the same bits.
TEST(BatchNormBuffers, FoldedOncePerUpdateByEveryVariant) {
  for (const char* variant : {"k-async", "k-sync", "k-batch-async", "async", "swarm"}) {
    TrainConfig c = base(variant, "virtual");
    c.model = kResidual;
    c.max_updates = 40;
    const RunSummary a = Trainer(c, data()).run();
    const RunSummary b = Trainer(c, data()).run();
    EXPECT_EQ(a.checksum, b.checksum) << variant;
    const Dataset& tr = data()->train;
    const auto tensors = model_param_tensors(kResidual, Shape{tr.c, tr.h, tr.w}, tr.classes);
    ASSERT_EQ(a.params.size(), layout_of(tensors).total);
    int counters = 0;
    for (const auto& t : tensors) {
      if (t.kind == TensorKind::Count) {
        ++counters;
        // SwarmSGD: every node steps locally and averages its counter with its partners.
        if (std::string(variant) != "swarm") EXPECT_EQ(a.params[t.offset], float(a.updates)) << variant << " " << t.name;
        else EXPECT_GT(a.params[t.offset], 0.f) << t.name;
      }
      if (t.name.find("running_var") != std::string::npos) {
        double moved = 0;
        for (size_t i = 0; i < t.count; ++i) {
          EXPECT_TRUE(std::isfinite(a.params[t.offset + i]) && a.params[t.offset + i] >= 0) << variant << " " << t.name;
          moved += std::fabs(a.params[t.offset + i] - 1.0);
        }
        EXPECT_GT(moved, 1e-3) << variant << " " << t.name;
      }
    }
    EXPECT_EQ(counters, 5) << variant;  // bn1, two per block
    EXPECT_GT(a.final_eval.accuracy, 0.3) << variant;  // four classes: the buffers make evaluation work
  }
}

// --augment: crops and flips drawn from (seed, epoch, sample) change the run,
// and a resumed run draws them again exactly (the gaussian set as 1x4x4 images).
TEST(Augmentation, ChangesTheRunAndResumesExactly) {
  auto images = std::make_shared<DataSplit>(*data());
  for (Dataset* d : {&images->train, &images->test}) d->c = 1, d->h = 4, d->w = 4;
  images->mean.assign(1, 0.f);
  images->stddev.assign(1, 1.f);
  auto configure = [](bool augment) {
    TrainConfig c = base("k-async", "virtual");
    c.dataset = "images";
    c.model = "conv3x3-4,bn,relu,res8-s2,gap,fc";
    c.augment = augment;
    c.max_updates = 120;
    return c;
  };
  const RunSummary plain = Trainer(configure(false), images).run();
  const RunSummary whole = Trainer(configure(true), images).run();
  EXPECT_NE(plain.checksum, whole.checksum);
  const std::string dir = removed_path("augment_resume");
  TrainConfig first = configure(true);
  first.max_updates = 50;
  first.checkpoint_dir = dir;
  first.checkpoint_every = "25";
  Trainer(first, images).run();
  TrainConfig rest = configure(true);
  rest.checkpoint_dir = dir;
  rest.resume = true;
  EXPECT_EQ(Trainer(rest, images).run().checksum, whole.checksum);
  TrainConfig plainer = configure(false);  // the checkpoint's crops cannot be left out
  plainer.checkpoint_dir = dir;
  plainer.resume = true;
  try {
    Trainer(plainer, images).run();
    ADD_FAILURE() << "resumed an augmented run without --augment";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("augment = true, this run has none"), std::string::npos) << e.what();
  }
  TrainConfig bad = configure(true);
  bad.dataset = "gaussian";
  EXPECT_THROW(validate(bad), UsageError);
}

// SwarmSGD checkpoints like the others: stopped by its step limit (a node's
// interaction still to come) or by the time budget (between events), with
// checkpoints on the way, it resumes bit for bit on the virtual clock.
TEST(SwarmResume, ContinuesExactlyLikeAnUninterruptedRun) {
  struct Case {
    const char* mode;
    int bits;
    bool by_budget;
  };
  for (const Case k : {Case{"blocking", 0, false}, Case{"nonblocking", 8, false}, Case{"blocking", 8, true},
                       Case{"nonblocking", 0, true}}) {
    auto configure = [&](TrainConfig c) {
      c.swarm_mode = parse_enum<SwarmMode>(k.mode, "--swarm-mode");
      c.quantize = k.bits;
      c.graph = GraphKind::Ring;
      c.local_steps = 3;
      c.local_steps_dist = StepsDist::Geometric;
      return c;
    };
    TrainConfig whole = configure(base("swarm", "virtual"));
    if (k.by_budget) whole.time_budget = 80;
    else whole.max_updates = 400;
    const RunSummary a = Trainer(whole, data()).run();

    const std::string dir = removed_path(std::string("swarm_resume_") + k.mode + std::to_string(k.bits));
    TrainConfig first = configure(base("swarm", "virtual"));
    if (k.by_budget) first.time_budget = 31.7;
    else first.max_updates = 170;
    first.checkpoint_dir = dir;
    first.checkpoint_every = "50";
    const RunSummary f = Trainer(first, data()).run();
    ASSERT_FALSE(f.last_checkpoint.empty());

    TrainConfig rest = configure(base("swarm", "virtual"));
    rest.time_budget = whole.time_budget;
    rest.max_updates = whole.max_updates;
    rest.checkpoint_dir = dir;
    rest.resume = true;
    const RunSummary b = Trainer(rest, data()).run();
    EXPECT_EQ(a.updates, b.updates) << k.mode << " " << k.bits;
    EXPECT_EQ(a.checksum, b.checksum) << k.mode << " " << k.bits << (k.by_budget ? " budget" : " steps");
    EXPECT_EQ(a.interactions, b.interactions);
    EXPECT_EQ(a.bytes_sent, b.bytes_sent);
  }
}

// A node that failed before the checkpoint stays gone after it, and the
// faults still to come happen at the same computation.
TEST(SwarmResume, FaultsBeforeAndAfterTheCheckpointResumeExactly) {
  TrainConfig whole = base("swarm", "virtual");
  whole.inject = "throw@1:20,nan@2:70,throw@3:90";
  whole.max_updates = 400;
  testing::internal::CaptureStderr();
  const RunSummary a = Trainer(whole, data()).run();
  const std::string dir = removed_path("swarm_resume_faults");
  TrainConfig first = whole;
  first.max_updates = 170;
  first.checkpoint_dir = dir;
  first.checkpoint_every = "50";
  Trainer(first, data()).run();
  TrainConfig rest = whole;
  rest.checkpoint_dir = dir;
  rest.resume = true;
  const RunSummary b = Trainer(rest, data()).run();
  testing::internal::GetCapturedStderr();
  EXPECT_EQ(a.failed_workers, (std::vector<int>{1, 3}));
  EXPECT_EQ(b.failed_workers, a.failed_workers);  // 1 left before the checkpoint: still in the run's summary
  EXPECT_EQ(a.stats.dropped_nonfinite, 1);
  EXPECT_EQ(a.updates, b.updates);
  EXPECT_EQ(a.checksum, b.checksum);
  EXPECT_EQ(a.interactions, b.interactions);
}

TEST(SwarmResume, RefusesMomentumAndWeightDecay) {
  TrainConfig c = base("swarm", "virtual");
  c.momentum = 0.9;
  EXPECT_THROW(validate(c), UsageError);
  c.momentum = -1;
  c.opt.weight_decay = 1e-4;
  EXPECT_THROW(validate(c), UsageError);
  c.opt.weight_decay = 0;
  EXPECT_NO_THROW(validate(c));
}

TEST(VirtualResume, ARunStoppedBetweenUpdatesResumesFromItsLastQuietPoint) {
  TrainConfig whole = base("k-async", "virtual");
  whole.time_budget = 90;
  const RunSummary a = Trainer(whole, data()).run();
  const std::string dir = removed_path("resume_budget");
  TrainConfig first = base("k-async", "virtual");
  first.time_budget = 37.3;  // stops between two updates
  first.checkpoint_dir = dir;
  Trainer(first, data()).run();
  TrainConfig rest = base("k-async", "virtual");
  rest.time_budget = 90;
  rest.checkpoint_dir = dir;
  rest.resume = true;
  const RunSummary b = Trainer(rest, data()).run();
  EXPECT_EQ(a.checksum, b.checksum);
}

TEST(Checkpoints, DamagedOnesAreRefusedWithAClearErrorAndThePreviousOneIsUsed) {
  const std::string dir = removed_path("damaged");
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 60;
  c.checkpoint_dir = dir;
  c.checkpoint_every = "20";
  Trainer(c, data()).run();
  auto files = list_checkpoints(dir);
  ASSERT_EQ(files.size(), 3u);  // 60, 40, 20
  // Flip one byte of the newest: bad checksum.
  {
    std::fstream f(files[0], std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    char b = 0;
    f.read(&b, 1);
    f.seekp(100);
    b = char(b ^ 0x5a);
    f.write(&b, 1);
  }
  try {
    load_checkpoint(files[0]);
    FAIL() << "a corrupted checkpoint loaded";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(files[0]), std::string::npos) << e.what();
  }
  // Truncate the second newest.
  fs::resize_file(files[1], fs::file_size(files[1]) / 2);
  EXPECT_THROW(load_checkpoint(files[1]), CheckpointError);
  // Not a checkpoint at all.
  {
    std::ofstream(dir + "/ckpt-000000000099.bin") << "hello";
  }
  EXPECT_THROW(load_checkpoint(dir + "/ckpt-000000000099.bin"), CheckpointError);
  // Resume skips the three damaged files and continues from update 20.
  TrainConfig r = base("k-async", "virtual");
  r.max_updates = 80;
  r.checkpoint_dir = dir;
  r.resume = true;
  testing::internal::CaptureStderr();
  const RunSummary s = Trainer(r, data()).run();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(s.updates, 80);
  EXPECT_NE(err.find("skipping"), std::string::npos) << err;
  // A directory with nothing readable is a usage error.
  const std::string empty = removed_path("empty_ckpt");
  fs::create_directories(empty);
  TrainConfig e = base("k-async", "virtual");
  e.checkpoint_dir = empty;
  e.resume = true;
  EXPECT_THROW(Trainer(e, data()).run(), UsageError);
}

TEST(Checkpoints, ResumeRefusesACheckpointOfADifferentRun) {
  const std::string dir = removed_path("mismatch");
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 20;
  c.checkpoint_dir = dir;
  Trainer(c, data()).run();
  TrainConfig r = base("k-async", "virtual");
  r.workers = 3;
  r.checkpoint_dir = dir;
  r.resume = true;
  try {
    Trainer(r, data()).run();
    FAIL();
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("workers"), std::string::npos) << e.what();
  }
}

TEST(Checkpoints, ResumeRefusesAnotherAdaSyncRuleOrPsTime) {
  const std::string dir = removed_path("mismatch_rule");
  TrainConfig c = base("k-async", "virtual");
  c.schedule = ScheduleKind::AdaSync;
  c.adasync_rule = AdaRule::Plateau;
  c.max_updates = 20;
  c.checkpoint_dir = dir;
  Trainer(c, data()).run();
  for (int which = 0; which < 2; ++which) {
    TrainConfig r = c;
    r.resume = true;
    if (which == 0) r.adasync_rule = AdaRule::Sqrt;
    if (which == 1) r.ps_time = 0.5;
    try {
      Trainer(r, data()).run();
      FAIL() << which;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(which == 0 ? "adasync_rule" : "ps_time"), std::string::npos) << e.what();
    }
  }
}

// Every algorithm takes the same worker step, so --inject and --watchdog mean
// the same under SwarmSGD: a node's step is a PS worker's push.
TEST(Faults, NonFiniteGradientsAreDroppedOrStopTheRun) {
  for (const std::string variant : {"k-async", "swarm"}) {
    TrainConfig c = base(variant, "virtual");
    c.max_updates = 100;
    c.inject = "nan@2:5,nan@0:9";
    const RunSummary s = Trainer(c, data()).run();
    EXPECT_EQ(s.stats.dropped_nonfinite, 2) << variant;
    EXPECT_EQ(s.updates, 100) << variant;
    EXPECT_TRUE(s.error.empty()) << variant;
    EXPECT_GT(s.final_eval.accuracy, 0.6) << variant;  // the model was not poisoned
    c.on_nonfinite = OnNonfinite::Stop;
    const RunSummary t = Trainer(c, data()).run();
    // The first of the two to come (SwarmSGD's nodes keep their own pace).
    EXPECT_TRUE(t.error.find("worker 2 produced a non-finite gradient") != std::string::npos ||
                t.error.find("worker 0 produced a non-finite gradient") != std::string::npos)
        << variant << ": " << t.error;
    EXPECT_LT(t.updates, 100) << variant;
  }
}

TEST(Faults, AFailingWorkerIsReportedAndTheOthersGoOn) {
  for (const std::string clock : {"virtual", "real"})
    for (const std::string variant : {"k-async", "sync", "k-batch-async", "swarm"}) {
      TrainConfig c = base(variant, clock);
      c.max_updates = 120;
      c.inject = "throw@1:4";
      testing::internal::CaptureStderr();
      const RunSummary s = Trainer(c, data()).run();
      const std::string err = testing::internal::GetCapturedStderr();
      EXPECT_EQ(s.failed_workers, std::vector<int>{1}) << clock << " " << variant;
      EXPECT_NE(err.find("worker 1 failed"), std::string::npos) << err;
      // (SwarmSGD's real-clock nodes stop within a few steps of the limit.)
      if (variant == "swarm" && clock == "real") EXPECT_GE(s.updates, 120);
      else EXPECT_EQ(s.updates, 120) << clock << " " << variant;
      EXPECT_TRUE(s.error.empty()) << s.error;
      EXPECT_LE(s.stats.pushes_by_worker[1], 3) << clock << " " << variant;
    }
}

TEST(Faults, WhenEveryWorkerFailsTheRunStopsWithAnError) {
  for (const std::string clock : {"virtual", "real"})
    for (const std::string variant : {"k-async", "swarm"}) {
      TrainConfig c = base(variant, clock);
      c.workers = 2;
      c.k = 1;
      c.max_updates = 100;
      c.inject = "throw@0:3,throw@1:3";
      testing::internal::CaptureStderr();
      const RunSummary s = Trainer(c, data()).run();
      testing::internal::GetCapturedStderr();
      EXPECT_NE(s.error.find("every worker failed"), std::string::npos) << clock << " " << variant << ": " << s.error;
      EXPECT_LT(s.updates, 100) << clock << " " << variant;
    }
}

TEST(Faults, TheWatchdogFlagsAStalledWorker) {
  for (const std::string variant : {"k-async", "swarm"}) {
    TrainConfig c = base(variant, "real");
    c.max_updates = variant == "swarm" ? 0 : 400;
    c.time_budget = variant == "swarm" ? 1.2 : 0;  // swarm nodes need no one: they would finish first
    c.watchdog = 0.3;
    c.inject = "hang@3:5:1.5s";
    testing::internal::CaptureStderr();
    const RunSummary s = Trainer(c, data()).run();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_GE(s.watchdog_alarms, 1) << variant;
    EXPECT_NE(err.find("watchdog: worker 3"), std::string::npos) << variant << ": " << err;
    if (variant == "swarm") {
      EXPECT_EQ(s.watchdog_alarms, 1) << err;  // the nodes that step are not flagged
    }
  }
}

TEST(Warnings, MoreRealClockCpuWorkersThanThreadsAreReported) {
  auto stderr_of = [](const std::string& clock, int threads) {
    TrainConfig c = base("k-async", clock);
    c.threads = threads;
    c.max_updates = 5;
    testing::internal::CaptureStderr();
    Trainer(c, data()).run();
    return testing::internal::GetCapturedStderr();
  };
  const std::string crowded = stderr_of("real", 2);
  EXPECT_NE(crowded.find("warning: 4 CPU workers on 2 thread(s)"), std::string::npos) << crowded;
  EXPECT_EQ(stderr_of("real", 4).find("warning:"), std::string::npos);
  EXPECT_EQ(stderr_of("virtual", 1).find("warning:"), std::string::npos);
}

pid_t spawn(const std::vector<std::string>& args, const std::string& log) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  EXPECT_EQ(posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<std::string> trainer_args(const std::string& dir, const std::string& max_updates) {
  return {trainer_path(), "--dataset", "gaussian", "--model", "mlp", "--workers", "3", "--variant", "k-async",
          "--k", "2", "--straggler", "exp:mean=3ms", "--max-updates", max_updates, "--eval-every", "0",
          "--progress", "plain", "--devices", "cpu", "--checkpoint-dir", dir, "--checkpoint-every", "25"};
}

TEST(Processes, KilledWithSigkillThenResumedEndsWithValidResults) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  const std::string dir = removed_path("sigkill");
  const pid_t pid = spawn(trainer_args(dir, "100000"), dir + ".log");
  // Wait for at least two checkpoints, then kill without warning.
  for (int i = 0; i < 600 && list_checkpoints(dir).size() < 2; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_GE(list_checkpoints(dir).size(), 2u);
  kill(pid, SIGKILL);
  EXPECT_EQ(wait_exit(pid), 128 + SIGKILL);
  for (const auto& f : list_checkpoints(dir)) EXPECT_NO_THROW(load_checkpoint(f)) << f;  // nothing torn
  const int64_t at = load_checkpoint(list_checkpoints(dir)[0]).header["version"];
  auto args = trainer_args(dir, std::to_string(at + 100));
  args.push_back("--resume");
  const pid_t again = spawn(args, dir + ".resume.log");
  EXPECT_EQ(wait_exit(again), 0);
  std::ifstream log(dir + ".resume.log");
  const std::string out((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("resuming from"), std::string::npos) << out;
  EXPECT_NE(out.find("done: " + std::to_string(at + 100) + " updates"), std::string::npos) << out;
}

TEST(Processes, SigintStopsCleanlyWritesACheckpointAndExitsZero) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  const std::string dir = removed_path("sigint");
  auto args = trainer_args(dir, "1000000");
  args[std::find(args.begin(), args.end(), "--checkpoint-every") - args.begin() + 1] = "0";
  const pid_t pid = spawn(args, dir + ".log");
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  const auto t0 = std::chrono::steady_clock::now();
  kill(pid, SIGINT);
  EXPECT_EQ(wait_exit(pid), 0);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  ASSERT_EQ(list_checkpoints(dir).size(), 1u);
  EXPECT_NO_THROW(load_checkpoint(list_checkpoints(dir)[0]));
  std::ifstream log(dir + ".log");
  const std::string out((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(out.find("stopped by SIGINT"), std::string::npos) << out;
}

// Exit status, or -1 when the process is still running after `seconds` (it
// is then killed: a hang).
int wait_exit_within(pid_t pid, double seconds) {
  const auto t0 = std::chrono::steady_clock::now();
  int status = 0;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
    if (waitpid(pid, &status, WNOHANG) == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

// k-batch workers never wait for the PS: at the end, queued pushes held every
// slot while the workers waited for one and the PS for the workers. Twenty
// runs of each k-batch variant, stopped by SIGTERM and by their update limit,
// with a checkpoint after every update: none may hang.
TEST(Processes, KBatchRunsWithCheckpointsNeverHangAtTheEnd) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  // Under the sanitizers (a trainer start takes seconds there; 80 runs took
  // 222 s under ASan, 20 took 100 s under TSan) every tenth delay: the hang
  // this hunts needs the plain build's timing, which runs all 80; the
  // sanitizers need each path once.
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kStride = 10;
#else
  constexpr int kStride = 1;
#endif
  int runs = 0;
  for (const char* variant : {"k-batch-async", "k-batch-sync"})
    for (int i = 0; i < 20; i += kStride)
      for (bool signal : {true, false}) {
        const std::string dir =
            removed_path(std::string("kbatch-") + variant + std::to_string(i) + (signal ? "s" : "n"));
        const pid_t pid = spawn({trainer_path(), "--dataset", "gaussian", "--model", "mlp", "--workers", "4",
                                 "--variant", variant, "--k", "2", "--max-updates", signal ? "1000000" : "60",
                                 "--time-budget", "60s", "--eval-every", "0", "--progress", "plain", "--devices",
                                 "cpu", "--checkpoint-dir", dir, "--checkpoint-every", "1", "--metrics",
                                 dir + ".jsonl"},
                                dir + ".log");
        if (signal) {
          // Once training runs (its first checkpoint is there), at a different moment each time.
          for (int t = 0; t < 3000 && list_checkpoints(dir).empty(); ++t)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          std::this_thread::sleep_for(std::chrono::milliseconds(10 * i));
          kill(pid, SIGTERM);
        }
        const int code = wait_exit_within(pid, 30);
        ASSERT_EQ(code, 0) << variant << (signal ? " SIGTERM" : " natural end") << " run " << i
                           << (code < 0 ? ": hung" : "") << "\n" << read_all(dir + ".log");
        EXPECT_FALSE(list_checkpoints(dir).empty());
        EXPECT_FALSE(fs::exists(dir + ".jsonl.tmp")) << "metrics left uncommitted";
        ++runs;
      }
  EXPECT_EQ(runs, 2 * 2 * (20 / kStride));
}

// Evaluations (monitor thread) and checkpoints (PS thread) after every update,
// both writing metrics: every line is one whole JSON object. Under the
// sanitizers a third of the updates, still hundreds of interleavings (under
// ThreadSanitizer 1500 updates took 100 of the limit's 120 s, under
// AddressSanitizer 72 s; the plain build runs all 1500).
TEST(Processes, EveryMetricsLineParsesUnderConcurrentWriters) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
  constexpr int kUpdates = 500;
#else
  constexpr int kUpdates = 1500;
#endif
  const std::string dir = removed_path("metrics-stress");
  const pid_t pid = spawn({trainer_path(), "--dataset", "gaussian", "--model", "linear", "--workers", "4", "--variant",
                           "k-async", "--k", "2", "--max-updates", std::to_string(kUpdates), "--checkpoint-dir", dir,
                           "--checkpoint-every", "1", "--eval-every", "1", "--eval-samples", "1", "--metrics",
                           dir + ".jsonl", "--progress", "none", "--devices", "cpu"},
                          dir + ".log");
  ASSERT_EQ(wait_exit_within(pid, 120), 0) << read_all(dir + ".log");
  std::ifstream in(dir + ".jsonl");
  std::string line;
  int n = 0, evals = 0, checkpoints = 0;
  while (std::getline(in, line)) {
    ++n;
    nlohmann::json j;
    ASSERT_NO_THROW(j = nlohmann::json::parse(line)) << "line " << n << ": '" << line << "'";
    evals += j.value("event", "") == "eval";
    checkpoints += j.value("event", "") == "checkpoint";
  }
  EXPECT_GT(evals, 10);
  EXPECT_GE(checkpoints, kUpdates);
}

// One run per checkpoint directory: the second is refused, naming the
// directory and the holder's pid, and the first one's files are untouched.
TEST(Processes, ASecondRunOnACheckpointDirectoryInUseIsRefused) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  const std::string dir = removed_path("locked");
  const pid_t first = spawn(trainer_args(dir, "1000000"), dir + ".first.log");
  for (int i = 0; i < 600 && list_checkpoints(dir).empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(list_checkpoints(dir).empty());
  const pid_t second = spawn(trainer_args(dir, "50"), dir + ".second.log");
  EXPECT_EQ(wait_exit_within(second, 30), 2);
  const std::string err = read_all(dir + ".second.log");
  EXPECT_NE(err.find("in use by another run (pid " + std::to_string(first) + ")"), std::string::npos) << err;
  EXPECT_NE(err.find(dir), std::string::npos) << err;
  kill(first, SIGTERM);
  EXPECT_EQ(wait_exit_within(first, 30), 0);
  // Free again: a resume continues the first run.
  auto args = trainer_args(dir, "0");
  args[std::find(args.begin(), args.end(), "--max-updates") - args.begin() + 1] =
      std::to_string(int64_t(load_checkpoint(list_checkpoints(dir)[0]).header["version"]) + 10);
  args.push_back("--resume");
  EXPECT_EQ(wait_exit_within(spawn(args, dir + ".third.log"), 60), 0) << read_all(dir + ".third.log");
}

// Real clock, every mode the CPU runs, evaluations and checkpoints every few
// updates and an injected fault: the runs ThreadSanitizer watches in CI.
TEST(Supervised, RealClockRunsOfEveryModeWithEvaluationsCheckpointsAndFaults) {
  for (const char* v : {"sync", "k-sync", "k-batch-sync", "async", "k-async", "k-batch-async", "swarm"}) {
    TrainConfig c = base(v, "real");
    c.max_updates = 60;
    c.eval_every = "3";
    c.eval_samples = 50;
    c.checkpoint_dir = removed_path(std::string("supervised-") + v);
    c.checkpoint_every = "4";
    c.inject = "nan@1:3,hang@2:5:20ms";
    Trainer t(c, data());
    const RunSummary s = t.run();
    EXPECT_GE(s.updates, 60) << v;
    EXPECT_TRUE(s.error.empty()) << v << ": " << s.error;
    EXPECT_FALSE(s.last_checkpoint.empty()) << v;
    // The NaN gradient is dropped, unless a sync variant cancelled that computation first.
    if (std::string(v) == "swarm" || !is_synchronous(parse_variant(v))) {
      EXPECT_GE(s.stats.dropped_nonfinite, 1) << v;
    }
  }
}

// --lr 1e30 used to drop non-finite gradients forever at update 1.
TEST(Faults, ARunOfNonFiniteGradientsStopsAtTheLimit) {
  TrainConfig c = base("async", "virtual");
  c.lr = 1e30;
  c.max_updates = 100000;
  c.nonfinite_limit = 50;
  const RunSummary s = Trainer(c, data()).run();
  EXPECT_NE(s.error.find("non-finite gradients in a row (--nonfinite-limit 50)"), std::string::npos) << s.error;
  EXPECT_EQ(s.stop_reason, "non-finite limit");
  EXPECT_LT(s.updates, 100);
  EXPECT_GE(s.stats.dropped_nonfinite, 50);
}

// A resumed run already at its limit stops at once: no update, no new checkpoint.
TEST(Checkpoints, ResumingAtTheUpdateLimitStopsAtOnce) {
  const std::string dir = removed_path("resume_at_limit");
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 40;
  c.checkpoint_dir = dir;
  const RunSummary a = Trainer(c, data()).run();
  const auto before = list_checkpoints(dir);
  c.resume = true;
  const RunSummary b = Trainer(c, data()).run();
  EXPECT_EQ(b.updates, 40);
  EXPECT_EQ(a.checksum, b.checksum);
  EXPECT_EQ(list_checkpoints(dir), before);
  EXPECT_EQ(b.stop_reason, "updates");
}

// A run killed mid-write leaves ckpt-N.bin.tmp; the next run on the
// directory removes it (under the directory's lock) and nothing else.
TEST(Checkpoints, StaleTemporariesAreRemovedAtTheStart) {
  const std::string dir = removed_path("stale_tmp");
  fs::create_directories(dir);
  std::ofstream(dir + "/ckpt-000000000005.bin.tmp") << "half a checkpoint";
  std::ofstream(dir + "/notes.txt") << "the user's";
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 10;
  c.checkpoint_dir = dir;
  Trainer(c, data()).run();
  EXPECT_FALSE(fs::exists(dir + "/ckpt-000000000005.bin.tmp"));
  EXPECT_TRUE(fs::exists(dir + "/notes.txt"));
  EXPECT_EQ(list_checkpoints(dir).size(), 1u);
}

// --k on --resume cannot change K: the run says so and goes on at the checkpoint's.
TEST(Checkpoints, AnotherKOnResumeGetsANotice) {
  const std::string dir = removed_path("resume_k");
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 20;
  c.checkpoint_dir = dir;
  Trainer(c, data()).run();
  c.k = 3;
  c.max_updates = 30;
  c.resume = true;
  ::testing::internal::CaptureStderr();
  const RunSummary s = Trainer(c, data()).run();
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("note: --k 3 is ignored: the run resumes at the checkpoint's K = 2"), std::string::npos) << err;
  EXPECT_EQ(s.k, 2);
}

TEST(Checkpoints, AStragglerTraceNeedsALinePerWorker) {
  const std::string f = ::testing::TempDir() + "/two_lines.txt";
  std::ofstream(f) << "0.1 0.2\n0.3\n";
  TrainConfig c = base("async", "virtual");
  c.straggler = "trace:path=" + f;
  c.workers = 2;
  EXPECT_NO_THROW(validate(c));
  c.workers = 4;
  try {
    validate(c);
    FAIL() << "a 2-line trace was accepted for 4 workers";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("4 workers, found 2 line(s)"), std::string::npos) << e.what();
  }
}

// Under sync one hung worker keeps the others waiting: only it is flagged.
TEST(Faults, TheWatchdogNamesOnlyTheWorkerThatIsStuck) {
  TrainConfig c = base("sync", "real");
  c.workers = 3;
  c.max_updates = 30;
  c.inject = "hang@1:5:1500ms";
  c.watchdog = 0.5;
  c.metrics = ::testing::TempDir() + "/watchdog.jsonl";
  const RunSummary s = Trainer(c, data()).run();
  EXPECT_EQ(s.watchdog_alarms, 1);
  std::ifstream in(c.metrics);
  std::string line;
  std::vector<int> flagged;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == "watchdog") flagged.push_back(j.at("worker"));
  }
  EXPECT_EQ(flagged, std::vector<int>{1});
}

TEST(Processes, KOfARuleWithoutKAndTooManyThreadsGetANotice) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  const std::string log = ::testing::TempDir() + "/notice.log";
  const pid_t pid = spawn({trainer_path(), "--dataset", "gaussian", "--model", "linear", "--workers", "2", "--variant",
                           "sync", "--k", "2", "--threads", "1000", "--max-updates", "3", "--progress", "none",
                           "--devices", "cpu", "--clock", "virtual"},
                          log);
  EXPECT_EQ(wait_exit_within(pid, 60), 0);
  const std::string out = read_all(log);
  EXPECT_NE(out.find("note: --k 2 is ignored: sync waits for every worker"), std::string::npos) << out;
  const unsigned hw = std::thread::hardware_concurrency();
  if (hw > 0 && hw < 500) {
    EXPECT_NE(out.find("note: --threads 1000"), std::string::npos) << out;
  }
}

// A checkpoint directory or metrics file the user cannot write is an error
// before any work (it used to train the whole run, then fail). Permissions
// do not bind root: the trainer runs as `nobody` when the test is root.
TEST(Processes, UnwritableOutputsAreRefusedBeforeTraining) {
  struct stat st;
  if (stat(trainer_path().c_str(), &st) != 0) GTEST_SKIP() << "trainer binary not built at " << trainer_path();
  const uid_t nobody = 65534;
  if (geteuid() != 0 && access("/", W_OK) == 0) GTEST_SKIP() << "cannot drop privileges to test permissions";
  const std::string ro = removed_path("readonly");
  fs::create_directories(ro);
  fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec |
                          fs::perms::others_read | fs::perms::others_exec);
  fs::permissions(::testing::TempDir(), fs::perms::all, fs::perm_options::add);  // the log files
  for (const auto& [flag, value] : {std::pair<std::string, std::string>{"--checkpoint-dir", ro + "/ck"},
                                    {"--checkpoint-dir", ro}, {"--metrics", ro + "/m.jsonl"},
                                    {"--save-model", ro + "/m.safetensors"}, {"--trace", ro + "/t.jsonl"}}) {
    const std::string log = ::testing::TempDir() + "/readonly.log";
    const pid_t pid = fork();
    if (pid == 0) {
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
      dup2(fd, 1);
      dup2(fd, 2);
      if (geteuid() == 0 && (setgid(nobody) != 0 || setuid(nobody) != 0)) _exit(97);
      const std::string exe = trainer_path();
      execl(exe.c_str(), exe.c_str(), "--dataset", "gaussian", "--model", "linear", "--max-updates", "1000000",
            "--devices", "cpu", "--progress", "none", flag.c_str(), value.c_str(), static_cast<char*>(nullptr));
      _exit(98);
    }
    const auto t0 = std::chrono::steady_clock::now();
    const int code = wait_exit_within(pid, 60);
    const std::string err = read_all(log);
    if (code == 97) GTEST_SKIP() << "cannot become nobody";
    EXPECT_EQ(code, 2) << flag << " " << value << ": " << err;
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10) << "trained first";
    EXPECT_NE(err.find(flag), std::string::npos) << err;
    EXPECT_NE(err.find("Permission denied"), std::string::npos) << err;
  }
}

// ------------------------------------------------------------------ flags
struct BadFlag {
  std::vector<std::string> args;
  const char* mentions;
};
// CTest names each case by its printed parameter: the flags.
void PrintTo(const BadFlag& b, std::ostream* os) {
  for (size_t i = 0; i < b.args.size(); ++i) *os << (i ? " " : "") << b.args[i];
}

class BadFlags : public ::testing::TestWithParam<BadFlag> {};

TEST_P(BadFlags, AreRejectedUpFrontWithExitCodeTwoAndANamedFlag) {
  const BadFlag& b = GetParam();
  std::vector<std::string> args = {"trainer", "--progress", "none"};
  args.insert(args.end(), b.args.begin(), b.args.end());
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStderr();
  const int rc = trainer_main(int(argv.size()), argv.data());
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(rc, 2) << err;
  EXPECT_NE(err.find(b.mentions), std::string::npos) << err;
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadFlags,
    ::testing::Values(
        BadFlag{{"--batch", "0"}, "--batch"}, BadFlag{{"--batch", "ten"}, "--batch"},
        BadFlag{{"--lr", "-1"}, "--lr"}, BadFlag{{"--workers", "0"}, "--workers"},
        BadFlag{{"--variant", "ksync"}, "--variant"}, BadFlag{{"--workers", "4", "--variant", "k-async", "--k", "5"}, "--k"},
        BadFlag{{"--clock", "fast"}, "--clock"}, BadFlag{{"--straggler", "exp"}, "mean"},
        BadFlag{{"--straggler", "exp:mean=2 hours"}, "--straggler"}, BadFlag{{"--straggler", "gauss:mean=1"}, "gauss"},
        BadFlag{{"--slowdown", "1,0"}, "--slowdown"}, BadFlag{{"--time-budget", "5 parsecs"}, "--time-budget"},
        BadFlag{{"--model", "resnet"}, "resnet"}, BadFlag{{"--dataset", "imagenet"}, "imagenet"},
        BadFlag{{"--data-dir", "/nonexistent/dir"}, "/nonexistent/dir"},
        BadFlag{{"--optimizer", "rmsprop"}, "--optimizer"}, BadFlag{{"--momentum", "1.5"}, "--momentum"},
        BadFlag{{"--lr-schedule", "exp"}, "--lr-schedule"}, BadFlag{{"--lr-schedule", "step"}, "--lr-milestones"},
        BadFlag{{"--lr-schedule", "step", "--lr-milestones", "10,5"}, "--lr-milestones"},
        BadFlag{{"--lr-schedule", "step", "--lr-milestones", "10,x"}, "'x'"},
        BadFlag{{"--lr-milestones", "3"}, "--lr-milestones"}, BadFlag{{"--lr-schedule", "cosine"}, "--epochs"},
        BadFlag{{"--lr-gamma", "0"}, "--lr-gamma"}, BadFlag{{"--lr-warmup", "-1"}, "--lr-warmup"},
        BadFlag{{"--variant", "swarm", "--workers", "2", "--lr-schedule", "cosine", "--epochs", "1"}, "--variant swarm"},
        BadFlag{{"--schedule", "adasync"}, "no K"}, BadFlag{{"--variant", "sync", "--max-staleness", "3"}, "--max-staleness"},
        BadFlag{{"--variant", "k-async", "--lr-rule", "distance"}, "--lr-c"},
        BadFlag{{"--devices", "tpu"}, "--devices"}, BadFlag{{"--resume"}, "--checkpoint-dir"},
        BadFlag{{"--inject", "boom@1:1"}, "--inject"}, BadFlag{{"--on-nonfinite", "ignore"}, "--on-nonfinite"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--graph", "torus", "--quantize", "4"}, "--quantize"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--quantize", "8", "--quant-block", "0"}, "--quant-block"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--quantize", "8", "--quant-margin", "0.5"}, "--quant-margin"},
        BadFlag{{"--graph", "ring"}, "--variant swarm"}, BadFlag{{"--no-such-flag"}, "no-such-flag"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--graph", "star"}, "--graph"},
        BadFlag{{"--schedule", "exponential"}, "--schedule"}, BadFlag{{"--lr-rule", "steep"}, "--lr-rule"},
        BadFlag{{"--lr-distance", "far"}, "--lr-distance"},
        BadFlag{{"--variant", "k-async", "--workers", "4", "--schedule", "piecewise", "--schedule-points", "0:1,5s:8"},
                "--schedule-points"},
        BadFlag{{"--variant", "k-async", "--schedule", "piecewise", "--schedule-points", "0:1,x:2"}, "--schedule-points"},
        BadFlag{{"--variant", "k-async", "--schedule", "adasync", "--k0", "99"}, "--k0"},
        BadFlag{{"--variant", "swarm", "--workers", "7", "--graph", "torus"}, "--graph torus"},
        BadFlag{{"--variant", "swarm", "--workers", "5", "--graph", "regular", "--degree", "3"}, "--degree"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--quantize", "8", "--quant-step", "-1"}, "--quant-step"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--local-steps", "0"}, "--local-steps"},
        BadFlag{{"--aggregate", "device", "--inject", "nan@0:1"}, "--inject"},
        BadFlag{{"--aggregate", "device", "--watchdog", "5s"}, "--watchdog"},
        BadFlag{{"--workers", "4", "--inject", "throw@4:1"}, "--inject: worker 4 outside [0, 4) in 'throw@4:1'"},
        BadFlag{{"--inject", "hang@0:1:soon"}, "--inject"}, BadFlag{{"--inject", "nan@-1:1"}, "--inject"},
        BadFlag{{"--eval-every", "soon"}, "--eval-every"}, BadFlag{{"--target-accuracy", "88"}, "--target-accuracy"},
        // Runs that would never end, or end only after the work.
        BadFlag{{"--epochs", "nan"}, "--epochs"}, BadFlag{{"--epochs", "inf"}, "--epochs"},
        BadFlag{{"--clock", "virtual", "--eval-every", "1e-12s"}, "--eval-every"},
        BadFlag{{"--checkpoint-dir", "/tmp/adasync-bad-ckpt", "--checkpoint-every", "1e-12s"}, "--checkpoint-every"},
        BadFlag{{"--eval-every", "99999999999999999999"}, "--eval-every"}, BadFlag{{"--metrics", "/tmp"}, "--metrics"},
        BadFlag{{"--trace", "/tmp"}, "--trace"}, BadFlag{{"--data-dir", "/etc/hostname"}, "not a directory"},
        // Accepted silently before.
        BadFlag{{"--momentum", "nan"}, "--momentum"}, BadFlag{{"--watchdog", "0"}, "--watchdog"},
        BadFlag{{"--seed", "-1"}, "--seed"}, BadFlag{{"--nonfinite-limit", "0"}, "--nonfinite-limit"},
        BadFlag{{"--replay", "/nonexistent/t.jsonl", "--lr", "0.1", "--workers", "3"}, "--lr, --workers"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--momentum", "0.9"}, "--momentum"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--weight-decay", "1e-4"}, "--weight-decay"}));

// ------------------------------------------------------------------ settings in a file
// trainer_main with these arguments: its exit code, stdout and stderr.
struct Ran {
  int rc;
  std::string out, err;
};
Ran run_main(std::vector<std::string> args) {
  args.insert(args.begin(), "trainer");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  testing::internal::CaptureStderr();
  const int rc = trainer_main(int(argv.size()), argv.data());
  std::fflush(stdout);
  Ran r{rc, testing::internal::GetCapturedStdout(), testing::internal::GetCapturedStderr()};
  return r;
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// --print-config writes what --config reads back to the same settings; the
// command line overrides the file; a run from the file is the run from the
// flags, bit for bit.
TEST(ConfigFile, PrintConfigRoundTripsAndTheCommandLineWins) {
  const std::vector<std::string> flags = {"--dataset", "gaussian", "--model", "linear", "--epochs", "0.2",
                                          "--clock", "virtual", "--workers", "3", "--variant", "k-async", "--k", "2",
                                          "--straggler", "exp:mean=1", "--devices", "cpu", "--lr", "0.07",
                                          "--lr-schedule", "cosine", "--progress", "plain", "--eval-every", "0"};
  std::vector<std::string> printing = flags;
  printing.push_back("--print-config");
  const Ran printed = run_main(printing);
  ASSERT_EQ(printed.rc, 0) << printed.err;
  EXPECT_NE(printed.out.find("lr=0.07"), std::string::npos) << printed.out;
  EXPECT_NE(printed.out.find("variant=\"k-async\""), std::string::npos) << printed.out;
  EXPECT_EQ(printed.out.find("print-config"), std::string::npos) << printed.out;
  const std::string file = ::testing::TempDir() + "/settings.toml";
  write_file(file, printed.out);
  const Ran again = run_main({"--config", file, "--print-config"});
  ASSERT_EQ(again.rc, 0) << again.err;
  EXPECT_EQ(again.out, printed.out);
  const Ran over = run_main({"--config", file, "--lr", "0.2", "--print-config"});
  EXPECT_NE(over.out.find("lr=0.2\n"), std::string::npos) << over.out;

  const Ran from_flags = run_main(flags);
  const Ran from_file = run_main({"--config", file});
  ASSERT_EQ(from_flags.rc, 0) << from_flags.err;
  ASSERT_EQ(from_file.rc, 0) << from_file.err;
  auto checksum = [](const std::string& out) {
    const size_t at = out.find("params checksum ");
    return at == std::string::npos ? std::string() : out.substr(at, 32);
  };
  EXPECT_FALSE(checksum(from_flags.out).empty()) << from_flags.out;
  EXPECT_EQ(checksum(from_flags.out), checksum(from_file.out));
}

TEST(ConfigFile, UnknownKeysAndBadValuesNameTheFileOrTheSetting) {
  const std::string file = ::testing::TempDir() + "/bad_settings.toml";
  write_file(file, "model=\"linear\"\nlearning-rate=0.1\n");
  Ran r = run_main({"--config", file});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find(file), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("unknown setting 'learning-rate'"), std::string::npos) << r.err;
  write_file(file, "lr=\"fast\"\n");
  r = run_main({"--config", file});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("--lr"), std::string::npos) << r.err;
  r = run_main({"--config", ::testing::TempDir() + "/no_such_settings.toml"});
  EXPECT_EQ(r.rc, 2);
  EXPECT_NE(r.err.find("no_such_settings.toml"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace adasync
