// Inputs (datasets' companions, traces, checkpoints, model files) are opened
// one way: below every layer, since the straggler traces read by the config
// and the run's own files alike go through it.
#pragma once

#include <cstdint>
#include <string>

namespace adasync {

// Opens an input for reading: a regular file (symlinks followed), never
// blocking on a FIFO. Returns the descriptor and sets *size; UsageError
// naming `what` otherwise.
int open_regular_input(const std::string& path, const std::string& what, uint64_t* size);

// "a directory", "a FIFO", ... for an error message.
const char* kind_of(unsigned mode);

}  // namespace adasync
