#include <cmath>
#include <string>
#include <vector>

#include "datasets/dataset.h"

namespace adasync {
namespace {

// Four independent double accumulators: a single chain is bound by add latency.
template <class F>
double sum_plane(const float* p, size_t n, F f) {
  double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t k = 0;
  for (; k + 4 <= n; k += 4) {
    a0 += f(p[k]);
    a1 += f(p[k + 1]);
    a2 += f(p[k + 2]);
    a3 += f(p[k + 3]);
  }
  for (; k < n; ++k) a0 += f(p[k]);
  return (a0 + a1) + (a2 + a3);
}

}  // namespace

void normalize(DataSplit& split) {
  Dataset& tr = split.train;
  Dataset& te = split.test;
  if (te.c != tr.c || te.dim() != tr.dim()) {
    throw DataError(tr.name + ": train and test shapes differ: expected " + std::to_string(tr.c) + "x" +
                    std::to_string(tr.h) + "x" + std::to_string(tr.w) + " for both, found test " +
                    std::to_string(te.c) + "x" + std::to_string(te.h) + "x" + std::to_string(te.w));
  }
  for (const Dataset* d : {&tr, &te}) {
    if (d->x.size() != d->size() * d->dim()) {
      throw DataError(d->name + ": expected " + std::to_string(d->size() * d->dim()) + " values (" +
                      std::to_string(d->size()) + " samples of " + std::to_string(d->dim()) + "), found " +
                      std::to_string(d->x.size()));
    }
  }
  const size_t channels = size_t(tr.c);
  const size_t plane = size_t(tr.h) * tr.w;
  const size_t n = tr.size();
  split.mean.assign(channels, 0.0f);
  split.stddev.assign(channels, 1.0f);
  if (n == 0 || plane == 0) return;

  // Two passes in double: the mean first, then squared deviations from it, which
  // stays accurate where sum(x^2) - n*mean^2 would cancel.
  const double count = double(n) * double(plane);
  for (size_t ch = 0; ch < channels; ++ch) {
    double sum = 0;
    for (size_t i = 0; i < n; ++i) {
      sum += sum_plane(tr.row(i) + ch * plane, plane, [](float v) { return double(v); });
    }
    const double mean = sum / count;
    double sq = 0;
    for (size_t i = 0; i < n; ++i) {
      sq += sum_plane(tr.row(i) + ch * plane, plane, [mean](float v) { return (v - mean) * (v - mean); });
    }
    const double sd = std::sqrt(sq / count);
    split.mean[ch] = float(mean);
    split.stddev[ch] = (sd > 0 && std::isfinite(sd)) ? float(sd) : 1.0f;  // a constant channel stays centred
  }
  for (Dataset* d : {&tr, &te}) {
    for (size_t ch = 0; ch < channels; ++ch) {
      const float m = split.mean[ch];
      const float inv = float(1.0 / double(split.stddev[ch]));
      for (size_t i = 0, ni = d->size(); i < ni; ++i) {
        float* p = d->x.data() + i * d->dim() + ch * plane;
        for (size_t k = 0; k < plane; ++k) p[k] = (p[k] - m) * inv;
      }
    }
  }
}

std::string default_data_dir(const std::string& name) {
  if (name == "fashion-mnist" || name == "fashion-mnist32") return "/usr/share/datasets/fashion-mnist";
  return "";
}

void pad_images(Dataset& d, int pad) {
  const int h = d.h + 2 * pad, w = d.w + 2 * pad;
  std::vector<float> x(d.size() * size_t(d.c) * h * w, 0.f);  // black borders, before normalisation
  for (size_t i = 0; i < d.size(); ++i)
    for (int ch = 0; ch < d.c; ++ch)
      for (int r = 0; r < d.h; ++r) {
        const float* src = d.row(i) + (size_t(ch) * d.h + r) * d.w;
        std::copy(src, src + d.w, x.data() + ((i * d.c + ch) * h + r + pad) * w + pad);
      }
  d.x = std::move(x);
  d.h = h;
  d.w = w;
}

DataSplit load_dataset(const std::string& name, const std::string& dir, uint64_t seed) {
  // Synthetic sizes: large enough for a learning curve, small enough to generate in
  // milliseconds. 32 dimensions, 10 classes; gaussian centres have separation 1.0.
  constexpr size_t kSynthTrain = 8000, kSynthTest = 2000;
  constexpr int kSynthDim = 32, kSynthClasses = 10;

  DataSplit split;
  if (name == "fashion-mnist" || name == "fashion-mnist32") {
    split = load_mnist_dir(dir.empty() ? default_data_dir(name) : dir, "fashion-mnist");
    if (name == "fashion-mnist32") {  // CIFAR-10's image size: 2 black pixels around each side
      pad_images(split.train, 2);
      pad_images(split.test, 2);
      split.train.name = split.test.name = name;
    }
  } else if (name == "mnist" || name == "cifar10") {
    if (dir.empty()) {
      throw DataError("dataset " + name +
                      " has no default location: --data-dir is needed (a directory with " +
                      (name == "mnist" ? "the MNIST IDX files train-images-idx3-ubyte[.gz], ..."
                                       : "the CIFAR-10 binary batches data_batch_1.bin, ...") +
                      ")");
    }
    split = name == "mnist" ? load_mnist_dir(dir, name) : load_cifar10_dir(dir);
  } else if (name == "gaussian") {
    split = make_gaussian_classes(kSynthTrain, kSynthTest, kSynthDim, kSynthClasses, 1.0, seed);
  } else if (name == "teacher") {
    split = make_teacher(kSynthTrain, kSynthTest, kSynthDim, kSynthClasses, seed);
  } else {
    throw DataError("unknown dataset '" + name +
                    "': expected one of fashion-mnist, fashion-mnist32, mnist, cifar10, gaussian, " + "teacher");
  }
  normalize(split);
  return split;
}

}  // namespace adasync
