// --transport mpi, end to end: the trainer binary under mpirun with CPU
// workers on one machine (ranks oversubscribe its cores). Each test skips,
// saying why, when the build has no MPI or mpirun is not on the PATH.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/transport/mpi/mpi.h"
#include "tests/support/files.h"

namespace adasync {
namespace {
using test::read_all;
using test::trainer_path;
namespace fs = std::filesystem;

class Mpi : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!MpiWorld::available()) GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev, openmpi-bin; rebuild)";
    if (std::system("command -v mpirun >/dev/null 2>&1") != 0) GTEST_SKIP() << "mpirun is not on the PATH";
    // Open MPI refuses root without these, and in containers needs no CMA.
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 1);
    dir_ = fs::path(::testing::TempDir()) /
           ("adasync-mpi-" + std::to_string(getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!dir_.empty() && !HasFailure()) fs::remove_all(dir_);
  }

  struct Result {
    int code = -1;
    std::string out;
  };
  // Runs `cmd` (a shell line) with a time limit; code 124 when it hung.
  Result sh(const std::string& cmd, int limit_s = 120) {
    const std::string log = (dir_ / ("log" + std::to_string(runs_++))).string();
    const int st = std::system(("timeout -k 5 " + std::to_string(limit_s) + " " + cmd + " >" + log + " 2>&1").c_str());
    return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, read_all(log)};
  }
  // mpirun -np `np` trainer --transport mpi <common flags> `flags`.
  Result mpirun(int np, const std::string& flags, int limit_s = 120) {
    return sh("mpirun --oversubscribe -np " + std::to_string(np) + " " + trainer_path() +
                  " --transport mpi --dataset gaussian --model mlp --threads 1 --devices cpu --progress plain " +
                  (flags.find("--eval-every") == std::string::npos ? "--eval-every 0 " : "") + flags,
              limit_s);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  fs::path dir_;
  int runs_ = 0;
};

// The summary's line naming the last checkpoint; an error met while writing
// one (a rank killed mid-save) may quote "checkpoint:" elsewhere in a line.
constexpr const char* kCheckpointLine = "(?:^|\\n)checkpoint: (\\S+)";

std::string field(const std::string& out, const std::string& re) {
  std::smatch m;
  return std::regex_search(out, m, std::regex(re)) ? m[1].str() : "";
}

nlohmann::json summary_of(const std::string& metrics) {
  std::ifstream f(metrics);
  std::string line;
  nlohmann::json last;
  while (std::getline(f, line))
    if (!line.empty()) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (j.value("event", "") == "summary") last = j;
    }
  return last;
}

TEST_F(Mpi, EveryVariantRunsToItsLimitWithWorkersOnTwoRanks) {
  for (const char* v : {"sync", "k-sync", "k-batch-sync", "async", "k-async", "k-batch-async"}) {
    const std::string metrics = path(std::string(v) + ".jsonl");
    const Result r = mpirun(3, std::string("--workers 4 --variant ") + v + " --k 2 --max-updates 40 --metrics " + metrics);
    ASSERT_EQ(r.code, 0) << v << "\n" << r.out;
    EXPECT_NE(r.out.find("workers on 2 rank(s)"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("stop reason: updates"), std::string::npos) << v << "\n" << r.out;
    const nlohmann::json s = summary_of(metrics);
    ASSERT_FALSE(s.is_null()) << v;
    EXPECT_EQ(s["updates"].get<int64_t>(), 40) << v;
    const bool asynchronous = std::string(v).find("async") != std::string::npos;
    // Staleness travels with every push: the asynchronous rules see it, the synchronous ones apply none.
    if (asynchronous) EXPECT_GE(s["staleness_max"].get<int64_t>(), 1) << v;
    else EXPECT_EQ(s["staleness_max"].get<int64_t>(), 0) << v;
    EXPECT_GT(s["test_accuracy"].get<double>(), 0.5) << v;
  }
}

// The trace names each applied gradient by (worker, version, batch); one
// process recomputes them all: the same bits only if every gradient crossed
// the transport exactly and was applied to the parameters it was computed at.
TEST_F(Mpi, ATraceRecordedOverMpiReplaysBitForBitInOneProcess) {
  for (const char* v : {"k-async", "k-sync"}) {
    const std::string trace = path(std::string(v) + ".trace");
    const Result r = mpirun(4, std::string("--workers 5 --variant ") + v + " --k 2 --max-updates 60 --trace " + trace);
    ASSERT_EQ(r.code, 0) << r.out;
    const std::string sum = field(r.out, "params checksum ([0-9a-f]+)");
    ASSERT_FALSE(sum.empty()) << r.out;
    const Result replay = sh(trainer_path() + " --replay " + trace + " --threads 1 --devices cpu");
    ASSERT_EQ(replay.code, 0) << replay.out;
    EXPECT_EQ(field(replay.out, "params checksum ([0-9a-f]+)"), sum) << v << "\n" << replay.out;
    EXPECT_NE(replay.out.find("replayed 60 updates"), std::string::npos) << replay.out;
  }
}

TEST_F(Mpi, CheckpointsAndResumesAcrossRanks) {
  const std::string ck = path("ck");
  const std::string flags = "--workers 3 --variant k-async --k 2 --checkpoint-dir " + ck + " --checkpoint-every 10 ";
  const Result first = mpirun(3, flags + "--max-updates 30");
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_NE(first.out.find("checkpoint: "), std::string::npos) << first.out;
  const std::string metrics = path("resumed.jsonl");
  const Result second = mpirun(3, flags + "--max-updates 70 --resume --metrics " + metrics);
  ASSERT_EQ(second.code, 0) << second.out;
  EXPECT_EQ(summary_of(metrics)["updates"].get<int64_t>(), 70);
  std::ifstream f(metrics);
  std::string start;
  std::getline(f, start);
  const nlohmann::json j = nlohmann::json::parse(start);
  EXPECT_EQ(j.value("resumed_version", int64_t(-1)), 30) << start;
}

// An injected failure on a worker rank: the PS reports it and goes on with the rest.
// Gradients take 30 ms (the 60 updates at least 0.45 s), so that worker 2
// reaches its third step before the others end an async run (without the
// delay they once did it in 0.07 s, worker 2's rank late to start).
TEST_F(Mpi, AFailedWorkerOnAnotherRankIsReportedAndTheRunGoesOn) {
  for (const char* v : {"async", "sync"}) {
    const Result r = mpirun(3, std::string("--workers 4 --variant ") + v +
                                   " --max-updates 60 --straggler const:value=30ms --inject throw@2:3");
    ASSERT_EQ(r.code, 0) << v << "\n" << r.out;
    EXPECT_NE(r.out.find("failed workers: 2"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("injected failure"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("stop reason: updates"), std::string::npos) << r.out;
  }
}

TEST_F(Mpi, SigtermToTheJobStopsWithACheckpoint) {
  const std::string ck = path("ck");
  const std::string log = path("sigterm.log");
  // mpirun forwards SIGTERM to every rank; rank 0 stops, checkpoints, tells the others.
  const std::string cmd = "mpirun --oversubscribe -np 3 " + trainer_path() +
                          " --transport mpi --dataset gaussian --model mlp --threads 1 --devices cpu --progress plain "
                          "--eval-every 0 --workers 2 --variant async --time-budget 120s --checkpoint-every 20 --checkpoint-dir " + ck;
  const Result r = sh("bash -c '" + cmd + " & pid=$!; for i in $(seq 200); do ls " + ck +
                      "/ckpt-* >/dev/null 2>&1 && break; sleep 0.1; done; sleep 1; kill -TERM $pid; wait $pid'", 60);
  EXPECT_NE(r.code, 124) << "hung\n" << r.out;
  EXPECT_NE(r.out.find("stopped by SIGTERM"), std::string::npos) << r.out;
  int checkpoints = 0;
  for (const auto& e : fs::directory_iterator(ck)) checkpoints += e.path().filename().string().rfind("ckpt-", 0) == 0;
  EXPECT_GE(checkpoints, 1);
}

// A worker rank killed mid-run: rank 0 goes on receiving from the others
// (nothing waits on the dead rank), then mpirun ends the job with SIGTERM and
// rank 0 stops with a final checkpoint, from which the run resumes.
TEST_F(Mpi, AKilledWorkerRankEndsTheJobWithACheckpointToResumeFrom) {
  const std::string ck = path("ck");
  const std::string flags = "--workers 4 --variant async --checkpoint-dir " + ck;
  const std::string lost_metrics = path("lost.jsonl");
  // Rank 0 gets 10 s between mpirun's SIGTERM and its SIGKILL (the default is 1 s).
  const std::string cmd = "mpirun --mca odls_base_sigkill_timeout 10 --oversubscribe -np 3 " + trainer_path() +
                          " --transport mpi --dataset gaussian --model mlp --threads 1 --devices cpu --progress plain "
                          "--eval-every 0 --time-budget 120s --checkpoint-every 50 --metrics " + lost_metrics + " " + flags;
  const std::string kill_rank2 =
      "for p in $(pgrep -f -- \"" + ck + "\"); do tr \"\\0\" \"\\n\" </proc/$p/environ 2>/dev/null | "
      "grep -qx OMPI_COMM_WORLD_RANK=2 && kill -9 $p; done";
  const Result r = sh("bash -c '" + cmd + " & pid=$!; for i in $(seq 300); do ls " + ck +
                          "/ckpt-* >/dev/null 2>&1 && break; sleep 0.1; done; sleep 1; " + kill_rank2 +
                          "; wait $pid'",
                      90);
  ASSERT_NE(r.code, 124) << "hung\n" << r.out;
  EXPECT_NE(r.code, 0) << r.out;  // the job was aborted
  EXPECT_NE(r.out.find("stopped by SIGTERM"), std::string::npos) << r.out;
  // Rank 0 names the rank that never confirmed the stop, and its workers, on
  // the progress output, in the metrics and in the summary.
  EXPECT_NE(r.out.find("worker rank 2 (workers 2-3) lost: it did not confirm the stop"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lost worker ranks: 2"), std::string::npos) << r.out;
  bool event = false;
  std::ifstream in(lost_metrics);
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line);
    if (j.value("event", "") == "rank_lost") {
      event = true;
      EXPECT_EQ(j["rank"].get<int>(), 2) << line;
      EXPECT_EQ(j["workers"], nlohmann::json({2, 3})) << line;
    }
  }
  EXPECT_TRUE(event) << "no rank_lost event in " << lost_metrics;
  EXPECT_EQ(summary_of(lost_metrics)["lost_ranks"], nlohmann::json({2}));
  const std::string last = field(r.out, kCheckpointLine);
  ASSERT_FALSE(last.empty()) << r.out;
  EXPECT_TRUE(fs::exists(last)) << last;
  const int64_t at = std::stoll(field(r.out, "stopped by SIGTERM after update ([0-9]+)"));
  const std::string metrics = path("resumed.jsonl");
  const Result again = mpirun(3, flags + " --max-updates " + std::to_string(at + 20) + " --resume --metrics " + metrics);
  ASSERT_EQ(again.code, 0) << again.out;
  EXPECT_EQ(summary_of(metrics)["updates"].get<int64_t>(), at + 20);
}

// The same for SwarmSGD: a killed node rank is named (progress, metrics,
// summary) and the run ends with a summary; its nodes' state is gone, so the
// last periodic checkpoint stays the one to resume from.
TEST_F(Mpi, AKilledSwarmRankIsReportedAndTheRunEndsWithASummary) {
  const std::string ck = path("swarm-ck");
  const std::string metrics = path("swarm-lost.jsonl");
  const std::string cmd = "mpirun --mca odls_base_sigkill_timeout 10 --oversubscribe -np 3 " + trainer_path() +
                          " --transport mpi --dataset gaussian --model mlp --threads 1 --devices cpu --progress plain "
                          "--variant swarm --workers 4 --straggler const:value=2ms --eval-every 0 --time-budget 120s "
                          "--checkpoint-every 50 --checkpoint-dir " + ck + " --metrics " + metrics;
  const std::string kill_rank2 =
      "for p in $(pgrep -f -- \"" + ck + "\"); do tr \"\\0\" \"\\n\" </proc/$p/environ 2>/dev/null | "
      "grep -qx OMPI_COMM_WORLD_RANK=2 && kill -9 $p; done";
  const Result r = sh("bash -c '" + cmd + " & pid=$!; for i in $(seq 300); do ls " + ck +
                          "/ckpt-* >/dev/null 2>&1 && break; sleep 0.1; done; sleep 1; " + kill_rank2 +
                          "; wait $pid'",
                      90);
  ASSERT_NE(r.code, 124) << "hung\n" << r.out;
  EXPECT_NE(r.code, 0) << r.out;  // the job was aborted
  EXPECT_NE(r.out.find("worker rank 2 (workers 2-3) lost: it did not confirm the stop"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("lost worker ranks:"), std::string::npos) << r.out;
  const nlohmann::json summary = summary_of(metrics);
  ASSERT_TRUE(summary.is_object()) << "no summary in " << metrics << "\n" << r.out;
  const auto lost = summary["lost_ranks"].get<std::vector<int>>();
  EXPECT_NE(std::find(lost.begin(), lost.end(), 2), lost.end()) << summary.dump();
  const std::string last = field(r.out, kCheckpointLine);
  ASSERT_FALSE(last.empty()) << r.out;
  EXPECT_TRUE(fs::exists(last)) << last;
}

nlohmann::json final_of(const std::string& metrics) {
  std::ifstream f(metrics);
  nlohmann::json last;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (j.value("event", "") == "final") last = j;
    }
  return last;
}

// SwarmSGD with its 4 nodes on two worker ranks (the ring and the complete
// graph both join nodes across ranks): each node averages once every H local
// steps, every exchange's bytes are counted exactly as in one process, and
// averaging holds the nodes together (no averaging lets them drift apart).
// Exchanges between the ranks go in place through shared memory, or as
// messages (--no-shared-memory, as between hosts): each way in each mode.
// Every step takes 2 ms: on a loaded machine a starved rank would otherwise
// take few steps, and averaging with its stale models says nothing of MPI.
TEST_F(Mpi, SwarmSgdAveragesAcrossRanksAtItsExpectedRate) {
  const int64_t P = 4, H = 4, n = 76810;  // the mlp on gaussian data
  for (const std::string mode : {"blocking", "nonblocking"}) {
    double apart = 0;
    {
      const std::string metrics = path(mode + "-alone.jsonl");
      const Result r = mpirun(3, "--workers 4 --variant swarm --swarm-mode " + mode +
                                     " --local-steps 1000000 --lr 0.2 --max-updates 400 --straggler const:value=2ms --metrics " + metrics);
      ASSERT_EQ(r.code, 0) << r.out;
      const nlohmann::json f = final_of(metrics);
      ASSERT_FALSE(f.is_null()) << r.out;
      EXPECT_EQ(f["interactions"].get<int64_t>(), 0);
      apart = f["consensus_distance"].get<double>();
    }
    for (const std::string graph : {"ring", "complete"}) {
      const bool messages = (graph == "ring") == (mode == "blocking");
      const std::string metrics = path(mode + graph + ".jsonl");
      const Result r = mpirun(3, "--workers 4 --variant swarm --graph " + graph + " --swarm-mode " + mode +
                                     " --local-steps 4 --lr 0.2 --max-updates 400 --straggler const:value=2ms --metrics " +
                                     metrics + (messages ? " --no-shared-memory" : ""));
      ASSERT_EQ(r.code, 0) << mode << " " << graph << "\n" << r.out;
      EXPECT_NE(r.out.find("SwarmSGD nodes on 2 rank(s)"), std::string::npos) << r.out;
      EXPECT_NE(r.out.find("stop reason: updates"), std::string::npos) << r.out;
      const nlohmann::json f = final_of(metrics);
      ASSERT_FALSE(f.is_null()) << r.out;
      const int64_t steps = f["local_steps"].get<int64_t>(), met = f["interactions"].get<int64_t>();
      // Past the limit: steps reported ahead of rank 0's count (a rank's
      // window: 16 per node), and each node's step in hand at the stop.
      EXPECT_GE(steps, 400);
      EXPECT_LE(steps, 400 + 17 * P) << mode << " " << graph;
      // Node i has had floor(s_i / H) exchanges after its s_i steps.
      EXPECT_LE(met * H, steps) << mode << " " << graph;
      EXPECT_GE(met * H, steps - P * (H - 1)) << mode << " " << graph;
      // Full precision: n floats each way (blocking) or one way, nothing sent again.
      EXPECT_EQ(f["bytes_total"].get<int64_t>(), met * 4 * n * (mode == "blocking" ? 2 : 1)) << mode << " " << graph;
      EXPECT_EQ(f["fallback_bytes"].get<int64_t>(), 0);
      EXPECT_LT(f["consensus_distance"].get<double>(), apart / 10) << mode << " " << graph;
      EXPECT_GT(f["test_accuracy"].get<double>(), 0.9);
      // Nodes 0-1 on rank 1, 2-3 on rank 2: messages carry the exchanges across ranks only.
      const int64_t by_message = f["interactions_by_message"].get<int64_t>();
      if (messages) {
        EXPECT_GT(by_message, 0) << mode << " " << graph;
        EXPECT_LT(by_message, met) << mode << " " << graph;
        EXPECT_FALSE(f.contains("out_of_range"));  // it needs both ends of a transfer
      } else {
        EXPECT_EQ(by_message, 0) << mode << " " << graph;
        EXPECT_NE(r.out.find("interactions (all in place, in shared memory)"), std::string::npos) << r.out;
        EXPECT_EQ(f["out_of_range"].get<int64_t>(), 0);  // both ends in reach: counted, as in one process
      }
    }
  }
  // Quantised, as messages: blocks that cannot be decoded cross again at full precision, both ways.
  const std::string metrics = path("quantised.jsonl");
  const Result r = mpirun(4, "--workers 5 --variant swarm --quantize 8 --quant-step 1e-4 --lr 0.2 --max-updates 400 "
                                 "--straggler const:value=2ms --no-shared-memory --metrics " +
                                 metrics);
  ASSERT_EQ(r.code, 0) << r.out;
  const nlohmann::json f = final_of(metrics);
  ASSERT_FALSE(f.is_null()) << r.out;
  EXPECT_GT(f["fallback_blocks"].get<int64_t>(), 0);
  EXPECT_GT(f["test_accuracy"].get<double>(), 0.9);
  EXPECT_FALSE(f.contains("out_of_range"));  // it needs both ends of a transfer
}

// Rank 0 gathers every node's model, published copy and distances into its
// checkpoints and sends them back to the ranks on --resume: the resumed run
// goes on from the trained nodes with the counters it left off at.
TEST_F(Mpi, SwarmSgdCheckpointsAndResumesAcrossRanks) {
  const int64_t P = 4;
  const std::string flags = "--workers 4 --variant swarm --quantize 8 --straggler const:value=2ms --eval-every 100 "
                            "--checkpoint-every 100 --checkpoint-dir " + path("ck") + " ";
  const std::string first_metrics = path("first.jsonl");
  const Result first = mpirun(3, flags + "--max-updates 300 --metrics " + first_metrics);
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_TRUE(fs::exists(path("ck/ckpt-000000000300.bin"))) << first.out;
  const nlohmann::json before = final_of(first_metrics);
  ASSERT_FALSE(before.is_null());
  const std::string metrics = path("resumed.jsonl");
  const Result second = mpirun(3, flags + "--max-updates 500 --resume --metrics " + metrics);
  ASSERT_EQ(second.code, 0) << second.out;
  nlohmann::json start, eval;
  std::ifstream in(metrics);
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("event", "") == "start") start = j;
    if (j.value("event", "") == "eval" && eval.is_null()) eval = j;
  }
  EXPECT_EQ(start.value("resumed_version", int64_t(-1)), 300);
  ASSERT_FALSE(eval.is_null()) << second.out;
  // From the trained nodes (from the start, 100 steps would leave the loss far higher).
  EXPECT_LT(eval["test_loss"].get<double>(), 1.2 * before["test_loss"].get<double>());
  const nlohmann::json after = final_of(metrics);
  EXPECT_EQ(summary_of(metrics)["updates"].get<int64_t>(), 500);
  // The counters go on from the checkpoint's.
  const int64_t s0 = before["local_steps"].get<int64_t>(), s1 = after["local_steps"].get<int64_t>();
  EXPECT_GE(s1, s0 + 200);
  EXPECT_LE(s1, s0 + 200 + 3 * P);
  EXPECT_GE(after["interactions"].get<int64_t>(), before["interactions"].get<int64_t>() + 200 / 4 - P);
  EXPECT_GT(after["bytes_total"].get<int64_t>(), before["bytes_total"].get<int64_t>());
}

// --inject means the same for SwarmSGD's nodes on worker ranks: a failed
// node is reported by rank 0 and leaves (the others go on), a non-finite step
// is not taken; a node that left stays gone on resume.
TEST_F(Mpi, SwarmFaultsOnWorkerRanksAreReportedAndSurviveAResume) {
  const std::string flags = "--workers 4 --variant swarm --straggler const:value=2ms --eval-every 0 "
                            "--inject throw@2:3,nan@1:4 --checkpoint-every 100 --checkpoint-dir " + path("ck") + " ";
  const std::string first_metrics = path("first.jsonl");
  const Result first = mpirun(3, flags + "--max-updates 200 --metrics " + first_metrics);
  ASSERT_EQ(first.code, 0) << first.out;
  EXPECT_NE(first.out.find("worker 2 failed: injected failure at computation 3; continuing with 3 worker(s)"),
            std::string::npos) << first.out;
  EXPECT_NE(first.out.find("failed workers: 2"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("non-finite 1"), std::string::npos) << first.out;
  const nlohmann::json before = final_of(first_metrics);
  ASSERT_FALSE(before.is_null());
  EXPECT_EQ(before["steps_by_node"][2].get<int64_t>(), 2);
  EXPECT_EQ(before["nonfinite_steps"].get<int64_t>(), 1);
  const std::string metrics = path("resumed.jsonl");
  const Result second = mpirun(3, flags + "--max-updates 300 --resume --metrics " + metrics);
  ASSERT_EQ(second.code, 0) << second.out;
  // No failure again, but the run's summary still names the node it lost.
  EXPECT_EQ(second.out.find("worker 2 failed"), std::string::npos) << second.out;
  EXPECT_NE(second.out.find("failed workers: 2"), std::string::npos) << second.out;
  const nlohmann::json after = final_of(metrics);
  ASSERT_FALSE(after.is_null());
  EXPECT_EQ(after["steps_by_node"][2].get<int64_t>(), 2);  // no step since
  // Nor an exchange: the other rank's nodes (0 and 1) no longer pick it, so it sends nothing more.
  EXPECT_EQ(after["bytes_by_node"][2].get<int64_t>(), before["bytes_by_node"][2].get<int64_t>());
  EXPECT_GT(after["steps_by_node"][0].get<int64_t>(), before["steps_by_node"][0].get<int64_t>());
}

TEST_F(Mpi, BadSetUpsGetOneClearErrorBeforeTraining) {
  // Not under mpirun: one process.
  Result r = sh(trainer_path() + " --transport mpi --dataset gaussian --model mlp --max-updates 5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("expected 2 or more processes"), std::string::npos) << r.out;
  // Fewer workers than worker ranks.
  r = mpirun(4, "--workers 2 --max-updates 5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("--workers 2 for 3 worker rank(s)"), std::string::npos) << r.out;
  // The virtual clock is one process's simulation.
  r = mpirun(3, "--workers 2 --clock virtual --max-updates 5");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("virtual clock"), std::string::npos) << r.out;
  // Ranks started with different flags (MPMD).
  const std::string common =
      " --transport mpi --dataset gaussian --model mlp --threads 1 --devices cpu --progress none --max-updates 5";
  r = sh("mpirun --oversubscribe -np 2 " + trainer_path() + common + " --workers 2 : -np 1 " + trainer_path() + common +
         " --workers 3");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("rank(s) 2 got other flags than rank 0"), std::string::npos) << r.out;
  // A rank that cannot set up (here every rank: a missing data directory) stops them all.
  r = sh("mpirun --oversubscribe -np 3 " + trainer_path() +
         " --transport mpi --dataset fashion-mnist --data-dir /nonexistent --workers 2 --progress none");
  EXPECT_EQ(r.code, 2) << r.out;
  EXPECT_NE(r.out.find("/nonexistent"), std::string::npos) << r.out;
  for (const std::string& out : {r.out})
    EXPECT_EQ(out.find("did not confirm"), std::string::npos) << out;
}

}  // namespace
}  // namespace adasync
