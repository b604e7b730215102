// libFuzzer target: the trace reader (--replay) on arbitrary bytes. Any input
// must either parse into a trace that keeps the reader's promises or raise
// UsageError; nothing else (crash, leak, undefined behaviour, another
// exception) is allowed.
#include <sstream>
#include <string>

#include "kernels/context.h"
#include "runtime/run/trace.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::istringstream in(std::string(reinterpret_cast<const char*>(data), size));
  try {
    const adasync::Trace t = adasync::parse_trace(in, "fuzz");
    // What the replay relies on: versions consecutive from 1, each gradient
    // read at a version already made, a worker the header has.
    const int64_t workers = t.header.at("workers").get<int64_t>();
    int64_t version = 0;
    for (const auto& e : t.entries) {
      if (e.version != (version == 0 ? 1 : version) && e.version != version + 1) __builtin_trap();
      version = e.version;
      if (e.tau < 0 || e.tau >= e.version || e.staleness != e.version - 1 - e.tau) __builtin_trap();
      if (e.worker < 0 || e.worker >= workers) __builtin_trap();
      if (!(e.weight >= 0 && e.weight <= 1 && e.lr > 0) || e.batch >= (uint64_t(1) << 53)) __builtin_trap();
    }
    // Format 3's end record holds the final checksum: 16 hexadecimal digits.
    if (t.header.at("trace") == 3 && t.checksum.size() != 16) __builtin_trap();
  } catch (const adasync::UsageError&) {
  }
  return 0;
}
