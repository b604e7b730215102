// Trace of applied gradients, and its replay.
//
// `--trace FILE` writes JSON Lines (format kTraceFormat):
//   line 1     a header object with the settings that determine the
//              computation (model, data, seed, batch, workers, sharding,
//              optimizer) and "trace": kTraceFormat;
//   then       one object per applied gradient: time, worker, tau, version
//              (the version the update produced), staleness, batch, weight
//              and the update's learning rate;
//   last line  the end record trace_footer(updates, entries), so a trace cut
//              off at a line boundary is told apart from a whole one.
// Replaying applies the same gradients in the same order with the same weights
// and rates: each is recomputed from its worker's sampler batch at the snapshot
// of version tau, so the final parameters are bit-identical on the same
// backend, whatever clock or timing produced the trace.
//
// read_trace checks every line before any work is done (see trace.cc for the
// exact rules and bounds); any bad value is a UsageError naming the file, the
// line, what was expected and what was found.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace adasync {

// Format 1 had no end record; format 2 ends with trace_footer's line;
// format 3's end record holds the final parameters' checksum (2 still reads).
constexpr int kTraceFormat = 3;

struct TraceEntry {
  double time = 0;
  int worker = 0;
  int64_t tau = 0;
  int64_t version = 0;  // produced by the update
  int64_t staleness = 0;
  uint64_t batch = 0;
  float weight = 0;
  float lr = 0;
};

struct Trace {
  nlohmann::json header;
  std::vector<TraceEntry> entries;
  std::string checksum;  // the end record's (format 3; empty in format 2)
};

// Reads and validates a trace; throws UsageError naming the file and line on
// bad input, and "truncated: no end record" when the footer is missing.
Trace read_trace(const std::string& path);
// The same on a stream; `name` stands for the file in messages.
Trace parse_trace(std::istream& in, const std::string& name);
nlohmann::json to_json(const TraceEntry& e);
// The last line of a trace: {"end": true, "updates": U, "entries": E}, U the
// number of updates (the last version written), E the number of entry lines.
// Format 3 adds "checksum": the final parameters' checksum_hex, which a
// replay must reproduce.
nlohmann::json trace_footer(int64_t updates, int64_t entries, const std::string& checksum = "");

// FNV-1a 64-bit hash of a float array's bytes: the run summary prints it so
// two runs (or a run and its replay) can be compared bit for bit.
uint64_t checksum(const float* x, size_t n);
std::string checksum_hex(uint64_t h);

}  // namespace adasync
