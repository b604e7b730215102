// The small problem of the end-to-end runtime tests: Gaussian classes (16
// features, 4 classes), normalised, built once per test binary.
#pragma once

#include <memory>

#include "datasets/dataset.h"

namespace adasync::test {

inline std::shared_ptr<const DataSplit> small_data() {
  static const auto d = [] {
    auto s = std::make_shared<DataSplit>(make_gaussian_classes(4000, 1000, 16, 4, 1.5, 3));
    normalize(*s);
    return std::shared_ptr<const DataSplit>(s);
  }();
  return d;
}

}  // namespace adasync::test
