// What the readers share: a FILE* that closes itself.
#pragma once

#include <cstdio>
#include <memory>

namespace adasync {

struct FileClose {
  void operator()(std::FILE* f) const { std::fclose(f); }
};

}  // namespace adasync
