// What each element of a model's flat buffer is, for whoever applies updates.
//
// The flat buffer holds every trainable parameter first, then every buffer
// (batch-norm running statistics, ALGORITHMS.md section 8). A pushed
// "gradient" has the same layout: gradients over the parameters, and over
// the buffers the statistics the worker's training forward measured. The
// optimizer steps the parameters and folds the statistics into the buffers:
// running = (1 - momentum) * running + momentum * mean of the pushed
// statistics, and a counter goes up by one per update.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace adasync {

enum class TensorKind { Param, RunningStat, Count };

// One named tensor of the flat buffer: values [offset, offset + count).
struct ParamTensor {
  std::string name;             // "conv1.weight", "layer1.0.bn1.running_mean", ...
  std::vector<int64_t> shape;   // PyTorch's: [out, in, kh, kw], [out, in], [out], [] for a scalar
  size_t offset = 0, count = 0;
  TensorKind kind = TensorKind::Param;
  bool decay = true;            // false: a bias or a batch-norm affine term
};

struct ParamLayout {
  struct Range {
    size_t offset = 0, count = 0;
    TensorKind kind = TensorKind::Param;
  };
  size_t trainable = 0;         // [0, trainable) are parameters
  size_t total = 0;             // [trainable, total) are buffers
  std::vector<Range> no_decay;  // parameters that --no-decay-bn leaves undecayed
  std::vector<Range> buffers;   // running statistics and counters, in order
  double bn_momentum = 0.1;     // PyTorch's default
  bool has_buffers() const { return !buffers.empty(); }
  // Every element a parameter: a model without batch norm.
  static ParamLayout plain(size_t n) {
    ParamLayout l;
    l.trainable = l.total = n;
    return l;
  }
};

ParamLayout layout_of(const std::vector<ParamTensor>& tensors);

}  // namespace adasync
