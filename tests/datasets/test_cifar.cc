// CIFAR-10 binary loader. The batch files are full size (10000 records) but
// sparse: mostly zero records (label 0, black), with a few distinct records
// written at known places, so a test directory costs almost nothing to make.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/rng.h"
#include "tests/support/files.h"

namespace adasync {
namespace {
using test::error_of;
using test::expect_contains;

namespace fs = std::filesystem;

constexpr size_t kRecordBytes = 3073;
constexpr size_t kFileBytes = 10000 * kRecordBytes;
const char* const kFiles[] = {"data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin",
                              "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"};
constexpr size_t kMarked[] = {0, 1, 4567, 9999};  // records given distinct contents

std::string make_temp_dir() {
  std::string tmpl = (fs::path(::testing::TempDir()) / "adasync_cifar_XXXXXX").string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return buf.data();
}

uint8_t marked_label(size_t file, size_t rec) { return uint8_t((file * 3 + rec) % 10); }

std::vector<uint8_t> marked_pixels(size_t file, size_t rec) {
  Rng rng(file * 100000 + rec);
  std::vector<uint8_t> px(3072);
  for (auto& p : px) p = uint8_t(1 + rng.below(255));  // never 0, unlike the sparse filler
  return px;
}

void write_at(const std::string& path, size_t offset, const std::vector<uint8_t>& bytes) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.is_open()) << path;
  f.seekp(std::streamoff(offset));
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

class CifarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = make_temp_dir();
    for (size_t f = 0; f < 6; ++f) {
      const std::string p = path(kFiles[f]);
      std::ofstream(p, std::ios::binary).close();
      fs::resize_file(p, kFileBytes);
      for (size_t r : kMarked) {
        std::vector<uint8_t> rec{marked_label(f, r)};
        const auto px = marked_pixels(f, r);
        rec.insert(rec.end(), px.begin(), px.end());
        write_at(p, r * kRecordBytes, rec);
      }
    }
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  std::string dir_;
};

void expect_marked(const DataSplit& s) {
  for (size_t f = 0; f < 6; ++f) {
    const Dataset& d = f < 5 ? s.train : s.test;
    const size_t base = f < 5 ? f * 10000 : 0;
    for (size_t r : kMarked) {
      EXPECT_EQ(d.y[base + r], marked_label(f, r)) << kFiles[f] << " record " << r;
      const auto px = marked_pixels(f, r);
      const float* row = d.row(base + r);
      for (size_t k = 0; k < px.size(); ++k) {
        ASSERT_EQ(row[k], float(px[k]) / 255.0f) << kFiles[f] << " " << r;
      }
    }
  }
}

// Full loads are the slow part (600 MB of floats), so one test covers loading and normalising.
TEST_F(CifarTest, LoadsAllBatchesInOrderAndNormalises) {
  DataSplit s = load_cifar10_dir(dir_);
  ASSERT_EQ(s.train.size(), 50000u);
  ASSERT_EQ(s.test.size(), 10000u);
  for (const Dataset* d : {&s.train, &s.test}) {
    EXPECT_EQ(d->name, "cifar10");
    EXPECT_EQ(d->c, 3);
    EXPECT_EQ(d->h, 32);
    EXPECT_EQ(d->w, 32);
    EXPECT_EQ(d->classes, 10);
    EXPECT_EQ(d->x.size(), d->size() * 3072);
  }
  expect_marked(s);
  // An unmarked record is the zero filler.
  EXPECT_EQ(s.train.y[20002], 0);
  EXPECT_EQ(s.train.row(20002)[0], 0.0f);
  EXPECT_EQ(s.train.row(20002)[3071], 0.0f);

  normalize(s);
  ASSERT_EQ(s.mean.size(), 3u);
  ASSERT_EQ(s.stddev.size(), 3u);
  for (int ch = 0; ch < 3; ++ch) {
    double sum = 0;
    for (size_t i = 0; i < s.train.size(); ++i) {
      const float* p = s.train.row(i) + ch * 1024;
      for (int k = 0; k < 1024; ++k) sum += p[k];
    }
    EXPECT_NEAR(sum / (50000.0 * 1024), 0.0, 1e-5) << "channel " << ch;
    EXPECT_GT(s.mean[size_t(ch)], 0.0f);
    EXPECT_GT(s.stddev[size_t(ch)], 0.0f);
  }
  // Pixel 2048 of a record is in channel 2: it uses that channel's statistics.
  const float want = (float(marked_pixels(5, 4567)[2048]) / 255.0f - s.mean[2]) / s.stddev[2];
  EXPECT_NEAR(s.test.row(4567)[2048], want, 1e-5);
}

TEST_F(CifarTest, FindsBatchesSubdirectory) {
  // Checked through an error that names the resolved path, which needs no full load.
  const std::string outer = path("outer");
  fs::create_directory(outer);
  fs::create_directory_symlink(dir_, fs::path(outer) / "cifar-10-batches-bin");
  fs::resize_file(path("data_batch_4.bin"), 100);
  const std::string inner = (fs::path(outer) / "cifar-10-batches-bin" / "data_batch_4.bin").string();
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(outer); }),
                  {inner, "expected 30730000 bytes", "found 100"});
  expect_contains(error_of<DataError>([&] { load_dataset("cifar10", outer, 0); }), {inner, "found 100"});
}

TEST_F(CifarTest, WrongFileSize) {
  fs::resize_file(path("data_batch_4.bin"), kFileBytes - 1);
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(dir_); }),
                  {path("data_batch_4.bin"), "expected 30730000 bytes", "found 30729999 bytes"});
  fs::resize_file(path("data_batch_4.bin"), kFileBytes);
  fs::resize_file(path("test_batch.bin"), kFileBytes + 3073);
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(dir_); }),
                  {path("test_batch.bin"), "expected 30730000 bytes", "found 30733073 bytes"});
}

TEST_F(CifarTest, LabelOutOfRange) {
  write_at(path("data_batch_2.bin"), 1234 * kRecordBytes, {10});
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(dir_); }),
                  {path("data_batch_2.bin"), "record 1234", "is 10", "[0, 10)"});
}

TEST_F(CifarTest, MissingFile) {
  fs::remove(path("test_batch.bin"));
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(dir_); }),
                  {path("test_batch.bin"), "missing", "--data-dir"});
}

TEST_F(CifarTest, MissingOrEmptyDirectory) {
  const std::string missing = path("absent");
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(missing); }), {missing, "does not exist", "--data-dir"});
  const std::string empty = path("empty");
  fs::create_directory(empty);
  expect_contains(error_of<DataError>([&] { load_cifar10_dir(empty); }),
                  {empty, "cifar-10-batches-bin", "data_batch_1.bin", "test_batch.bin"});
}

// fashion-mnist32: each image padded with black pixels, as CIFAR-10's size.
TEST(PadImages, CentresEachImageInBlackBorders) {
  Dataset d;
  d.c = 2, d.h = 1, d.w = 2, d.classes = 2;
  d.x = {1, 2, 3, 4, 5, 6, 7, 8};  // two images of two 1x2 channels
  d.y = {0, 1};
  pad_images(d, 1);
  ASSERT_EQ(d.h, 3);
  ASSERT_EQ(d.w, 4);
  ASSERT_EQ(d.x.size(), 2u * 2 * 3 * 4);
  const std::vector<float> first = {0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 0, 0, 0, 0, 0};
  EXPECT_EQ(std::vector<float>(d.x.begin(), d.x.begin() + 24), first);
  EXPECT_EQ(d.row(1)[5], 5);
  EXPECT_EQ(d.row(1)[18], 8);
}

}  // namespace
}  // namespace adasync
