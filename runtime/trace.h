// Trace of applied gradients, and its replay.
//
// `--trace FILE` writes JSON Lines: a header object with the settings that
// determine the computation (model, data, seed, batch, workers, sharding,
// optimizer), then one object per applied gradient: time, worker, tau,
// version (the version the update produced), staleness, batch, weight and
// the update's learning rate. Replaying applies the same gradients in the same
// order with the same weights and rates: each is recomputed from its worker's
// sampler batch at the snapshot of version tau, so the final parameters are
// bit-identical on the same backend, whatever clock or timing produced the
// trace.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace adasync {

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
};

// Reads a trace; throws UsageError naming the file and line on bad input.
Trace read_trace(const std::string& path);
nlohmann::json to_json(const TraceEntry& e);

// FNV-1a 64-bit hash of a float array's bytes: the run summary prints it so
// two runs (or a run and its replay) can be compared bit for bit.
uint64_t checksum(const float* x, size_t n);
std::string checksum_hex(uint64_t h);

}  // namespace adasync
