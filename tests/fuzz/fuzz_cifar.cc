// libFuzzer target: CIFAR-10 record parsing on arbitrary bytes.
#include "datasets/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    adasync::Dataset d = adasync::parse_cifar10_records(data, size, "fuzz");
    if (d.x.size() != d.size() * 3072) __builtin_trap();
    for (int32_t y : d.y)
      if (y < 0 || y >= 10) __builtin_trap();
  } catch (const adasync::DataError&) {
  }
  return 0;
}
