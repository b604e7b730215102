// libFuzzer target: the IDX reader (raw and gzip) on arbitrary bytes. Any
// input must either load or raise DataError; nothing else (crash, leak,
// undefined behaviour, another exception) is allowed.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "datasets/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/tmp/adasync-fuzz-idx-" + std::to_string(getpid());
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  for (int dims : {1, 3}) {
    try {
      adasync::IdxArray a = adasync::read_idx(path, dims);
      size_t want = 1;
      for (uint32_t d : a.dims) want *= d;
      if (a.data.size() != want) __builtin_trap();  // a loaded array must be whole
    } catch (const adasync::DataError&) {
    }
  }
  return 0;
}
