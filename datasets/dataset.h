// Datasets: image classification sets held in host memory as normalised
// float32 NCHW rows plus int32 labels, and the loaders that fill them.
//
// Every loader validates what it reads (magic numbers, dimensions, byte
// counts, label range, train/test shape agreement) and reports a problem as
// one DataError whose message names the file, what was expected, what was
// found and, where it helps, how to fix it. Nothing is half-loaded: a loader
// either returns a complete split or throws.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace adasync {

class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Dataset {
  std::string name;
  int c = 1, h = 1, w = 1;  // per-sample shape
  int classes = 0;
  std::vector<float> x;     // size() * dim() values, row-major
  std::vector<int32_t> y;   // labels in [0, classes)

  size_t size() const { return y.size(); }
  size_t dim() const { return size_t(c) * h * w; }
  const float* row(size_t i) const { return x.data() + i * dim(); }
};

struct DataSplit {
  Dataset train, test;
  // Per-channel statistics used by normalize() (empty before it runs).
  std::vector<float> mean, stddev;
};

// Raw IDX contents (unsigned-byte IDX only, as used by MNIST-family files).
struct IdxArray {
  std::vector<uint32_t> dims;
  std::vector<uint8_t> data;
};

// Reads one IDX file, gzip-compressed (by content: it starts with 1f 8b) or
// raw, and checks the magic (0x0000 08 <ndims>), that ndims == expected_ndims
// and that the payload holds exactly prod(dims) bytes. A gzip file is one or
// more whole gzip members (concatenated members read as one stream, as gunzip
// does); bytes after the last member that are not another member are an error.
IdxArray read_idx(const std::string& path, int expected_ndims);

// MNIST / Fashion-MNIST from a directory holding train-images-idx3-ubyte,
// train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte,
// each optionally with a .gz suffix (the .gz is preferred when both exist).
// Images must be 28x28, labels in [0, 10), image and label counts equal.
// `name` ("fashion-mnist" or "mnist") picks the hint in error messages.
// Pixels are scaled to [0, 1]; call normalize() afterwards.
DataSplit load_mnist_dir(const std::string& dir, const std::string& name);

// CIFAR-10 binary version: data_batch_1.bin .. data_batch_5.bin and
// test_batch.bin in `dir` or in `dir`/cifar-10-batches-bin. Each file must be
// exactly 10000 records of 1 label byte + 3072 pixel bytes (3x32x32, CHW),
// labels in [0, 10). Pixels scaled to [0, 1].
DataSplit load_cifar10_dir(const std::string& dir);
// Parses CIFAR-10 binary records (1 label byte + 3072 pixel bytes each) from
// memory; `what` names the source in errors. The size must be a whole number
// of records and every label in [0, 10).
Dataset parse_cifar10_records(const uint8_t* data, size_t size, const std::string& what);

// Synthetic sets, exact for a seed.
// Gaussian classes: `classes` centres drawn N(0, separation^2) in `dim`
// dimensions, each sample = its class centre + N(0, 1) noise; shape 1x1xdim.
DataSplit make_gaussian_classes(size_t train_n, size_t test_n, int dim, int classes, double separation,
                                uint64_t seed);
// Teacher network: inputs N(0, 1) in `dim` dimensions, labels = argmax of a
// random one-hidden-layer ReLU network (hidden width 32) with fixed weights.
DataSplit make_teacher(size_t train_n, size_t test_n, int dim, int classes, uint64_t seed);

// Subtracts the per-channel mean and divides by the per-channel standard
// deviation, both measured on the training split, from both splits.
void normalize(DataSplit& split);

// Pads every image of d with `pad` zero pixels on each side (before normalize()).
void pad_images(Dataset& d, int pad);

// By name: "fashion-mnist" (default dir /usr/share/datasets/fashion-mnist),
// "fashion-mnist32" (the same padded to 32x32, CIFAR-10's size),
// "mnist" (needs dir), "cifar10" (needs dir), "gaussian", "teacher".
// An empty dir means the default for that dataset. Returns normalised data.
DataSplit load_dataset(const std::string& name, const std::string& dir, uint64_t seed);
// The default directory of a named dataset ("" when it has none).
std::string default_data_dir(const std::string& name);

}  // namespace adasync
