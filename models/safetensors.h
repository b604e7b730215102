// safetensors: the tensor file format PyTorch and most model hubs read.
//
// Layout: an unsigned 64-bit little-endian header length N, N bytes of JSON
// (an object: per tensor name {"dtype", "shape", "data_offsets": [begin,
// end]} relative to the data section, plus an optional "__metadata__" object
// of strings), then the data section: every tensor's little-endian,
// row-major bytes. The writer emits F32 tensors (I64 for batch-norm counters,
// as PyTorch keeps num_batches_tracked) back to back in the model's order and
// pads the header with spaces to a multiple of 8 bytes.
//
// The reader trusts nothing: the header length must lie inside the file, the
// header must be a JSON object, each entry must have exactly a known dtype, a
// shape of non-negative integers and two offsets whose span is the shape's
// byte count, and the spans, sorted, must tile the data section exactly (no
// gap, no overlap, nothing after). Every fault is one SafetensorsError naming
// the file (`what`), what was expected and what was found.
//
// read_model_params checks the tensors against a model's: the same names,
// F32 (I64 counters), the same shapes, and no tensor the model lacks.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kernels/context.h"
#include "models/model.h"

namespace adasync {

class SafetensorsError : public UsageError {
 public:
  using UsageError::UsageError;
};

struct SafetensorsEntry {
  std::string name, dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets in the data section
};

struct SafetensorsFile {
  std::map<std::string, std::string> metadata;
  std::vector<SafetensorsEntry> tensors;  // in data order
  std::vector<unsigned char> data;        // the data section
  const SafetensorsEntry* find(const std::string& name) const;
};

// The F32 tensors `tensors` of `params` (their offsets and counts), with `metadata`.
std::string encode_safetensors(const std::vector<ParamTensor>& tensors, const float* params,
                               const std::map<std::string, std::string>& metadata);
SafetensorsFile decode_safetensors(const unsigned char* bytes, size_t size, const std::string& what);
// The same from the first `avail` bytes of a file of `size` bytes, which hold
// at least the header (safetensors_header_end of them); with_data false
// leaves `data` empty. Every check but the data's is the same.
SafetensorsFile decode_safetensors_header(const unsigned char* bytes, size_t avail, uint64_t size,
                                          const std::string& what, bool with_data = false);
// 8 + the header length the first bytes give (8 when they give none that fits).
uint64_t safetensors_header_end(const unsigned char* bytes, size_t avail);
SafetensorsFile read_safetensors(const std::string& path);

// Every tensor of `expected` present with its dtype and shape, and no other
// (SafetensorsError naming the first that is not).
void check_model_tensors(const SafetensorsFile& f, const std::vector<ParamTensor>& expected, const std::string& what);
// The flat parameter buffer of a model whose tensors are `expected`.
std::vector<float> read_model_params(const SafetensorsFile& f, const std::vector<ParamTensor>& expected,
                                     const std::string& what);

// "[32, 1, 5, 5]"
std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace adasync
