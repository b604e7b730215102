// Bad input caught before work, nothing left behind: every kind of damaged
// or hand-edited trace is a UsageError (exit 2) naming the file, the line,
// what was expected and what was found; checkpoint directories keep only
// their own valid checkpoints and lose their stale temporaries.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "runtime/checkpoint.h"
#include "runtime/output.h"
#include "runtime/run/trace.h"
#include "runtime/run/trainer.h"
#include "tests/support/files.h"
#include "tests/support/small_data.h"

namespace adasync {
namespace {
using test::expect_contains;
using test::fresh_dir;
using test::names;
namespace fs = std::filesystem;
using nlohmann::json;

std::string write_lines(const std::string& path, const std::vector<json>& lines) {
  std::ofstream f(path);
  for (const auto& j : lines) f << j.dump() << "\n";
  return path;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// Runs read_trace, which must throw UsageError; returns its message.
std::string trace_error(const std::string& path) {
  try {
    read_trace(path);
  } catch (const UsageError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected a UsageError, got: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a UsageError for " << path << ", it was accepted";
  return "";
}

// A small whole trace: two workers, three updates (the first of two
// gradients), then the end record.
std::vector<json> good_trace() {
  auto entry = [](int64_t version, int worker, int64_t tau, uint64_t batch, double weight) {
    return to_json(TraceEntry{0.5 * double(version), worker, tau, version, version - 1 - tau, batch, float(weight), 0.5f});
  };
  return {json{{"trace", kTraceFormat}, {"workers", 2}, {"batch", 4}, {"lr", 0.5}},  // line 1
          entry(1, 0, 0, 0, 0.5),                                                     // line 2
          entry(1, 1, 0, 0, 0.5),                                                     // line 3
          entry(2, 0, 1, 1, 1.0),                                                     // line 4
          entry(3, 1, 1, 1, 0.25),                                                    // line 5
          trace_footer(3, 4, "0123456789abcdef")};                                    // line 6
}

TEST(TraceReader, AWholeTraceReadsBack) {
  const std::string path = write_lines(fresh_dir("bad_input_good") + "/t.jsonl", good_trace());
  const Trace t = read_trace(path);
  ASSERT_EQ(t.entries.size(), 4u);
  EXPECT_EQ(t.header["workers"], 2);
  EXPECT_EQ(t.entries[3].version, 3);
  EXPECT_EQ(t.entries[3].tau, 1);
  EXPECT_EQ(t.entries[3].staleness, 1);
  EXPECT_EQ(t.entries[3].weight, 0.25f);
  EXPECT_EQ(t.entries[1].worker, 1);
  // An empty run is a whole trace too: header and end record.
  const std::string empty =
      write_lines(fresh_dir("bad_input_good0") + "/t.jsonl", {good_trace()[0], trace_footer(0, 0, "0000000000000000")});
  EXPECT_TRUE(read_trace(empty).entries.empty());
  EXPECT_EQ(read_trace(path).checksum, "0123456789abcdef");
  // Format 2 (no checksum) still reads; format 3 must carry one.
  auto v2 = good_trace();
  v2[0]["trace"] = 2;
  v2.back().erase("checksum");
  EXPECT_EQ(read_trace(write_lines(fresh_dir("bad_input_good2") + "/t.jsonl", v2)).checksum, "");
  auto v3 = good_trace();
  v3.back().erase("checksum");
  try {
    read_trace(write_lines(fresh_dir("bad_input_bad3") + "/t.jsonl", v3));
    ADD_FAILURE() << "a format-3 end record without its checksum was accepted";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("\"checksum\": 16 hexadecimal digits"), std::string::npos) << e.what();
  }
  // Blank lines and CRLF line ends do not matter.
  std::string text = read_text(path), crlf;
  for (char ch : text) crlf += ch == '\n' ? std::string("\r\n\n") : std::string(1, ch);
  std::ofstream(path) << crlf;
  EXPECT_EQ(read_trace(path).entries.size(), 4u);
}

TEST(TraceReader, TheFooterMatchesWhatTheWriterWrites) {
  const json f = trace_footer(7, 12, "00000000deadbeef");
  EXPECT_EQ(f, json::parse(R"({"end": true, "updates": 7, "entries": 12, "checksum": "00000000deadbeef"})"));
}

struct BadValue {
  const char* name;
  int line;  // 1-based, as in the message
  const char* key;
  json value;  // null: the key is removed
  std::vector<std::string> mentions;
};

// CTest shows each case by its printed parameter (raw bytes otherwise).
void PrintTo(const BadValue& b, std::ostream* os) { *os << b.name; }

class TraceBadValue : public ::testing::TestWithParam<BadValue> {};

TEST_P(TraceBadValue, IsAUsageErrorNamingFileLineExpectedAndFound) {
  const BadValue& b = GetParam();
  auto lines = good_trace();
  json& j = lines[size_t(b.line - 1)];
  if (b.value.is_null()) {
    j.erase(b.key);
  } else {
    j[b.key] = b.value;
  }
  const std::string path = write_lines(fresh_dir(std::string("bad_input_") + b.name) + "/t.jsonl", lines);
  const std::string msg = trace_error(path);
  std::vector<std::string> parts = b.mentions;
  parts.push_back(path + ":" + std::to_string(b.line) + ": expected ");
  parts.push_back(", found ");
  expect_contains(msg, parts);
}

INSTANTIATE_TEST_SUITE_P(
    Table, TraceBadValue,
    ::testing::Values(
        BadValue{"negative_batch", 2, "batch", -1, {"\"batch\" to be an integer in [0, 2^53)", "found -1"}},
        BadValue{"huge_batch", 4, "batch", json(uint64_t(1) << 53), {"in [0, 2^53)", "found 9007199254740992"}},
        BadValue{"max_batch", 4, "batch", json(UINT64_MAX), {"in [0, 2^53)", "found 18446744073709551615"}},
        BadValue{"fraction_batch", 4, "batch", 1.5, {"\"batch\" to be an integer", "found 1.5"}},
        BadValue{"huge_weight", 3, "weight", 1e30, {"\"weight\" to be a finite number in [0, 1]", "found 1e+30"}},
        BadValue{"negative_weight", 3, "weight", -0.25, {"\"weight\"", "found -0.25"}},
        BadValue{"string_weight", 3, "weight", "0.5", {"\"weight\"", "found \"0.5\""}},
        BadValue{"huge_lr", 4, "lr", 1e30, {"\"lr\" to be a finite number in (0, 0.5]", "found 1e+30"}},
        BadValue{"zero_lr", 4, "lr", 0, {"\"lr\"", "found 0"}},
        BadValue{"lr_within_an_update", 3, "lr", 0.25, {"\"lr\" equal to 0.5", "version 1", "found 0.25"}},
        BadValue{"negative_time", 5, "time", -1, {"\"time\" to be a finite number of at least 0", "found -1"}},
        BadValue{"worker_out_of_range", 3, "worker", 2, {"\"worker\" to be an integer in [0, 2)", "found 2"}},
        BadValue{"negative_worker", 3, "worker", -1, {"\"worker\"", "found -1"}},
        BadValue{"huge_worker", 3, "worker", 1e10, {"\"worker\" to be an integer", "found 10000000000.0"}},
        BadValue{"future_tau", 4, "tau", 2, {"\"tau\" to be an integer in [0, 1]", "found 2"}},
        BadValue{"negative_tau", 5, "tau", -1, {"\"tau\"", "found -1"}},
        BadValue{"wrong_staleness", 4, "staleness", 1, {"\"staleness\" to be an integer equal to version - 1 - tau = 0",
                                                        "found 1"}},
        BadValue{"skipped_version", 4, "version", 3, {"\"version\" to be an integer equal to 1 (the same update) or 2",
                                                      "found 3"}},
        BadValue{"first_version", 2, "version", 2, {"\"version\" to be an integer equal to 1", "found 2"}},
        BadValue{"earlier_version", 5, "version", 1, {"\"version\"", "found 1"}},
        BadValue{"missing_version", 4, "version", nullptr, {"a field \"version\"", "found none"}},
        BadValue{"old_format", 1, "trace", 1, {"trace format 3", "record it again", "found format 1"}},
        BadValue{"unknown_format", 1, "trace", 4, {"trace format 3 (or 2)", "found \"trace\": 4"}},
        BadValue{"zero_workers", 1, "workers", 0, {"\"workers\" to be an integer in [1, 1024]", "found 0"}},
        BadValue{"missing_workers", 1, "workers", nullptr, {"a field \"workers\""}},
        BadValue{"negative_header_lr", 1, "lr", -1, {"\"lr\"", "found -1"}},
        BadValue{"zero_batch_size", 1, "batch", 0, {"\"batch\" to be an integer of at least 1", "found 0"}},
        BadValue{"footer_updates", 6, "updates", 4, {"an end record of 4 updates and 4 entries to match the trace",
                                                     "found 3 updates in 4 entries"}},
        BadValue{"footer_entries", 6, "entries", 9, {"9 entries to match", "found 3 updates in 4 entries"}},
        BadValue{"footer_not_end", 6, "end", false, {"\"end\": true"}}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(TraceReader, ACutOffOrHeaderOnlyTraceIsTruncated) {
  const std::string dir = fresh_dir("bad_input_cut");
  auto lines = good_trace();
  lines.pop_back();  // cut at a line boundary: every line whole, the end record missing
  const std::string cut = write_lines(dir + "/cut.jsonl", lines);
  expect_contains(trace_error(cut), {cut, "truncated: no end record", "found 4 entries, 3 updates", "line 5"});
  lines.resize(3);  // cut inside an update
  write_lines(cut, lines);
  expect_contains(trace_error(cut), {cut, "truncated: no end record", "found 2 entries, 1 updates"});
  const std::string header_only = write_lines(dir + "/header.jsonl", {good_trace()[0]});
  expect_contains(trace_error(header_only), {header_only, "truncated: no end record", "found 0 entries"});
  // Cut inside a line: that line is not JSON.
  std::string text = read_text(write_lines(dir + "/mid.jsonl", good_trace()));
  std::ofstream(dir + "/mid.jsonl") << text.substr(0, text.size() - 20);
  expect_contains(trace_error(dir + "/mid.jsonl"), {dir + "/mid.jsonl:6: expected a JSON object, found"});
}

TEST(TraceReader, BadLinesAndFilesAreNamed) {
  const std::string dir = fresh_dir("bad_input_lines");
  auto lines = good_trace();
  lines.push_back(lines[1]);  // after the end record
  const std::string after = write_lines(dir + "/after.jsonl", lines);
  expect_contains(trace_error(after), {after + ":7: expected nothing after the end record"});
  lines = good_trace();
  lines[2] = json::array({1, 2});
  const std::string array = write_lines(dir + "/array.jsonl", lines);
  expect_contains(trace_error(array), {array + ":3: expected a JSON object, found '[1,2]'"});
  // Deep nesting is named, not printed (printing recurses).
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  std::ofstream(dir + "/deep.jsonl") << good_trace()[0].dump() << "\n" << deep << "\n";
  expect_contains(trace_error(dir + "/deep.jsonl"), {dir + "/deep.jsonl:2: expected a JSON object, found '[[["});
  std::ofstream(dir + "/deep.jsonl") << good_trace()[0].dump()
                                     << "\n{\"time\":0,\"worker\":0,\"tau\":0,\"version\":1,\"staleness\":0,\"batch\":"
                                     << deep << "}\n";
  expect_contains(trace_error(dir + "/deep.jsonl"),
                  {dir + "/deep.jsonl:2: expected \"batch\" to be an integer in [0, 2^53), found an array"});
  lines[0] = json{{"not", "a trace"}};
  const std::string header = write_lines(dir + "/header.jsonl", lines);
  expect_contains(trace_error(header), {header + ":1: expected a trace header"});
  std::ofstream(dir + "/empty.jsonl").flush();
  expect_contains(trace_error(dir + "/empty.jsonl"), {dir + "/empty.jsonl", "empty"});
  expect_contains(trace_error(dir), {dir, "directory"});
  expect_contains(trace_error(dir + "/missing.jsonl"), {dir + "/missing.jsonl", "cannot open"});
}

// ------------------------------------------------------- traces the trainer writes

TrainConfig record_config(const std::string& variant, const std::string& trace) {
  TrainConfig c;
  c.model = "mlp";
  c.dataset = "gaussian";
  c.batch = 16;
  c.lr = 0.05;
  c.workers = 3;
  c.set_variant(variant);
  c.k = 2;
  c.clock = ClockKind::Virtual;
  c.straggler = "exp:mean=1";
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  c.max_updates = 15;
  c.trace = trace;
  return c;
}

// The lines of a trace the trainer wrote, checked to end with its end record
// (with the final checksum), so these tests read what a real run produces.
std::vector<json> with_footer(const std::string& path) {
  std::vector<json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) lines.push_back(json::parse(line));
  EXPECT_TRUE(!lines.empty() && lines.back().contains("end") && lines.back().contains("checksum")) << path;
  return lines;
}

TEST(TraceReplay, EveryVariantsTraceIsAcceptedAndAWholeOneReplaysBitForBit) {
  const std::string dir = fresh_dir("bad_input_record");
  for (const std::string variant : {"async", "k-async", "k-batch-async", "sync", "k-sync", "k-batch-sync"}) {
    for (const std::string rule : {"const", "staleness"}) {
      if (rule != "const" && variant.find("sync") != std::string::npos && variant.find("async") == std::string::npos)
        continue;  // synchronous variants have no staleness to scale by
      TrainConfig c = record_config(variant, dir + "/" + variant + "-" + rule + ".jsonl");
      c.lr_rule = parse_enum<LrKind>(rule, "--lr-rule");
      const RunSummary a = Trainer(c, test::small_data()).run();
      const std::string path = write_lines(c.trace, with_footer(c.trace));
      const Trace t = read_trace(path);
      EXPECT_EQ(t.entries.back().version, a.updates) << variant << " " << rule;
      if (variant != "k-async" || rule != "staleness") continue;
      TrainConfig r;
      r.replay = path;
      r.progress = Progress::None;
      r.devices = Devices::Cpu;
      const RunSummary b = Trainer(r, test::small_data()).run();
      EXPECT_EQ(a.checksum, b.checksum);
    }
  }
}

// A residual network with batch norm and dropout, augmented, under k-async
// with a step schedule: replay recomputes every gradient with its batch's
// statistics, masks and crops, and folds the buffers as the run did.
TEST(TraceReplay, AResidualRunWithBatchNormReplaysBitForBit) {
  const std::string dir = fresh_dir("bad_input_record_residual");
  auto images = std::make_shared<DataSplit>(*test::small_data());
  for (Dataset* d : {&images->train, &images->test}) d->c = 1, d->h = 4, d->w = 4;
  for (const std::string model : {"conv3x3-4,bn,relu,res8-s2,drop20,gap,fc", "resnet20"}) {
    TrainConfig c = record_config("k-async", dir + "/" + model + ".jsonl");
    c.dataset = "images";
    c.model = model;
    c.augment = true;
    c.lr_schedule = LrSchedule::Step;
    c.lr_milestones = {0.5};
    if (model == "resnet20") c.max_updates = 40, c.batch = 4;
    const RunSummary a = Trainer(c, images).run();
    const std::string path = write_lines(c.trace, with_footer(c.trace));
    TrainConfig r;
    r.replay = path;
    r.progress = Progress::None;
    r.devices = Devices::Cpu;
    const RunSummary b = Trainer(r, images).run();
    EXPECT_EQ(a.checksum, b.checksum) << model;
  }
}

// The trainer binary's view: a damaged trace ends with exit code 2 and the
// reason on stderr, before any update is applied.
TEST(TraceReplay, DamagedTracesExitWithCodeTwo) {
  const std::string dir = fresh_dir("bad_input_exit2");
  TrainConfig c = record_config("k-async", dir + "/rec.jsonl");
  Trainer(c, test::small_data()).run();
  const auto whole = with_footer(c.trace);
  struct Case {
    const char* file;
    std::vector<json> lines;
    const char* mentions;
  };
  std::vector<Case> cases;
  auto cut = whole;
  cut.resize(10);
  cases.push_back({"cut.jsonl", cut, "truncated: no end record"});
  auto weight = whole;
  weight[3]["weight"] = 1e30;
  cases.push_back({"weight.jsonl", weight, ":4: expected \"weight\""});
  auto workers = whole;
  workers[0]["workers"] = 0;
  cases.push_back({"workers.jsonl", workers, ":1: expected \"workers\""});
  auto batch = whole;
  batch[5]["batch"] = -3;
  cases.push_back({"batch.jsonl", batch, ":6: expected \"batch\""});
  for (auto& k : cases) {
    const std::string path = write_lines(dir + "/" + k.file, k.lines);
    std::vector<std::string> args = {"trainer", "--progress", "none", "--devices", "cpu", "--replay", path};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    testing::internal::CaptureStderr();
    testing::internal::CaptureStdout();
    const int rc = trainer_main(int(argv.size()), argv.data());
    const std::string out = testing::internal::GetCapturedStdout();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_EQ(rc, 2) << k.file << "\n" << out << err;
    expect_contains(err, {path, k.mentions});
  }
}

// ------------------------------------------------------------- checkpoints

Checkpoint checkpoint_of(int64_t version) {
  Checkpoint c;
  c.header = json{{"version", version}, {"config", {{"model", "mlp"}}}};
  const std::vector<float> p(64, float(version));
  c.put_floats("params", p.data(), p.size());
  return c;
}

std::string at(const std::string& dir, int64_t v) { return dir + "/" + checkpoint_name(v); }

TEST(CheckpointDir, StaleTemporariesOfAKilledWriteAreRemovedAndNothingElse) {
  const std::string dir = fresh_dir("bad_input_tmp");
  save_checkpoint(dir, 10, checkpoint_of(10), 3, "--checkpoint-dir");
  // What write_file_atomic leaves when the writer dies between create and
  // rename: the rename fails here (a directory is in the way), as a kill
  // would stop it.
  // A write that fails removes its own temporary (here the rename fails: a
  // directory is in the way).
  fs::create_directories(at(dir, 20) + "/in-the-way");
  EXPECT_THROW(write_file_atomic(at(dir, 20), "partial"), OutputError);
  EXPECT_EQ(names(dir), (std::vector<std::string>{checkpoint_name(10), checkpoint_name(20)}));
  // What a writer killed between create and rename leaves: FILE.tmp.XXXXXX
  // (and FILE.tmp from older versions).
  std::ofstream(at(dir, 30) + ".tmp.a1B2c3") << "partial";
  std::ofstream(at(dir, 35) + ".tmp") << "partial";
  std::ofstream(dir + "/ckpt-7.bin.tmp.zzzzzz") << "partial";
  // Not ours: left alone.
  for (const char* other : {"notes.tmp", "ckpt-abc.bin.tmp.a1B2c3", "ckpt-.bin.tmp", "metrics.jsonl.tmp.a1B2c3",
                            "ckpt-000000000040.bin.tmp.keep", "ckpt-000000000045.bin.tmp.1234567"})
    std::ofstream(dir + "/" + other) << "x";
  fs::create_directories(at(dir, 50) + ".tmp.dir123");  // a directory with the pattern's name
  EXPECT_EQ(remove_stale_temporaries(dir, "--checkpoint-dir"), 3);
  EXPECT_EQ(names(dir), (std::vector<std::string>{"ckpt-.bin.tmp", checkpoint_name(10), checkpoint_name(20),
                                                  "ckpt-000000000040.bin.tmp.keep",
                                                  "ckpt-000000000045.bin.tmp.1234567", checkpoint_name(50) + ".tmp.dir123",
                                                  "ckpt-abc.bin.tmp.a1B2c3", "metrics.jsonl.tmp.a1B2c3", "notes.tmp"}));
  EXPECT_EQ(remove_stale_temporaries(dir, "--checkpoint-dir"), 0);
  EXPECT_EQ(remove_stale_temporaries(dir + "/no-such-dir", "--checkpoint-dir"), 0);
  EXPECT_NO_THROW(load_checkpoint(at(dir, 10)));
}

TEST(CheckpointDir, PruningCountsOnlyValidCheckpointsAndNeverDeletesOthers) {
  const std::string dir = fresh_dir("bad_input_prune");
  save_checkpoint(dir, 10, checkpoint_of(10), 2, "--checkpoint-dir");
  save_checkpoint(dir, 20, checkpoint_of(20), 2, "--checkpoint-dir");
  // Foreign and damaged files with checkpoint names, all "newer" by name.
  std::ofstream(at(dir, 99)) << "hello";                              // not a checkpoint
  fs::copy_file(at(dir, 10), at(dir, 90));                            // a valid checkpoint copied to a higher number
  std::ofstream(dir + "/ckpt-95.bin") << read_text(at(dir, 20));      // version 20 under a non-canonical name
  std::string cut = read_text(at(dir, 20));
  std::ofstream(at(dir, 80)) << cut.substr(0, 30);                    // cut inside the header
  std::ofstream(dir + "/ckpt-latest.bin") << "x";
  save_checkpoint(dir, 30, checkpoint_of(30), 2, "--checkpoint-dir");
  EXPECT_FALSE(fs::exists(at(dir, 10))) << "the oldest valid checkpoint is rotated out";
  for (const std::string& kept : {at(dir, 20), at(dir, 30), at(dir, 80), at(dir, 90), at(dir, 99),
                                  dir + "/ckpt-95.bin", dir + "/ckpt-latest.bin"})
    EXPECT_TRUE(fs::exists(kept)) << kept;
  EXPECT_EQ(list_checkpoints(dir), (std::vector<std::string>{at(dir, 30), at(dir, 20)}));
  const auto valid = list_valid_checkpoints(dir);
  ASSERT_EQ(valid.size(), 2u);
  EXPECT_EQ(valid[0].first, 30);
  EXPECT_EQ(valid[1].first, 20);
  const CheckpointListing l = scan_checkpoints(dir);
  ASSERT_EQ(l.ignored.size(), 5u);
  std::string all;
  for (const auto& s : l.ignored) all += s + "\n";
  expect_contains(all, {at(dir, 90) + ": holds version 10, which would be named " + checkpoint_name(10),
                        dir + "/ckpt-95.bin: holds version 20", at(dir, 99) + ": not a checkpoint",
                        at(dir, 80) + ": ", dir + "/ckpt-latest.bin: not a checkpoint"});
}

TEST(CheckpointDir, TheCheckpointJustWrittenIsKeptWhateverNewerOnesLieAround) {
  const std::string dir = fresh_dir("bad_input_keep_new");
  save_checkpoint(dir, 100, checkpoint_of(100), 1, "--checkpoint-dir");
  // A damaged body under a good header (resume skipped it and went back).
  fs::resize_file(at(dir, 100), fs::file_size(at(dir, 100)) - 10);
  EXPECT_NO_THROW(read_checkpoint_header(at(dir, 100)));
  EXPECT_THROW(load_checkpoint(at(dir, 100)), CheckpointError);
  save_checkpoint(dir, 40, checkpoint_of(40), 1, "--checkpoint-dir");
  EXPECT_EQ(list_checkpoints(dir), std::vector<std::string>{at(dir, 40)});
  EXPECT_EQ(load_checkpoint(at(dir, 40)).header["version"], 40);
}

TEST(CheckpointDir, SavingRequiresTheHeaderToHoldTheVersion) {
  const std::string dir = fresh_dir("bad_input_mismatch");
  EXPECT_THROW(save_checkpoint(dir, 11, checkpoint_of(10), 2, "--checkpoint-dir"), Error);
  Checkpoint none;
  EXPECT_THROW(save_checkpoint(dir, 11, none, 2, "--checkpoint-dir"), Error);
  EXPECT_TRUE(list_checkpoints(dir).empty());
}

TEST(CheckpointDir, HeaderReadsCheckMagicFormatAndLengths) {
  const std::string dir = fresh_dir("bad_input_header");
  save_checkpoint(dir, 5, checkpoint_of(5), 1, "--checkpoint-dir");
  EXPECT_EQ(read_checkpoint_header(at(dir, 5))["version"], 5);
  std::string bytes = read_text(at(dir, 5));
  auto bad = [&](const std::string& name, const std::string& content, const std::string& mentions) {
    std::ofstream(dir + "/" + name, std::ios::binary) << content;
    try {
      read_checkpoint_header(dir + "/" + name);
      ADD_FAILURE() << name << " read";
    } catch (const CheckpointError& e) {
      expect_contains(e.what(), {dir + "/" + name, mentions});
    }
  };
  bad("short", bytes.substr(0, 27), "expected at least 28 bytes, found 27");
  std::string m = bytes;
  m[0] = 'X';
  bad("magic", m, "magic");
  std::string f = bytes;
  f[8] = 9;
  bad("format", f, "checkpoint format 9");
  std::string h = bytes;
  h[12 + 5] = 1;  // header length of about 2^40
  bad("length", h, "truncated checkpoint");
  std::string j = bytes;
  j[20] = '!';
  bad("json", j, "damaged checkpoint header");
}

// Resume takes the newest checkpoint by the version inside, not the highest
// file name: a copy of an old checkpoint under a higher number is left alone.
TEST(CheckpointDir, ResumeIgnoresACopiedCheckpointWithAHigherName) {
  const std::string dir = fresh_dir("bad_input_resume_copy");
  TrainConfig c = record_config("k-async", "");
  c.max_updates = 60;
  c.checkpoint_dir = dir;
  c.checkpoint_every = "20";
  Trainer(c, test::small_data()).run();
  ASSERT_EQ(list_checkpoints(dir).size(), 3u);
  fs::copy_file(at(dir, 20), at(dir, 999));
  TrainConfig r = c;
  r.max_updates = 80;
  r.resume = true;
  r.progress = Progress::Plain;  // prints "resuming from"
  testing::internal::CaptureStdout();
  const RunSummary s = Trainer(r, test::small_data()).run();
  const std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(s.updates, 80);
  EXPECT_NE(out.find("resuming from " + at(dir, 60)), std::string::npos) << out;
  EXPECT_TRUE(fs::exists(at(dir, 999)));
  EXPECT_EQ(list_checkpoints(dir).front(), at(dir, 80));
}

}  // namespace
}  // namespace adasync
