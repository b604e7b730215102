// libFuzzer target: the safetensors reader on arbitrary bytes, then what
// --init-from does with a file that decodes: check it against a small model.
#include "models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // linear on 1x2x2 inputs, 2 classes: fc1.weight [2, 4], fc1.bias [2] (the seed corpus's model).
  static const auto tensors = adasync::model_param_tensors("linear", adasync::Shape{1, 2, 2}, 2);
  try {
    // --init-from's bounded path: the header alone (as if the file were `size`
    // bytes long), checked against the model before any data is read.
    const uint64_t end = adasync::safetensors_header_end(data, size);
    if (end <= size) {
      const adasync::SafetensorsFile h = adasync::decode_safetensors_header(data, size_t(end), size, "fuzz");
      if (!h.data.empty()) __builtin_trap();
      adasync::check_model_tensors(h, tensors, "fuzz");
    }
  } catch (const adasync::SafetensorsError&) {
  }
  try {
    const adasync::SafetensorsFile f = adasync::decode_safetensors(data, size, "fuzz");
    for (const auto& t : f.tensors) (void)adasync::shape_string(t.shape);
    (void)adasync::read_model_params(f, tensors, "fuzz");
  } catch (const adasync::SafetensorsError&) {
  }
  return 0;
}
