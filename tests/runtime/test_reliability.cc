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

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "runtime/checkpoint.h"
#include "runtime/trainer.h"
#include "tests/support/small_data.h"

extern char** environ;

namespace adasync {
namespace {
namespace fs = std::filesystem;

std::shared_ptr<const DataSplit> data() { return test::small_data(); }

TrainConfig base(const std::string& variant, const std::string& clock) {
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.05;
  c.workers = 4;
  c.variant = variant;
  c.k = 2;
  c.clock = clock;
  c.straggler = clock == "real" ? "exp:mean=1ms" : "exp:mean=1";
  c.eval_every = "0";
  c.progress = "none";
  c.devices = "cpu";
  return c;
}

std::string fresh_dir(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/" + name;
  fs::remove_all(d);
  return d;
}

struct ResumeCase {
  const char* variant;
  const char* extra;  // schedule / rate rule
};

class VirtualResume : public ::testing::TestWithParam<ResumeCase> {};

TEST_P(VirtualResume, ContinuesExactlyLikeAnUninterruptedRun) {
  const ResumeCase rc = GetParam();
  auto configure = [&](TrainConfig c) {
    if (std::string(rc.extra) == "adasync") c.schedule = "adasync", c.schedule_every = 20;
    if (std::string(rc.extra) == "plateau") c.schedule = "adasync", c.adasync_rule = "plateau", c.plateau_updates = 20;
    if (std::string(rc.extra) == "runtime") c.schedule = "adasync", c.adasync_rule = "runtime", c.schedule_every = 20;
    if (std::string(rc.extra) == "ps-time") c.ps_time = 0.3;
    if (std::string(rc.extra) == "piecewise") c.schedule = "piecewise", c.schedule_points = "0:1,20:2,60:4";
    if (std::string(rc.extra) == "distance") c.lr_rule = "distance", c.lr_c = 1.0;
    if (std::string(rc.extra) == "momentum") c.momentum = 0.9;
    return c;
  };
  TrainConfig whole = configure(base(rc.variant, "virtual"));
  whole.max_updates = 300;
  const RunSummary a = Trainer(whole, data()).run();

  const std::string dir = fresh_dir(std::string("resume_") + rc.variant + rc.extra);
  TrainConfig first = configure(base(rc.variant, "virtual"));
  first.max_updates = 130;
  first.checkpoint_dir = dir;
  first.checkpoint_every = "40";
  Trainer(first, data()).run();
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
  if (std::string(rc.extra) == "plateau" || std::string(rc.extra) == "runtime" || std::string(rc.extra) == "piecewise")
    EXPECT_FALSE(a.k_changes.empty()) << "the schedule's state is exercised only if K changes";
}

INSTANTIATE_TEST_SUITE_P(Variants, VirtualResume,
                         ::testing::Values(ResumeCase{"k-async", ""}, ResumeCase{"k-sync", "momentum"},
                                           ResumeCase{"k-batch-sync", ""}, ResumeCase{"k-batch-async", "distance"},
                                           ResumeCase{"k-async", "adasync"}, ResumeCase{"k-sync", "plateau"},
                                           ResumeCase{"k-async", "runtime"}, ResumeCase{"async", "ps-time"},
                                           ResumeCase{"k-async", "piecewise"}),
                         [](const auto& info) {
                           std::string n = std::string(info.param.variant) + "_" + info.param.extra;
                           for (auto& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST(VirtualResume, ARunStoppedBetweenUpdatesResumesFromItsLastQuietPoint) {
  TrainConfig whole = base("k-async", "virtual");
  whole.time_budget = 90;
  const RunSummary a = Trainer(whole, data()).run();
  const std::string dir = fresh_dir("resume_budget");
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
  const std::string dir = fresh_dir("damaged");
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
  const std::string empty = fresh_dir("empty_ckpt");
  fs::create_directories(empty);
  TrainConfig e = base("k-async", "virtual");
  e.checkpoint_dir = empty;
  e.resume = true;
  EXPECT_THROW(Trainer(e, data()).run(), UsageError);
}

TEST(Checkpoints, ResumeRefusesACheckpointOfADifferentRun) {
  const std::string dir = fresh_dir("mismatch");
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
  const std::string dir = fresh_dir("mismatch_rule");
  TrainConfig c = base("k-async", "virtual");
  c.schedule = "adasync";
  c.adasync_rule = "plateau";
  c.max_updates = 20;
  c.checkpoint_dir = dir;
  Trainer(c, data()).run();
  for (int which = 0; which < 2; ++which) {
    TrainConfig r = c;
    r.resume = true;
    if (which == 0) r.adasync_rule = "sqrt";
    if (which == 1) r.ps_time = 0.5;
    try {
      Trainer(r, data()).run();
      FAIL() << which;
    } catch (const UsageError& e) {
      EXPECT_NE(std::string(e.what()).find(which == 0 ? "adasync_rule" : "ps_time"), std::string::npos) << e.what();
    }
  }
}

TEST(Faults, NonFiniteGradientsAreDroppedOrStopTheRun) {
  TrainConfig c = base("k-async", "virtual");
  c.max_updates = 100;
  c.inject = "nan@2:5,nan@0:9";
  const RunSummary s = Trainer(c, data()).run();
  EXPECT_EQ(s.stats.dropped_nonfinite, 2);
  EXPECT_EQ(s.updates, 100);
  EXPECT_TRUE(s.error.empty());
  EXPECT_GT(s.final_eval.accuracy, 0.6);  // the model was not poisoned
  c.on_nonfinite = "stop";
  const RunSummary t = Trainer(c, data()).run();
  EXPECT_NE(t.error.find("worker 2"), std::string::npos) << t.error;
  EXPECT_LT(t.updates, 100);
}

TEST(Faults, AFailingWorkerIsReportedAndTheOthersGoOn) {
  for (const std::string clock : {"virtual", "real"})
    for (const std::string variant : {"k-async", "sync", "k-batch-async"}) {
      TrainConfig c = base(variant, clock);
      c.max_updates = 120;
      c.inject = "throw@1:4";
      testing::internal::CaptureStderr();
      const RunSummary s = Trainer(c, data()).run();
      const std::string err = testing::internal::GetCapturedStderr();
      EXPECT_EQ(s.failed_workers, std::vector<int>{1}) << clock << " " << variant;
      EXPECT_NE(err.find("worker 1 failed"), std::string::npos) << err;
      EXPECT_EQ(s.updates, 120) << clock << " " << variant;
      EXPECT_TRUE(s.error.empty()) << s.error;
      EXPECT_LE(s.stats.pushes_by_worker[1], 3) << clock << " " << variant;
    }
}

TEST(Faults, WhenEveryWorkerFailsTheRunStopsWithAnError) {
  TrainConfig c = base("k-async", "virtual");
  c.workers = 2;
  c.k = 1;
  c.max_updates = 100;
  c.inject = "throw@0:3,throw@1:3";
  testing::internal::CaptureStderr();
  const RunSummary s = Trainer(c, data()).run();
  testing::internal::GetCapturedStderr();
  EXPECT_NE(s.error.find("every worker failed"), std::string::npos) << s.error;
  EXPECT_LT(s.updates, 100);
}

TEST(Faults, TheWatchdogFlagsAStalledWorker) {
  TrainConfig c = base("k-async", "real");
  c.max_updates = 400;
  c.watchdog = 0.3;
  c.inject = "hang@3:5:1.5s";
  testing::internal::CaptureStderr();
  const RunSummary s = Trainer(c, data()).run();
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_GE(s.watchdog_alarms, 1);
  EXPECT_NE(err.find("watchdog: worker 3"), std::string::npos) << err;
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

// ------------------------------------------------------------------ processes
std::string trainer_path() { return std::string(ADASYNC_BINARY_DIR) + "/trainer"; }

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
  const std::string dir = fresh_dir("sigkill");
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
  const std::string dir = fresh_dir("sigint");
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

// ------------------------------------------------------------------ flags
struct BadFlag {
  std::vector<std::string> args;
  const char* mentions;
};

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
        BadFlag{{"--schedule", "adasync"}, "no K"}, BadFlag{{"--variant", "sync", "--max-staleness", "3"}, "--max-staleness"},
        BadFlag{{"--variant", "k-async", "--lr-rule", "distance"}, "--lr-c"},
        BadFlag{{"--devices", "tpu"}, "--devices"}, BadFlag{{"--resume"}, "--checkpoint-dir"},
        BadFlag{{"--inject", "boom@1:1"}, "--inject"}, BadFlag{{"--on-nonfinite", "ignore"}, "--on-nonfinite"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--graph", "torus", "--quantize", "4"}, "--quantize"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--quantize", "8", "--quant-block", "0"}, "--quant-block"},
        BadFlag{{"--variant", "swarm", "--workers", "4", "--quantize", "8", "--quant-margin", "0.5"}, "--quant-margin"},
        BadFlag{{"--graph", "ring"}, "--variant swarm"}, BadFlag{{"--no-such-flag"}, "no-such-flag"},
        BadFlag{{"--eval-every", "soon"}, "--eval-every"}, BadFlag{{"--target-accuracy", "88"}, "--target-accuracy"}));

}  // namespace
}  // namespace adasync
