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
//       bn                   batch norm over the channels (BatchNorm2d)
//       gap                  global average pooling to [C, 1, 1]
//       dropP                dropout with probability P percent (drop50)
//       resC[-sS][-proj]     a ResNet basic block with C output channels,
//                            stride S on its first 3x3 convolution; when the
//                            shape changes the shortcut is option A (zero
//                            padded channels) or, with -proj, a 1x1
//                            convolution and batch norm (option B)
//   - a path ending in .json: {"layers": [...]} whose items are tokens or
//     objects {"type": "conv", "out": 32, "kernel": 5, "pad": 2, "stride": 1},
//     {"type": "pool", "size": 2, "stride": 2}, {"type": "relu"},
//     {"type": "fc", "out": 1024} ("out" omitted: the classes),
//     {"type": "bn"}, {"type": "gap"}, {"type": "dropout", "p": 0.5},
//     {"type": "res", "out": 32, "stride": 2, "projection": false}.
// A convolution directly followed by bn has no bias (the norm's shift
// replaces it), as PyTorch's ResNets build it.
// "relu" directly followed by a pool runs as one fused layer computing
// maxpool(relu(x)) (equal to relu(maxpool(x))), as the zoo always has: the
// zoo's layer list, its parameter layout and its per-layer RNG streams stay
// what they were, so every recorded run reproduces.
//
// Parameters are named as PyTorch names the same module: the i-th conv is
// "conv<i>" (weight [out, in, k, k], then bias [out]), the i-th fc "fc<i>"
// (weight [out, in], bias [out]), the i-th bn "bn<i>"; residual blocks are
// "layer<s>.<j>" (stage s from 1, block j from 0 within it; a stage starts at
// the first block and at each block that changes stride or channels), as
// torchvision's and the CIFAR ResNets' modules are; layers without
// parameters take no number. Buffers (running statistics) follow every
// parameter in the flat buffer, in layer order.
// Every malformed description is one UsageError naming --model, the layer,
// what was expected and what was found.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace adasync {

struct LayerSpec {
  enum class Kind { Conv, Pool, ReluPool, Relu, Fc, Bn, Gap, Dropout, Res };
  Kind kind = Kind::Relu;
  int out = 0;      // conv, res: output channels; fc: outputs (0: the classes)
  int kernel = 0;   // conv: kernel size; pools: window size
  int pad = 0;      // conv only
  int stride = 1;
  int percent = 0;          // dropout probability in percent
  bool projection = false;  // res: option-B shortcut
  bool bias = true;         // conv: false when a bn follows
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
