#include "runtime/trace.h"

#include <cstdio>
#include <fstream>

#include "kernels/context.h"

namespace adasync {

nlohmann::json to_json(const TraceEntry& e) {
  return nlohmann::json{{"time", e.time},   {"worker", e.worker},       {"tau", e.tau},
                        {"version", e.version}, {"staleness", e.staleness}, {"batch", e.batch},
                        {"weight", double(e.weight)}, {"lr", double(e.lr)}};
}

Trace read_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("--replay: cannot open trace file '" + path + "'");
  Trace t;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      throw UsageError("--replay: " + path + ":" + std::to_string(lineno) + ": expected a JSON object, found '" +
                       line.substr(0, 60) + "'");
    }
    if (lineno == 1) {
      if (!j.contains("trace"))
        throw UsageError("--replay: " + path + ": expected a trace header (an object with \"trace\") on line 1");
      t.header = j;
      continue;
    }
    try {
      TraceEntry e;
      e.time = j.at("time").get<double>();
      e.worker = j.at("worker").get<int>();
      e.tau = j.at("tau").get<int64_t>();
      e.version = j.at("version").get<int64_t>();
      e.staleness = j.at("staleness").get<int64_t>();
      e.batch = j.at("batch").get<uint64_t>();
      e.weight = float(j.at("weight").get<double>());
      e.lr = float(j.at("lr").get<double>());
      t.entries.push_back(e);
    } catch (const std::exception& ex) {
      throw UsageError("--replay: " + path + ":" + std::to_string(lineno) + ": " + ex.what());
    }
  }
  if (t.header.is_null()) throw UsageError("--replay: trace file '" + path + "' is empty");
  return t;
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
