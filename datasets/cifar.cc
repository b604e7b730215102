#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/file.h"

namespace adasync {
namespace {

namespace fs = std::filesystem;

constexpr size_t kRecords = 10000;
constexpr size_t kPixels = 3 * 32 * 32;
constexpr size_t kRecordBytes = 1 + kPixels;
constexpr size_t kFileBytes = kRecords * kRecordBytes;
constexpr int kCifarClasses = 10;
const char* const kTrainFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                                   "data_batch_4.bin", "data_batch_5.bin"};
const char* const kTestFile = "test_batch.bin";
const char* const kHint =
    "download the CIFAR-10 binary version (cifar-10-binary.tar.gz), unpack it and pass --data-dir";

// Appends n records starting at rec to d, checking each label.
void append_records(const uint8_t* data, size_t n, const std::string& what, Dataset& d) {
  const size_t first = d.y.size();
  for (size_t r = 0; r < n; ++r) {
    const uint8_t label = data[r * kRecordBytes];
    if (label >= kCifarClasses) {
      throw DataError(what + ": label of record " + std::to_string(r) + " is " + std::to_string(label) +
                      ", expected a value in [0, " + std::to_string(kCifarClasses) + ")");
    }
  }
  d.y.resize(first + n);
  d.x.resize((first + n) * kPixels);
  for (size_t r = 0; r < n; ++r) {
    const uint8_t* rec = data + r * kRecordBytes;
    d.y[first + r] = rec[0];
    float* dst = d.x.data() + (first + r) * kPixels;
    for (size_t p = 0; p < kPixels; ++p) dst[p] = float(rec[1 + p]) / 255.0f;
  }
}

// Appends the records of one batch file to `d`.
void read_batch(const std::string& path, std::vector<uint8_t>& buf, Dataset& d) {
  std::unique_ptr<std::FILE, FileClose> f(std::fopen(path.c_str(), "rb"));
  if (!f) throw DataError(path + ": cannot open: " + std::strerror(errno));
  const size_t got = std::fread(buf.data(), 1, kFileBytes, f.get());
  if (got != kFileBytes || std::fgetc(f.get()) != EOF) {
    throw DataError(path + ": expected " + std::to_string(kFileBytes) + " bytes while reading, found " +
                    (got != kFileBytes ? std::to_string(got) : "more") + " (did the file change?)");
  }
  append_records(buf.data(), kRecords, path, d);
}

// Reserved, not resized: the pages are touched one batch file at a time, so a bad
// label in an early file fails before the whole 600 MB is faulted in.
Dataset make_split(size_t n) {
  Dataset d;
  d.name = "cifar10";
  d.c = 3;
  d.h = 32;
  d.w = 32;
  d.classes = kCifarClasses;
  d.x.reserve(n * kPixels);
  d.y.reserve(n);
  return d;
}

}  // namespace

Dataset parse_cifar10_records(const uint8_t* data, size_t size, const std::string& what) {
  if (size == 0 || size % kRecordBytes != 0) {
    throw DataError(what + ": expected a whole number of " + std::to_string(kRecordBytes) +
                    "-byte CIFAR-10 records (1 label byte + " + std::to_string(kPixels) + " pixel bytes), found " +
                    std::to_string(size) + " bytes");
  }
  Dataset d = make_split(size / kRecordBytes);
  append_records(data, size / kRecordBytes, what, d);
  return d;
}

DataSplit load_cifar10_dir(const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names(std::begin(kTrainFiles), std::end(kTrainFiles));
  names.push_back(kTestFile);

  // The batches sit in `dir` itself or in the tarball's cifar-10-batches-bin.
  fs::path base;
  for (const fs::path& cand : {fs::path(dir), fs::path(dir) / "cifar-10-batches-bin"}) {
    for (const auto& n : names) {
      if (fs::exists(cand / n, ec)) {
        base = cand;
        break;
      }
    }
    if (!base.empty()) break;
  }
  if (base.empty()) {
    if (!fs::is_directory(dir, ec)) {
      throw DataError("cifar10: data directory " + dir +
                      (fs::exists(dir, ec) ? " is not a directory (a file); " : " does not exist; ") + kHint);
    }
    throw DataError("cifar10: no CIFAR-10 binary batches in " + dir + " or " +
                    (fs::path(dir) / "cifar-10-batches-bin").string() +
                    ": expected data_batch_1.bin .. data_batch_5.bin and test_batch.bin; " + kHint);
  }

  // Check every file's presence and size before reading any of them.
  std::vector<std::string> paths;
  for (const auto& n : names) {
    const std::string p = (base / n).string();
    const fs::file_status st = fs::status(p, ec);
    if (!fs::exists(st)) {
      throw DataError("cifar10: missing file " + p + " (expected data_batch_1.bin .. data_batch_5.bin and " +
                      "test_batch.bin together in " + base.string() + "); " + kHint);
    }
    if (!fs::is_regular_file(st)) throw DataError(p + ": expected a regular file, found something else");
    const uintmax_t size = fs::file_size(p, ec);
    if (ec) throw DataError(p + ": cannot read its size: " + ec.message());
    if (size != kFileBytes) {
      throw DataError(p + ": expected " + std::to_string(kFileBytes) + " bytes (" + std::to_string(kRecords) +
                      " records of 1 label byte + " + std::to_string(kPixels) + " pixel bytes), found " +
                      std::to_string(size) + " bytes");
    }
    paths.push_back(p);
  }

  DataSplit split;
  split.train = make_split(kRecords * std::size(kTrainFiles));
  split.test = make_split(kRecords);
  std::vector<uint8_t> buf(kFileBytes);
  for (size_t i = 0; i < std::size(kTrainFiles); ++i) read_batch(paths[i], buf, split.train);
  read_batch(paths.back(), buf, split.test);
  return split;
}

}  // namespace adasync
