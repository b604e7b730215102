#include "runtime/run/trace.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "kernels/context.h"
#include "runtime/input_file.h"
#include "runtime/output.h"

namespace adasync {

namespace {

// Batch indices are JSON integers; a reader in another language (or a double)
// holds integers exactly only below 2^53.
constexpr uint64_t kMaxBatch = uint64_t(1) << 53;
// The trainer's --workers range (validate() in trainer.cc).
constexpr int64_t kMaxWorkers = 1024;

std::string clipped(const std::string& s) { return s.size() > 60 ? s.substr(0, 57) + "..." : s; }

// A value for a message. Arrays and objects are named, not dumped: dump()
// recurses, and a hand-made line can nest thousands deep.
std::string shown(const nlohmann::json& v) {
  if (v.is_array()) return "an array";
  if (v.is_object()) return "an object";
  return clipped(v.dump());
}

std::string quoted(const std::string& line) { return "'" + clipped(line) + "'"; }

// The checks of one line of one file: every failure names both.
class LineCheck {
 public:
  LineCheck(const std::string& name, int line, const std::string& text) : name_(name), text_(text), line_(line) {}
  // The line as written, for messages about the whole line.
  std::string text() const { return quoted(text_); }

  [[noreturn]] void fail(const std::string& expected, const std::string& found) const {
    throw UsageError("--replay: " + name_ + ":" + std::to_string(line_) + ": expected " + expected + ", found " +
                     found);
  }

  const nlohmann::json& field(const nlohmann::json& j, const char* key) const {
    auto it = j.find(key);
    if (it == j.end()) fail(std::string("a field \"") + key + "\"", "none in " + text());
    return *it;
  }

  // An integer in [lo, hi]; `range` says so in words.
  int64_t integer(const nlohmann::json& j, const char* key, int64_t lo, int64_t hi, const std::string& range) const {
    const nlohmann::json& v = field(j, key);
    const std::string want = std::string("\"") + key + "\" to be an integer " + range;
    if (!v.is_number_integer()) fail(want, shown(v));
    if (v.is_number_unsigned()) {
      const uint64_t u = v.get<uint64_t>();
      if (u > uint64_t(hi) || (lo > 0 && u < uint64_t(lo))) fail(want, shown(v));
      return int64_t(u);
    }
    const int64_t s = v.get<int64_t>();
    if (s < lo || s > hi) fail(want, shown(v));
    return s;
  }

  // A finite number in [lo, hi].
  double number(const nlohmann::json& j, const char* key, double lo, double hi, const std::string& range) const {
    const nlohmann::json& v = field(j, key);
    const double d = v.is_number() ? v.get<double>() : NAN;
    if (!(d >= lo && d <= hi))  // false for NaN
      fail(std::string("\"") + key + "\" to be a finite number " + range, shown(v));
    return d;
  }

 private:
  const std::string& name_;
  const std::string& text_;
  int line_;
};

struct Header {
  int format = kTraceFormat;
  int64_t workers = 0;
  float lr = 0;
};

Header check_header(const nlohmann::json& h, const LineCheck& at) {
  if (!h.contains("trace")) at.fail("a trace header (an object with \"trace\") on the first line", at.text());
  const nlohmann::json& f = h["trace"];
  if (f == 1)
    at.fail("trace format " + std::to_string(kTraceFormat) +
                " (format 1, from an older adasync, has no end record: a cut-off trace cannot be told from a "
                "whole one; record it again)",
            "format 1");
  if (f != kTraceFormat && f != 2)
    at.fail("trace format " + std::to_string(kTraceFormat) + " (or 2)", "\"trace\": " + shown(f));
  Header out;
  out.format = f.get<int>();
  out.workers = at.integer(h, "workers", 1, kMaxWorkers, "in [1, " + std::to_string(kMaxWorkers) + "]");
  at.integer(h, "batch", 1, INT32_MAX, "of at least 1");
  out.lr = float(at.number(h, "lr", 0, HUGE_VAL, "above 0"));
  if (!(out.lr > 0) || !std::isfinite(out.lr)) at.fail("\"lr\" to be a positive finite float", shown(h["lr"]));
  return out;
}

// One applied gradient. The bounds are what the trainer can write:
//   - time: finite and >= 0 (seconds since the start, either clock);
//   - worker in [0, workers) of the header;
//   - version: the first update produces 1, and each line's version is the
//     previous one or the next (updates are consecutive; the gradients of one
//     update are adjacent);
//   - tau in [0, version - 1] (a gradient is computed at a published version
//     before the update that applies it) and staleness == version - 1 - tau;
//   - batch: a non-negative JSON integer below 2^53 (the reader cannot know
//     the sampler's range: the replay does that check);
//   - weight in [0, 1]: every learning-rate rule writes c_l = eta_l / (lr K)
//     with 0 <= eta_l <= lr, so c_l <= 1/K; a larger weight is an edit, and
//     one of 1e30 turns the parameters into NaN;
//   - lr in (0, header lr], the same for every gradient of one update: the
//     rules scale the base rate down through the weights, never up.
TraceEntry check_entry(const nlohmann::json& j, const Header& h, int64_t prev_version, float prev_lr,
                       const LineCheck& at) {
  TraceEntry e;
  e.time = at.number(j, "time", 0, HUGE_VAL, "of at least 0");
  e.worker = int(at.integer(j, "worker", 0, h.workers - 1,
                            "in [0, " + std::to_string(h.workers) + ") (the header's \"workers\")"));
  const int64_t first = prev_version == 0 ? 1 : prev_version;
  e.version = at.integer(j, "version", first, prev_version + 1,
                         prev_version == 0 ? "equal to 1 (the first update produces version 1)"
                                           : "equal to " + std::to_string(prev_version) + " (the same update) or " +
                                                 std::to_string(prev_version + 1) + " (the next)");
  e.tau = at.integer(j, "tau", 0, e.version - 1,
                     "in [0, " + std::to_string(e.version - 1) + "] (a version published before this update)");
  e.staleness = at.integer(j, "staleness", e.version - 1 - e.tau, e.version - 1 - e.tau,
                           "equal to version - 1 - tau = " + std::to_string(e.version - 1 - e.tau));
  e.batch = uint64_t(at.integer(j, "batch", 0, int64_t(kMaxBatch - 1), "in [0, 2^53)"));
  e.weight = float(at.number(j, "weight", 0, 1, "in [0, 1]"));
  char lr_range[96];
  std::snprintf(lr_range, sizeof lr_range, "in (0, %.9g] (the header's \"lr\")", double(h.lr));
  const double lr = at.number(j, "lr", 0, HUGE_VAL, lr_range);
  e.lr = float(lr);
  if (!(e.lr > 0 && e.lr <= h.lr)) at.fail(std::string("\"lr\" to be a finite number ") + lr_range, shown(j["lr"]));
  if (e.version == prev_version && e.lr != prev_lr) {
    char same[64];
    std::snprintf(same, sizeof same, "%.9g", double(prev_lr));
    at.fail(std::string("\"lr\" equal to ") + same + " (the rate of the other gradients of version " +
                std::to_string(e.version) + ")",
            shown(j["lr"]));
  }
  return e;
}

}  // namespace

nlohmann::json to_json(const TraceEntry& e) {
  return nlohmann::json{{"time", e.time},   {"worker", e.worker},       {"tau", e.tau},
                        {"version", e.version}, {"staleness", e.staleness}, {"batch", e.batch},
                        {"weight", double(e.weight)}, {"lr", double(e.lr)}};
}

nlohmann::json trace_footer(int64_t updates, int64_t entries, const std::string& checksum) {
  nlohmann::json j{{"end", true}, {"updates", updates}, {"entries", entries}};
  if (!checksum.empty()) j["checksum"] = checksum;
  return j;
}

Trace parse_trace(std::istream& in, const std::string& name) {
  Trace t;
  Header h;
  std::string line;
  int lineno = 0, last_entry_line = 0;
  bool ended = false;
  int64_t version = 0;
  float lr = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const LineCheck at(name, lineno, line);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      at.fail("a JSON object", at.text());
    }
    if (!j.is_object()) at.fail("a JSON object", at.text());
    if (ended) at.fail("nothing after the end record", at.text());
    if (t.header.is_null()) {
      h = check_header(j, at);
      t.header = std::move(j);
      continue;
    }
    if (j.contains("end")) {
      if (j["end"] != true) at.fail("\"end\": true in the end record", at.text());
      const int64_t updates = at.integer(j, "updates", 0, INT64_MAX, "of at least 0");
      const int64_t entries = at.integer(j, "entries", 0, INT64_MAX, "of at least 0");
      if (updates != version || entries != int64_t(t.entries.size()))
        at.fail("an end record of " + std::to_string(updates) + " updates and " + std::to_string(entries) +
                    " entries to match the trace",
                std::to_string(version) + " updates in " + std::to_string(t.entries.size()) + " entries");
      if (h.format >= 3) {
        const auto c = j.find("checksum");
        if (c == j.end() || !c->is_string() || c->get<std::string>().size() != 16 ||
            c->get<std::string>().find_first_not_of("0123456789abcdef") != std::string::npos)
          at.fail("\"checksum\": 16 hexadecimal digits (the final parameters') in the end record",
                  c == j.end() ? std::string("none") : shown(*c));
        t.checksum = c->get<std::string>();
      }
      ended = true;
      continue;
    }
    const TraceEntry e = check_entry(j, h, version, lr, at);
    version = e.version;
    lr = e.lr;
    last_entry_line = lineno;
    t.entries.push_back(e);
  }
  if (in.bad()) throw UsageError("--replay: " + name + ": read error after line " + std::to_string(lineno));
  if (t.header.is_null()) throw UsageError("--replay: trace file '" + name + "' is empty");
  if (!ended)
    throw UsageError("--replay: " + name + ": truncated: no end record (expected a last line {\"end\": true, ...}, " +
                     "found " + std::to_string(t.entries.size()) + " entries, " + std::to_string(version) +
                     " updates, the last on line " + std::to_string(last_entry_line ? last_entry_line : 1) + ")");
  return t;
}

Trace read_trace(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw UsageError("--replay: '" + path + "' is a directory, expected a trace file");
  uint64_t size = 0;
  ::close(open_regular_input(path, "--replay " + path, &size));  // not a FIFO, not a device
  std::ifstream in(path);
  if (!in) throw UsageError("--replay: cannot open trace file '" + path + "'");
  return parse_trace(in, path);
}

uint64_t checksum(const float* x, size_t n) {
  const auto* b = reinterpret_cast<const unsigned char*>(x);
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n * sizeof(float); ++i) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

std::string checksum_hex(uint64_t h) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace adasync
