// libFuzzer target: the checkpoint reader on arbitrary bytes, and a resumed
// run's first reads of a decoded checkpoint.
#include "runtime/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    adasync::Checkpoint c = adasync::decode_checkpoint(data, size, "fuzz");
    (void)c.header.dump();
    for (const auto& [name, bytes] : c.blobs) {
      if (bytes.size() % 4 == 0) (void)c.floats(name);
      if (bytes.size() % 8 == 0) (void)c.u64s(name);
    }
  } catch (const adasync::CheckpointError&) {
  }
  return 0;
}
