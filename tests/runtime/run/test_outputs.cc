// What a run writes is never lost or clobbered: full disks (RLIMIT_FSIZE),
// shared paths, special files, a second run in a checkpoint directory,
// hostile model files, a trace edited by hand, and the flag and schedule
// edges that used to pass silently. One test per finding.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "models/safetensors.h"
#include "runtime/checkpoint.h"
#include "runtime/output.h"
#include "runtime/run/trainer.h"
#include "tests/support/files.h"

namespace adasync {
namespace {
using test::fresh_dir;
using test::names;
using test::read_all;
using test::trainer_path;
namespace fs = std::filesystem;
using nlohmann::json;

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

bool has_temporaries(const std::string& dir) {
  for (const auto& n : names(dir))
    if (n.find(".tmp") != std::string::npos) return true;
  return false;
}

// The flags every run here shares (the model `linear` unless one is given).
std::vector<std::string> small(const std::vector<std::string>& args) {
  std::vector<std::string> out = {"--dataset", "gaussian", "--devices", "cpu", "--progress", "none"};
  if (std::find(args.begin(), args.end(), "--model") == args.end()) out.insert(out.end(), {"--model", "linear"});
  out.insert(out.end(), args.begin(), args.end());
  return out;
}

struct Exit {
  int code;
  std::string log;
  double seconds;
};

// The trainer binary with `args` after kSmall, file sizes limited to
// `fsize` bytes (0: no limit); waits at most a minute.
Exit run_process(std::vector<std::string> args, uint64_t fsize = 0, const std::vector<std::string>& env = {}) {
  args = small(args);
  args.insert(args.begin(), trainer_path());
  // One log per test: ctest runs tests side by side.
  const std::string log = ::testing::TempDir() + "/outputs_" +
                          ::testing::UnitTest::GetInstance()->current_test_info()->name() + ".log";
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 1);
    dup2(fd, 2);
    for (const auto& e : env) putenv(const_cast<char*>(e.c_str()));
    if (fsize > 0) {
      const rlimit lim{fsize, fsize};
      setrlimit(RLIMIT_FSIZE, &lim);
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(argv[0], argv.data());
    _exit(98);
  }
  int status = 0, code = -1;
  for (int i = 0; i < 6000; ++i) {
    if (waitpid(pid, &status, WNOHANG) == pid) {
      code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (code == -1) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
  }
  return {code, read_all(log), std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

// trainer_main in this process: exit code and stderr.
Exit run_here(std::vector<std::string> args) {
  args = small(args);
  args.insert(args.begin(), "trainer");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  const auto t0 = std::chrono::steady_clock::now();
  testing::internal::CaptureStderr();
  const int rc = trainer_main(int(argv.size()), argv.data());
  return {rc, testing::internal::GetCapturedStderr(),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

#define SKIP_WITHOUT_TRAINER()                                              \
  do {                                                                      \
    struct stat st_;                                                        \
    if (stat(trainer_path().c_str(), &st_) != 0)                            \
      GTEST_SKIP() << "trainer binary not built at " << trainer_path();     \
  } while (0)

// ------------------------------------------------------------------ full disks
TEST(Outputs, AFullDiskOnTheMetricsOrTheTraceIsOneErrorAndThePreviousFileStays) {
  SKIP_WITHOUT_TRAINER();
  for (const std::string flag : {"--metrics", "--trace"}) {
    const std::string dir = fresh_dir("outputs_full_stream");
    const std::string out = dir + "/out.jsonl";
    write_text(out, "the previous run's complete file\n");
    const Exit e = run_process({"--workers", "2", "--variant", "async", "--max-updates", "3000", "--eval-every", "1",
                                "--eval-samples", "10", flag, out},
                               16 << 10);
    EXPECT_EQ(e.code, 3) << e.log;
    EXPECT_NE(e.log.find(flag + " " + out + ": cannot write: File too large"), std::string::npos) << e.log;
    EXPECT_EQ(read_all(out), "the previous run's complete file\n");
    EXPECT_FALSE(has_temporaries(dir)) << ::testing::PrintToString(names(dir));
  }
}

TEST(Outputs, AFullDiskAtARealClockCheckpointStopsTheRunAndKeepsTheLastCheckpoint) {
  SKIP_WITHOUT_TRAINER();
  const std::string dir = fresh_dir("outputs_full_ckpt") + "/ck";
  Exit e = run_process({"--max-updates", "20", "--eval-every", "0", "--checkpoint-dir", dir});
  ASSERT_EQ(e.code, 0) << e.log;
  const auto before = list_checkpoints(dir);
  ASSERT_EQ(before.size(), 1u);
  const uint64_t size = fs::file_size(before[0]);
  e = run_process({"--max-updates", "200", "--eval-every", "0", "--checkpoint-dir", dir, "--checkpoint-every", "5",
                   "--resume"},
                  size / 2);
  EXPECT_NE(e.code, 0) << e.log;
  EXPECT_NE(e.code, 134) << "std::terminate: " << e.log;
  EXPECT_NE(e.log.find("--checkpoint-dir " + dir + "/ckpt-"), std::string::npos) << e.log;
  EXPECT_NE(e.log.find("File too large"), std::string::npos) << e.log;
  EXPECT_EQ(list_checkpoints(dir), before);
  EXPECT_NO_THROW(load_checkpoint(before[0]));
  EXPECT_FALSE(has_temporaries(dir)) << ::testing::PrintToString(names(dir));
}

TEST(Outputs, AFailedFinalSaveLeavesNoTemporaryAndAnUnwritableOneIsRefusedFirst) {
  SKIP_WITHOUT_TRAINER();
  const std::string dir = fresh_dir("outputs_full_save");
  const Exit e = run_process({"--model", "mlp", "--max-updates", "5", "--eval-every", "0", "--save-model",
                              dir + "/m.safetensors"},
                             4 << 10);
  EXPECT_EQ(e.code, 3) << e.log;
  EXPECT_NE(e.log.find("--save-model " + dir + "/m.safetensors: cannot write"), std::string::npos) << e.log;
  EXPECT_EQ(names(dir), std::vector<std::string>{});
  // Its directory missing: refused before any training.
  const Exit early = run_here({"--max-updates", "1000000", "--save-model", dir + "/no/m.safetensors"});
  EXPECT_EQ(early.code, 2);
  EXPECT_NE(early.log.find("expected an existing directory"), std::string::npos) << early.log;
  EXPECT_LT(early.seconds, 10);
}

// ------------------------------------------------------------------ shared paths and special files
TEST(Outputs, TwoOutputsOrAnOutputAndAnInputOnOneFileAreRefused) {
  const std::string dir = fresh_dir("outputs_shared");
  const std::string ckpt = dir + "/ck";
  ASSERT_EQ(run_here({"--max-updates", "5", "--eval-every", "0", "--checkpoint-dir", ckpt, "--save-model",
                      dir + "/m.safetensors"})
                .code,
            0);
  fs::create_hard_link(dir + "/m.safetensors", dir + "/hard.safetensors");
  write_text(dir + "/m.jsonl", "");
  fs::create_symlink(dir + "/m.jsonl", dir + "/link.jsonl");
  const std::string c = list_checkpoints(ckpt)[0];
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& k : std::vector<Case>{
           {{"--metrics", dir + "/a.jsonl", "--trace", dir + "/./a.jsonl"}, "--trace " + dir + "/./a.jsonl: the same file as --metrics"},
           {{"--metrics", dir + "/m.jsonl", "--trace", dir + "/link.jsonl"}, "the same file as --metrics"},
           {{"--save-model", dir + "/m.safetensors", "--init-from", dir + "/hard.safetensors"}, "which this run reads"},
           {{"--metrics", ckpt + "/ckpt-000000000009.bin", "--checkpoint-dir", ckpt, "--resume"}, "the checkpoints of --checkpoint-dir"},
           {{"--metrics", ckpt + "/.lock", "--checkpoint-dir", ckpt, "--resume"}, "own (ckpt-*.bin, .lock)"}}) {
    const Exit e = run_here(k.args);
    EXPECT_EQ(e.code, 2) << e.log;
    EXPECT_NE(e.log.find(k.says), std::string::npos) << e.log;
  }
  // --export C --save-model C would overwrite the checkpoint it exports.
  std::vector<std::string> a = {"trainer", "--progress", "none", "--export", c, "--save-model", c};
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  testing::internal::CaptureStderr();
  EXPECT_EQ(trainer_main(int(argv.size()), argv.data()), 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("the same file as --export"), std::string::npos) << err;
  EXPECT_NO_THROW(load_checkpoint(c));
}

TEST(Outputs, SpecialFilesAreRefusedAndASymlinkIsWrittenThrough) {
  const std::string dir = fresh_dir("outputs_special");
  ASSERT_EQ(mkfifo((dir + "/fifo").c_str(), 0644), 0);
  fs::create_directories(dir + "/d");
  for (const auto& [path, kind] : std::vector<std::pair<std::string, std::string>>{
           {dir + "/fifo", "a FIFO"}, {"/dev/null", "a character device"}, {dir + "/d", "a directory"}}) {
    for (const char* flag : {"--metrics", "--trace", "--save-model"}) {
      const Exit e = run_here({"--max-updates", "5", flag, path});
      EXPECT_EQ(e.code, 2) << e.log;
      EXPECT_NE(e.log.find(kind), std::string::npos) << flag << ": " << e.log;
    }
  }
  EXPECT_TRUE(fs::is_fifo(dir + "/fifo"));
  write_text(dir + "/target.jsonl", "old\n");
  fs::create_symlink("target.jsonl", dir + "/link.jsonl");
  ASSERT_EQ(run_here({"--max-updates", "5", "--metrics", dir + "/link.jsonl"}).code, 0);
  EXPECT_TRUE(fs::is_symlink(dir + "/link.jsonl"));
  EXPECT_NE(read_all(dir + "/target.jsonl").find("\"event\":\"summary\""), std::string::npos);
  fs::create_symlink("missing.jsonl", dir + "/dangling.jsonl");
  const Exit e = run_here({"--max-updates", "5", "--metrics", dir + "/dangling.jsonl"});
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.log.find("a symlink to a missing file"), std::string::npos) << e.log;
}

// Two runs writing one metrics file at once: each writes its own temporary,
// so the file is one run's whole record, never a mix.
TEST(Outputs, TwoConcurrentRunsOnOneMetricsFileLeaveOneWholeRecord) {
  SKIP_WITHOUT_TRAINER();
  const std::string dir = fresh_dir("outputs_concurrent");
  const std::string out = dir + "/m.jsonl";
  std::vector<std::string> args =
      small({"--max-updates", "400", "--eval-every", "5", "--eval-samples", "20", "--metrics", out});
  args.insert(args.begin(), trainer_path());
  std::vector<pid_t> pids;
  for (int i = 0; i < 2; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(98);
    }
    pids.push_back(pid);
  }
  for (pid_t p : pids) {
    int status = 0;
    waitpid(p, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  std::ifstream in(out);
  int starts = 0, summaries = 0, lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    json j;
    ASSERT_NO_THROW(j = json::parse(line)) << line;
    starts += j.value("event", "") == "start";
    summaries += j.value("event", "") == "summary";
  }
  EXPECT_EQ(starts, 1);
  EXPECT_EQ(summaries, 1);
  EXPECT_FALSE(has_temporaries(dir));
}

TEST(Outputs, MpirunWithoutTheMpiTransportIsRefusedNamingTheFlag) {
  SKIP_WITHOUT_TRAINER();
  for (const char* var : {"OMPI_COMM_WORLD_SIZE=2", "PMI_SIZE=4"}) {
    const Exit e = run_process({"--max-updates", "5"}, 0, {var});
    EXPECT_EQ(e.code, 2) << e.log;
    EXPECT_NE(e.log.find("add --transport mpi"), std::string::npos) << e.log;
  }
  EXPECT_EQ(run_process({"--max-updates", "5"}, 0, {"OMPI_COMM_WORLD_SIZE=1"}).code, 0);
}

// ------------------------------------------------------------------ checkpoint directories
// A metrics file's records, in order.
std::vector<json> records(const std::string& path) {
  std::vector<json> out;
  std::ifstream in(path);
  for (std::string l; std::getline(in, l);) out.push_back(json::parse(l));
  return out;
}

TEST(Outputs, ACheckpointDirectoryBelongsToOneRun) {
  const std::string dir = fresh_dir("outputs_owned") + "/ck";
  auto run_id = [&] { return read_checkpoint_header(list_checkpoints(dir)[0]).value("run_id", std::string()); };
  ASSERT_EQ(run_here({"--max-updates", "10", "--eval-every", "0", "--checkpoint-dir", dir}).code, 0);
  const std::string first = run_id();
  EXPECT_EQ(first.size(), 16u);
  const Exit e = run_here({"--max-updates", "10", "--eval-every", "0", "--checkpoint-dir", dir});
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.log.find("checkpoint(s) of another run"), std::string::npos) << e.log;
  EXPECT_NE(e.log.find("--resume"), std::string::npos) << e.log;
  EXPECT_NE(e.log.find("--overwrite"), std::string::npos) << e.log;
  // A resume goes on as the same run.
  ASSERT_EQ(run_here({"--max-updates", "20", "--eval-every", "0", "--checkpoint-dir", dir, "--resume"}).code, 0);
  EXPECT_EQ(run_id(), first);
  // --overwrite takes the directory over: the other run's checkpoints go.
  ASSERT_EQ(run_here({"--max-updates", "5", "--eval-every", "0", "--checkpoint-dir", dir, "--overwrite"}).code, 0);
  const auto now = list_checkpoints(dir);
  ASSERT_EQ(now.size(), 1u);
  EXPECT_NE(now[0].find(checkpoint_name(5)), std::string::npos);
  EXPECT_NE(run_id(), first);
}

// A real-clock run that ends on the parameters of its last periodic
// checkpoint writes and records that checkpoint once; one that ends between
// checkpoints writes its end. (Not SwarmSGD on the real clock: its models
// may move at one step count, an exchange after a step, and its last step
// count may pass the limit by a step in flight.)
TEST(Outputs, ARunEndingOnItsLastCheckpointWritesItOnce) {
  for (const char* variant : {"k-async", "k-sync", "k-batch-async"})
    for (const char* limit : {"60", "70"}) {
      const std::string dir = fresh_dir(std::string("outputs_once-") + variant + limit);
      ASSERT_EQ(run_here({"--variant", variant, "--workers", "2", "--max-updates", limit, "--eval-every", "0",
                          "--checkpoint-dir", dir + "/ck", "--checkpoint-every", "20", "--metrics", dir + "/m.jsonl"})
                    .code,
                0);
      std::vector<std::string> paths;
      for (const json& j : records(dir + "/m.jsonl"))
        if (j.value("event", "") == "checkpoint") paths.push_back(j.value("path", ""));
      const std::string at = std::string(variant) + " to " + limit;
      ASSERT_FALSE(paths.empty()) << at;
      EXPECT_NE(paths.back().find(checkpoint_name(std::atoi(limit))), std::string::npos) << at << ": " << paths.back();
      EXPECT_EQ(std::set<std::string>(paths.begin(), paths.end()).size(), paths.size()) << at << ": a path twice: " << ::testing::PrintToString(paths);
    }
}

// A resumed run's metrics hold the whole run: the records up to the
// checkpoint it continues, from the file or from the temporary a killed run
// left, then its own. On the virtual clock they are the uninterrupted run's.
TEST(Outputs, AResumedRunsMetricsHoldTheWholeRun) {
  const std::string dir = fresh_dir("outputs_resumed_metrics");
  const std::vector<std::string> run = {"--clock",     "virtual",    "--workers",  "4",       "--variant",    "k-async",
                                        "--straggler", "exp:mean=1", "--schedule", "adasync", "--eval-every", "20"};
  auto with = [&](std::vector<std::string> more) {
    more.insert(more.begin(), run.begin(), run.end());
    return more;
  };
  // What an uninterrupted run's evaluations and K changes say.
  auto curve = [&](const std::string& path) {
    std::vector<json> out;
    for (const json& j : records(path)) {
      const std::string ev = j.value("event", "");
      if (ev != "eval" && ev != "k_change" && ev != "final") continue;
      out.push_back(json{{"event", ev},
                         {"updates", j["updates"]},
                         {"time", j["time"]},
                         {"k", j["k"]},
                         {"loss", j.value("loss", json())},
                         {"test_loss", j.value("test_loss", json())}});
    }
    return out;
  };
  ASSERT_EQ(run_here(with({"--max-updates", "300", "--metrics", dir + "/whole.jsonl"})).code, 0);
  const auto whole = curve(dir + "/whole.jsonl");
  ASSERT_GE(whole.size(), 15u);

  const std::string ck = dir + "/ck", m = dir + "/m.jsonl";
  ASSERT_EQ(
      run_here(with({"--max-updates", "130", "--checkpoint-dir", ck, "--checkpoint-every", "40", "--metrics", m})).code,
      0);
  // A copy of the interrupted run, to be continued from a killed run's temporary below.
  fs::copy(ck, dir + "/ck2");
  fs::copy_file(m, dir + "/m2.jsonl.tmp.Kil1ed");
  std::ofstream(dir + "/m2.jsonl.tmp.Kil1ed", std::ios::app) << "{\"event\":\"eval\",\"upda";  // cut by the kill
  write_text(dir + "/m2.jsonl.tmp.Other1", read_all(dir + "/whole.jsonl"));  // another run's: left alone

  ASSERT_EQ(run_here(with({"--max-updates", "300", "--checkpoint-dir", ck, "--checkpoint-every", "40", "--metrics", m,
                           "--resume"}))
                .code,
            0);
  EXPECT_EQ(curve(m), whole);
  const auto all = records(m);
  std::vector<json> starts;
  for (const json& j : all)
    if (j.value("event", "") == "start") starts.push_back(j);
  ASSERT_EQ(starts.size(), 2u) << "the run's start, then the resumed run's";
  EXPECT_EQ(starts[0]["run_id"], starts[1]["run_id"]);
  EXPECT_EQ(starts[1]["resumed_version"], 130);
  EXPECT_EQ(std::count_if(all.begin(), all.end(), [](const json& j) { return j.value("event", "") == "summary"; }), 1)
      << "the interrupted run's final evaluation and summary are not carried over";

  const std::string m2 = dir + "/m2.jsonl";
  ASSERT_EQ(run_here(with({"--max-updates", "300", "--checkpoint-dir", dir + "/ck2", "--checkpoint-every", "40",
                           "--metrics", m2, "--resume"}))
                .code,
            0);
  EXPECT_EQ(curve(m2), whole) << "continued from the killed run's temporary";
  EXPECT_FALSE(fs::exists(dir + "/m2.jsonl.tmp.Kil1ed")) << "its records are in the file now";
  EXPECT_TRUE(fs::exists(dir + "/m2.jsonl.tmp.Other1"));

  // A metrics file of another run is not continued: the resumed run's file starts at its own start.
  write_text(m2, read_all(dir + "/whole.jsonl"));
  fs::remove_all(dir + "/ck2");
  fs::copy(ck, dir + "/ck2");  // the first run's checkpoints, up to 300
  ASSERT_EQ(run_here(with({"--max-updates", "320", "--checkpoint-dir", dir + "/ck2", "--checkpoint-every", "40",
                           "--metrics", m2, "--resume"}))
                .code,
            0);
  const auto other = records(m2);
  ASSERT_FALSE(other.empty());
  EXPECT_EQ(other[0].value("resumed_version", -1), 300);

  // On the real clock the evaluation of the checkpoint's own version may be
  // written after the checkpoint's record: kept, and not written twice.
  const std::string rck = dir + "/rck", rm = dir + "/r.jsonl";
  for (const char* limit : {"60", "120"}) {
    std::vector<std::string> a = {"--max-updates",    limit, "--eval-every",       "10", "--eval-samples", "20",
                                  "--checkpoint-dir", rck,   "--checkpoint-every", "20", "--metrics",      rm};
    if (std::string(limit) == "120") a.push_back("--resume");
    ASSERT_EQ(run_here(a).code, 0);
  }
  std::vector<int64_t> at;
  for (const json& j : records(rm))
    if (j.value("event", "") == "eval") at.push_back(j["updates"].get<int64_t>());
  std::vector<int64_t> every_ten;
  for (int64_t u = 10; u <= 120; u += 10) every_ten.push_back(u);
  EXPECT_EQ(at, every_ten);
}

TEST(Outputs, PruningCountsOnlyWholeCheckpointsOfThisRun) {
  const std::string dir = fresh_dir("outputs_prune");
  auto ck = [](int64_t v, const std::string& run) {
    Checkpoint c;
    c.header = json{{"version", v}, {"run_id", run}};
    const std::vector<float> p(64, float(v));
    c.put_floats("params", p.data(), p.size());
    return c;
  };
  auto at = [&](int64_t v) { return dir + "/" + checkpoint_name(v); };
  save_checkpoint(dir, 10, ck(10, "a"), 2, "--checkpoint-dir");
  save_checkpoint(dir, 20, ck(20, "a"), 2, "--checkpoint-dir");
  save_checkpoint(dir, 25, ck(25, "b"), 2, "--checkpoint-dir");  // another run's (made by hand: a fresh run refuses the directory)
  {
    std::fstream f(at(20), std::ios::in | std::ios::out | std::ios::binary);  // damage 20's CRC
    f.seekp(-1, std::ios::end);
    f.put('\x5a');
  }
  EXPECT_THROW(load_checkpoint(at(20)), CheckpointError);
  save_checkpoint(dir, 30, ck(30, "a"), 2, "--checkpoint-dir");
  // Kept: 30 and the newest whole one of run a, 10 (before, the damaged 20
  // counted and 10 went); run b's 25 neither counts nor goes; 20 is of no use.
  EXPECT_EQ(names(dir), (std::vector<std::string>{checkpoint_name(10), checkpoint_name(25), checkpoint_name(30)}));
  save_checkpoint(dir, 40, ck(40, "a"), 2, "--checkpoint-dir");
  EXPECT_EQ(names(dir), (std::vector<std::string>{checkpoint_name(25), checkpoint_name(30), checkpoint_name(40)}));
}

// ------------------------------------------------------------------ hostile model files
TEST(Outputs, InitFromReadsABoundedHeaderAndRefusesSpecialFilesAndNonFiniteWeights) {
  const std::string dir = fresh_dir("outputs_init");
  ASSERT_EQ(mkfifo((dir + "/fifo").c_str(), 0644), 0);
  for (const auto& [path, says] : std::vector<std::pair<std::string, std::string>>{
           {dir + "/fifo", "expected a regular file, found a FIFO"},
           {"/dev/zero", "expected a regular file, found a character device"},
           {dir, "expected a regular file, found a directory"}}) {
    const Exit e = run_here({"--max-updates", "1", "--init-from", path});
    EXPECT_EQ(e.code, 2) << e.log;
    EXPECT_NE(e.log.find(says), std::string::npos) << e.log;
    EXPECT_LT(e.seconds, 10) << path;
  }
  // The other inputs read from a file: a trace of delays, a trace to replay.
  for (const auto& args : std::vector<std::vector<std::string>>{{"--straggler", "trace:path=" + dir + "/fifo"}}) {
    const Exit e = run_here(args);
    EXPECT_EQ(e.code, 2) << e.log;
    EXPECT_NE(e.log.find("expected a regular file, found a FIFO"), std::string::npos) << e.log;
  }
  {
    std::vector<std::string> a = {"trainer", "--replay", dir + "/fifo"};
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    testing::internal::CaptureStderr();
    EXPECT_EQ(trainer_main(int(argv.size()), argv.data()), 2);
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_NE(err.find("expected a regular file, found a FIFO"), std::string::npos) << err;
  }
  // A valid model file of `linear`, then the same bytes with a NaN weight.
  const std::string good = dir + "/linear.safetensors";
  ASSERT_EQ(run_here({"--max-updates", "2", "--save-model", good}).code, 0);
  std::string bytes = read_all(good);
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  const float nan = std::nanf("");
  std::memcpy(&bytes[8 + hlen + 4 * 7], &nan, 4);
  write_text(dir + "/nan.safetensors", bytes);
  Exit e = run_here({"--max-updates", "1", "--init-from", dir + "/nan.safetensors"});
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.log.find("at index 7; expected finite values"), std::string::npos) << e.log;
  // The same header in a 3 GB (sparse) file: refused from the header, nothing of the rest read.
  const std::string huge = dir + "/huge.safetensors";
  fs::copy_file(good, huge);
  fs::resize_file(huge, uint64_t(3) << 30);
  rusage before{}, after{};
  getrusage(RUSAGE_SELF, &before);
  e = run_here({"--max-updates", "1", "--init-from", huge});
  getrusage(RUSAGE_SELF, &after);
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.log.find("the data section holds"), std::string::npos) << e.log;
  // Reading the file whole would take 3 GiB; a sanitizer's quarantine may hold some hundreds of MiB.
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 1024 * 1024) << "KiB of peak memory grew reading the header";
  EXPECT_LT(e.seconds, 10);
}

// ------------------------------------------------------------------ traces
TEST(Outputs, ATraceEndsWithTheFinalChecksumAndAnEditedOneIsCaught) {
  const std::string dir = fresh_dir("outputs_trace");
  const std::string trace = dir + "/t.jsonl";
  ASSERT_EQ(run_here({"--workers", "3", "--variant", "k-async", "--k", "2", "--clock", "virtual", "--straggler",
                      "exp:mean=1", "--max-updates", "30", "--eval-every", "0", "--trace", trace})
                .code,
            0);
  std::vector<json> lines;
  {
    std::ifstream in(trace);
    for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  }
  ASSERT_TRUE(lines.back().contains("checksum"));
  auto replay = [](const std::string& path) {
    std::vector<std::string> a = {"trainer", "--replay", path, "--progress", "none"};
    std::vector<char*> argv;
    for (auto& s : a) argv.push_back(s.data());
    testing::internal::CaptureStderr();
    const int rc = trainer_main(int(argv.size()), argv.data());
    return Exit{rc, testing::internal::GetCapturedStderr(), 0};
  };
  EXPECT_EQ(replay(trace).code, 0);
  // A consistent edit: one gradient's weight halved (every line still checks out).
  lines[5]["weight"] = lines[5]["weight"].get<double>() / 2;
  std::ofstream out(dir + "/edited.jsonl");
  for (const auto& j : lines) out << j.dump() << "\n";
  out.close();
  const Exit edited = replay(dir + "/edited.jsonl");
  EXPECT_EQ(edited.code, 1);
  const std::string& err = edited.log;
  EXPECT_NE(err.find("the trace was edited or damaged"), std::string::npos) << err;
  EXPECT_NE(err.find("after 30 updates; the recorded run ended at " + lines.back()["checksum"].get<std::string>()),
            std::string::npos)
      << err;
}

// ------------------------------------------------------------------ flag and schedule edges
TEST(Outputs, FlagEdgesAreErrors) {
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  for (const Case& k : std::vector<Case>{
           {{"--epochs", "0"}, "--epochs: expected a positive limit, found 0"},
           {{"--max-updates", "0"}, "--max-updates: expected a positive limit, found 0"},
           {{"--metrics", ""}, "--metrics: expected a value, found ''"},
           {{"--straggler", ""}, "--straggler: expected a value, found ''"},
           {{"--lr", "inf"}, "--lr: expected a finite number, found 'inf'"},
           {{"--weight-decay", "INF"}, "--weight-decay: expected a finite number"},
           {{"--base-time", "inf"}, "--base-time: expected a finite number"},
           {{"--lr-c", "-inf"}, "--lr-c: expected a finite number"},
           {{"--overwrite"}, "--overwrite needs --checkpoint-dir"}}) {
    const Exit e = run_here(k.args);
    EXPECT_EQ(e.code, 2) << ::testing::PrintToString(k.args) << ": " << e.log;
    EXPECT_NE(e.log.find(k.says), std::string::npos) << e.log;
  }
  // --export takes everything from its checkpoint: other flags are named, not ignored.
  std::vector<std::string> a = {"trainer", "--export", "c.bin", "--save-model", "m.safetensors", "--lr", "0.1"};
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  testing::internal::CaptureStderr();
  EXPECT_EQ(trainer_main(int(argv.size()), argv.data()), 2);
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("these would be ignored: --lr"), std::string::npos) << err;
}

TEST(Outputs, AnEquivalentLayerListResumes) {
  const std::string dir = fresh_dir("outputs_layers") + "/ck";
  ASSERT_EQ(run_here({"--model", "linear", "--max-updates", "5", "--eval-every", "0", "--checkpoint-dir", dir}).code, 0);
  const Exit e = run_here({"--model", "fc", "--max-updates", "10", "--eval-every", "0", "--checkpoint-dir", dir,
                           "--resume"});
  EXPECT_EQ(e.code, 0) << e.log;
  const Exit other = run_here({"--model", "fc16,relu,fc", "--max-updates", "10", "--eval-every", "0",
                               "--checkpoint-dir", dir, "--resume"});
  EXPECT_EQ(other.code, 2);
  EXPECT_NE(other.log.find("model"), std::string::npos) << other.log;
}

TEST(Outputs, RealClockEvaluationsEveryNUpdatesSkipNone) {
  const std::string dir = fresh_dir("outputs_evals");
  ASSERT_EQ(run_here({"--workers", "2", "--variant", "async", "--max-updates", "300", "--eval-every", "3",
                      "--eval-samples", "20", "--metrics", dir + "/m.jsonl"})
                .code,
            0);
  std::ifstream in(dir + "/m.jsonl");
  std::vector<int64_t> at;
  for (std::string l; std::getline(in, l);) {
    const json j = json::parse(l);
    if (j.value("event", "") == "eval" && !j.value("final", false)) at.push_back(j["updates"].get<int64_t>());
  }
  ASSERT_GE(at.size(), 99u);
  for (size_t i = 0; i < 99; ++i) EXPECT_EQ(at[i], int64_t(3 * (i + 1)));
}

TEST(Outputs, RealClockDelaysBeyondTheClocksRangeDoNotWrapToZero) {
  const std::string dir = fresh_dir("outputs_delays");
  const Exit e = run_here({"--workers", "2", "--variant", "async", "--straggler", "const:value=1e10s", "--time-budget",
                           "1s", "--eval-every", "0", "--metrics", dir + "/m.jsonl"});
  ASSERT_EQ(e.code, 0) << e.log;
  EXPECT_LT(e.seconds, 20);
  const std::string m = read_all(dir + "/m.jsonl");
  const json summary = json::parse(m.substr(m.rfind("{\"")));
  EXPECT_EQ(summary["updates"], 0) << "delays of 1e10 s wrapped to short ones";
}

TEST(Outputs, AnAdaSyncChangeCappedByAFailedWorkerIsLoggedOnce) {
  const std::string dir = fresh_dir("outputs_kcap");
  const Exit e = run_here({"--workers", "4", "--variant", "k-sync", "--schedule", "adasync", "--straggler",
                           "exp:mean=2ms", "--inject", "throw@1:3", "--max-updates", "600", "--eval-every", "0",
                           "--schedule-every", "0.02s", "--metrics", dir + "/m.jsonl"});
  ASSERT_EQ(e.code, 0) << e.log;
  std::ifstream in(dir + "/m.jsonl");
  int failed = 0, changes = 0, k = 1;
  for (std::string l; std::getline(in, l);) {
    const json j = json::parse(l);
    failed += j.value("event", "") == "worker_failed";
    if (j.value("event", "") != "k_change") continue;
    ++changes;
    EXPECT_EQ(j["k_prev"], k) << l;
    EXPECT_NE(j["k"], j["k_prev"]) << l;
    k = j["k"];
    if (failed > 0) {
      EXPECT_LE(k, 3) << l;
    }
  }
  EXPECT_EQ(failed, 1);
  EXPECT_LE(changes, 3) << "K 1..4 changes at most three times";
}

}  // namespace
}  // namespace adasync
