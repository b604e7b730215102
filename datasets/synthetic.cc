// Each set draws its parameters, training samples and test samples from three
// separate Rng streams, so the test set does not depend on train_n (and vice versa).
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/rng.h"

namespace adasync {
namespace {

// Stream tags well away from the small numbers other modules use for workers.
constexpr uint64_t kGaussianStream = 0x6761757373000000ULL;  // "gauss"
constexpr uint64_t kTeacherStream = 0x7465616368000000ULL;   // "teach"
constexpr uint64_t kParams = 1, kTrain = 2, kTest = 3;
constexpr int kTeacherHidden = 32;

void check_args(const char* what, int dim, int classes) {
  if (dim < 1) {
    throw std::invalid_argument(std::string(what) + ": dim must be >= 1, got " + std::to_string(dim));
  }
  if (classes < 1) {
    throw std::invalid_argument(std::string(what) + ": classes must be >= 1, got " + std::to_string(classes));
  }
}

Dataset vector_set(const char* name, size_t n, int dim, int classes) {
  Dataset d;
  d.name = name;
  d.c = 1;
  d.h = 1;
  d.w = dim;
  d.classes = classes;
  d.x.resize(n * size_t(dim));
  d.y.resize(n);
  return d;
}

Dataset gaussian_samples(size_t n, int dim, int classes, const std::vector<double>& centres, Rng rng) {
  Dataset d = vector_set("gaussian", n, dim, classes);
  for (size_t i = 0; i < n; ++i) {
    const int label = int(rng.below(uint64_t(classes)));
    d.y[i] = label;
    const double* mu = &centres[size_t(label) * dim];
    float* x = &d.x[i * dim];
    for (int k = 0; k < dim; ++k) x[k] = float(mu[k] + rng.normal());
  }
  return d;
}

struct Teacher {
  int dim, classes;
  std::vector<double> w1, w2, b2;  // [hidden x dim], [classes x hidden], [classes]

  int label(const float* x) const {
    double h[kTeacherHidden];
    for (int j = 0; j < kTeacherHidden; ++j) {
      double s = 0;
      for (int k = 0; k < dim; ++k) s += w1[size_t(j) * dim + k] * x[k];
      h[j] = s > 0 ? s : 0;
    }
    int best = 0;
    double best_v = 0;
    for (int c = 0; c < classes; ++c) {
      double s = b2[c];
      for (int j = 0; j < kTeacherHidden; ++j) s += w2[size_t(c) * kTeacherHidden + j] * h[j];
      if (c == 0 || s > best_v) {
        best = c;
        best_v = s;
      }
    }
    return best;
  }
};

Dataset teacher_samples(size_t n, const Teacher& t, Rng rng) {
  Dataset d = vector_set("teacher", n, t.dim, t.classes);
  for (size_t i = 0; i < n; ++i) {
    float* x = &d.x[i * t.dim];
    for (int k = 0; k < t.dim; ++k) x[k] = float(rng.normal());
    d.y[i] = t.label(x);
  }
  return d;
}

}  // namespace

DataSplit make_gaussian_classes(size_t train_n, size_t test_n, int dim, int classes, double separation,
                                uint64_t seed) {
  check_args("make_gaussian_classes", dim, classes);
  if (!(separation >= 0) || !std::isfinite(separation)) {
    throw std::invalid_argument("make_gaussian_classes: separation must be finite and >= 0, got " +
                                std::to_string(separation));
  }
  Rng prng(seed, kGaussianStream + kParams);
  std::vector<double> centres(size_t(classes) * dim);
  for (double& v : centres) v = separation * prng.normal();
  DataSplit split;
  split.train = gaussian_samples(train_n, dim, classes, centres, Rng(seed, kGaussianStream + kTrain));
  split.test = gaussian_samples(test_n, dim, classes, centres, Rng(seed, kGaussianStream + kTest));
  return split;
}

DataSplit make_teacher(size_t train_n, size_t test_n, int dim, int classes, uint64_t seed) {
  check_args("make_teacher", dim, classes);
  Teacher t{dim, classes, {}, {}, {}};
  Rng prng(seed, kTeacherStream + kParams);
  t.w1.resize(size_t(kTeacherHidden) * dim);
  for (double& v : t.w1) v = prng.normal() / std::sqrt(double(dim));
  t.w2.resize(size_t(classes) * kTeacherHidden);
  for (double& v : t.w2) v = prng.normal() / std::sqrt(double(kTeacherHidden));
  // Hidden unit j sees N(0, |w1_j|^2), so E[relu] = |w1_j| / sqrt(2 pi). Subtracting each class's
  // expected logit keeps one class from winning most inputs just by a positive row sum of w2.
  t.b2.assign(size_t(classes), 0.0);
  for (int j = 0; j < kTeacherHidden; ++j) {
    double norm2 = 0;
    for (int k = 0; k < dim; ++k) norm2 += t.w1[size_t(j) * dim + k] * t.w1[size_t(j) * dim + k];
    const double mean_h = std::sqrt(norm2) / std::sqrt(6.283185307179586);
    for (int c = 0; c < classes; ++c) t.b2[c] -= t.w2[size_t(c) * kTeacherHidden + j] * mean_h;
  }
  DataSplit split;
  split.train = teacher_samples(train_n, t, Rng(seed, kTeacherStream + kTrain));
  split.test = teacher_samples(test_n, t, Rng(seed, kTeacherStream + kTest));
  return split;
}

}  // namespace adasync
