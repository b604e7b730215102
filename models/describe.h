// Model descriptions: a network as a list of the existing layers, from text.
//
// The --model value is one of
//   - a zoo name (cnn, lenet5, mlp, linear): shorthand for its description;
//   - a description, comma-separated layer tokens:
//       convKxK-C[-pP][-sS]  convolution with bias, C output channels, a KxK
//                            kernel, padding P (default K/2: "same" for odd K),
//                            stride S (default 1)
//       poolN[-sS]           max pooling NxN, stride S (default N)
//       relu
//       fcN                  fully connected to N outputs (input flattened)
//       fc                   fully connected to the dataset's classes
//   - a path ending in .json: {"layers": [...]} whose items are tokens or
//     objects {"type": "conv", "out": 32, "kernel": 5, "pad": 2, "stride": 1},
//     {"type": "pool", "size": 2, "stride": 2}, {"type": "relu"},
//     {"type": "fc", "out": 1024} ("out" omitted: the classes).
// "relu" directly followed by a pool runs as one fused layer computing
// maxpool(relu(x)) (equal to relu(maxpool(x))), as the zoo always has: the
// zoo's layer list, its parameter layout and its per-layer RNG streams stay
// what they were, so every recorded run reproduces.
//
// Parameters are named as PyTorch names the same module: the i-th conv is
// "conv<i>" (weight [out, in, k, k], then bias [out]), the i-th fc "fc<i>"
// (weight [out, in], bias [out]); layers without parameters take no number.
// Every malformed description is one UsageError naming --model, the layer,
// what was expected and what was found.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace adasync {

struct LayerSpec {
  enum class Kind { Conv, Pool, ReluPool, Relu, Fc };
  Kind kind = Kind::Relu;
  int out = 0;      // conv: output channels; fc: outputs (0: the classes)
  int kernel = 0;   // conv: kernel size; pools: window size
  int pad = 0;      // conv only
  int stride = 1;
  int position = 0;  // 1-based place of its (first) token in the description, for messages
  // The canonical token(s): "conv5x5-32", "relu,pool2", "fc".
  std::string text() const;
};

struct ModelSpec {
  std::string source;              // the --model value as given
  std::vector<LayerSpec> layers;   // relu+pool already fused
  // Canonical comma-separated description (fused layers written as relu,poolN).
  std::string description() const;
};

// Parses a zoo name, a description or a .json file (UsageError on any fault).
ModelSpec parse_model(const std::string& arg);
// The zoo: (name, description), in the order --help lists them.
const std::vector<std::pair<std::string, std::string>>& zoo_descriptions();

}  // namespace adasync
