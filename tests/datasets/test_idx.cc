// IDX reader and MNIST-directory loader: round trips through raw and gzip files,
// one test per kind of bad input, and the installed Fashion-MNIST when present.
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
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

std::string make_temp_dir(const char* tag) {
  std::string tmpl = (fs::path(::testing::TempDir()) / (std::string("adasync_") + tag + "_XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
  return buf.data();
}

std::vector<uint8_t> idx_bytes(uint32_t magic, const std::vector<uint32_t>& dims,
                               const std::vector<uint8_t>& data) {
  std::vector<uint8_t> b;
  auto put32 = [&](uint32_t v) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(uint8_t(v >> s));
  };
  put32(magic);
  for (uint32_t d : dims) put32(d);
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

std::vector<uint8_t> pattern(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& x : v) x = uint8_t(rng.below(256));
  return v;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  ASSERT_TRUE(f.good()) << path;
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), unsigned(bytes.size())), int(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::vector<uint8_t> read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = make_temp_dir("idx"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (fs::path(dir_) / name).string(); }

  // A complete MNIST-style directory: n_train/n_test images of side x side.
  void write_mnist(size_t n_train, size_t n_test, uint32_t side = 28, bool gz = true) {
    const std::string ext = gz ? ".gz" : "";
    auto w = [&](const std::string& name, const std::vector<uint8_t>& b) {
      gz ? write_gz(path(name + ext), b) : write_raw(path(name + ext), b);
    };
    w("train-images-idx3-ubyte",
      idx_bytes(0x803, {uint32_t(n_train), side, side}, pattern(n_train * side * side, 1)));
    w("train-labels-idx1-ubyte", idx_bytes(0x801, {uint32_t(n_train)}, labels(n_train, 2)));
    w("t10k-images-idx3-ubyte",
      idx_bytes(0x803, {uint32_t(n_test), side, side}, pattern(n_test * side * side, 3)));
    w("t10k-labels-idx1-ubyte", idx_bytes(0x801, {uint32_t(n_test)}, labels(n_test, 4)));
  }
  static std::vector<uint8_t> labels(size_t n, uint64_t seed) {
    std::vector<uint8_t> v = pattern(n, seed);
    for (auto& x : v) x %= 10;
    return v;
  }

  std::string dir_;
};

TEST_F(IdxTest, RawRoundTrip) {
  const auto data = pattern(2 * 3 * 5, 7);
  write_raw(path("a.idx"), idx_bytes(0x803, {2, 3, 5}, data));
  const IdxArray a = read_idx(path("a.idx"), 3);
  EXPECT_EQ(a.dims, (std::vector<uint32_t>{2, 3, 5}));
  EXPECT_EQ(a.data, data);
}

TEST_F(IdxTest, GzipRoundTrip) {
  const auto data = pattern(70000, 8);  // spans several zlib buffers
  write_gz(path("a.idx.gz"), idx_bytes(0x801, {70000}, data));
  const IdxArray a = read_idx(path("a.idx.gz"), 1);
  EXPECT_EQ(a.dims, (std::vector<uint32_t>{70000}));
  EXPECT_EQ(a.data, data);
}

TEST_F(IdxTest, EmptyPayloadIsExact) {
  write_raw(path("e.idx"), idx_bytes(0x803, {0, 28, 28}, {}));
  const IdxArray a = read_idx(path("e.idx"), 3);
  EXPECT_EQ(a.dims, (std::vector<uint32_t>{0, 28, 28}));
  EXPECT_TRUE(a.data.empty());
}

TEST_F(IdxTest, MissingFile) {
  const std::string msg = error_of<DataError>([&] { read_idx(path("nope.idx"), 1); });
  expect_contains(msg, {path("nope.idx"), "not found"});
}

TEST_F(IdxTest, WrongTypeCode) {
  write_raw(path("f.idx"), idx_bytes(0x0D03, {1, 1, 1}, {0, 0, 0, 0}));  // 0x0D: float32 elements
  const std::string msg = error_of<DataError>([&] { read_idx(path("f.idx"), 3); });
  expect_contains(msg, {path("f.idx"), "expected 0x00000803", "found 0x00000D03"});
}

TEST_F(IdxTest, WrongNdims) {
  write_raw(path("l.idx"), idx_bytes(0x801, {4}, {1, 2, 3, 4}));
  const std::string msg = error_of<DataError>([&] { read_idx(path("l.idx"), 3); });
  expect_contains(msg, {path("l.idx"), "expected 0x00000803", "found 0x00000801"});
}

TEST_F(IdxTest, NonZeroLeadingMagicBytes) {
  write_raw(path("x.idx"), idx_bytes(0x12340801, {1}, {1}));
  const std::string msg = error_of<DataError>([&] { read_idx(path("x.idx"), 1); });
  expect_contains(msg, {path("x.idx"), "expected 0x00000801", "found 0x12340801"});
}

TEST_F(IdxTest, ShortHeader) {
  write_raw(path("s.idx"), {0, 0});
  expect_contains(error_of<DataError>([&] { read_idx(path("s.idx"), 1); }), {path("s.idx"), "4-byte", "2 bytes"});
  write_raw(path("d.idx"), {0, 0, 8, 3, 0, 0, 0, 2, 0, 0});  // magic + 1.5 of 3 dims
  expect_contains(error_of<DataError>([&] { read_idx(path("d.idx"), 3); }), {path("d.idx"), "expected 12", "found 6"});
}

TEST_F(IdxTest, TruncatedPayloadRaw) {
  auto bytes = idx_bytes(0x803, {2, 5, 6}, pattern(60, 9));
  bytes.resize(bytes.size() - 10);
  write_raw(path("t.idx"), bytes);
  const std::string msg = error_of<DataError>([&] { read_idx(path("t.idx"), 3); });
  expect_contains(msg, {path("t.idx"), "expected 60 bytes of data after the header, found 50"});
}

TEST_F(IdxTest, TruncatedPayloadInsideValidGzip) {
  auto bytes = idx_bytes(0x801, {100}, pattern(100, 10));
  bytes.resize(bytes.size() - 1);
  write_gz(path("t.idx.gz"), bytes);
  const std::string msg = error_of<DataError>([&] { read_idx(path("t.idx.gz"), 1); });
  expect_contains(msg, {path("t.idx.gz"), "expected 100 bytes of data after the header, found 99"});
}

TEST_F(IdxTest, TrailingBytes) {
  auto bytes = idx_bytes(0x803, {2, 5, 6}, pattern(62, 11));
  write_raw(path("x.idx"), bytes);
  expect_contains(error_of<DataError>([&] { read_idx(path("x.idx"), 3); }),
                  {path("x.idx"), "expected 60 bytes of data after the header, found 62"});
  write_gz(path("x.idx.gz"), bytes);
  expect_contains(error_of<DataError>([&] { read_idx(path("x.idx.gz"), 3); }),
                  {path("x.idx.gz"), "expected 60 bytes of data after the header, found 62"});
}

TEST_F(IdxTest, CutOffGzipStream) {
  // Random payload does not compress, so half the file ends inside the deflate data.
  write_gz(path("c.idx.gz"), idx_bytes(0x801, {20000}, pattern(20000, 12)));
  auto gz = read_all(path("c.idx.gz"));
  ASSERT_GT(gz.size(), 20000u);
  gz.resize(gz.size() / 2);
  write_raw(path("c.idx.gz"), gz);
  const std::string msg = error_of<DataError>([&] { read_idx(path("c.idx.gz"), 1); });
  expect_contains(msg, {path("c.idx.gz"), "gzip", "unexpected end of file"});
}

TEST_F(IdxTest, GzipChecksumMismatch) {
  write_gz(path("k.idx.gz"), idx_bytes(0x801, {500}, pattern(500, 13)));
  auto gz = read_all(path("k.idx.gz"));
  gz[gz.size() - 8] ^= 0xFF;  // first byte of the CRC-32 trailer
  write_raw(path("k.idx.gz"), gz);
  const std::string msg = error_of<DataError>([&] { read_idx(path("k.idx.gz"), 1); });
  expect_contains(msg, {path("k.idx.gz"), "gzip", "incorrect data check"});
}

TEST_F(IdxTest, GarbageDeflateData) {
  write_gz(path("g.idx.gz"), idx_bytes(0x801, {500}, pattern(500, 14)));
  auto gz = read_all(path("g.idx.gz"));
  // 0xFF... after the 10-byte gzip header is an invalid deflate block type (BTYPE=11).
  for (size_t i = 10; i < 20; ++i) gz[i] = 0xFF;
  write_raw(path("g.idx.gz"), gz);
  const std::string msg = error_of<DataError>([&] { read_idx(path("g.idx.gz"), 1); });
  expect_contains(msg, {path("g.idx.gz"), "gzip", "zlib:"});
}

// zlib's gzread drops bytes after a whole gzip member that do not start
// another member; the reader must not: a raw file with extra bytes is
// rejected, and so is a gzip file.
TEST_F(IdxTest, GarbageAfterAWholeGzipMemberIsRejected) {
  const auto payload = idx_bytes(0x801, {300}, pattern(300, 15));
  write_gz(path("ok.gz"), payload);
  const auto gz = read_all(path("ok.gz"));
  ASSERT_EQ(read_idx(path("ok.gz"), 1).data.size(), 300u);  // the stream itself is fine
  const std::vector<std::vector<uint8_t>> tails = {
      {'g', 'a', 'r', 'b', 'a', 'g', 'e'}, {0x00}, std::vector<uint8_t>(4096, 0), {0x1f}, pattern(70000, 16)};
  for (const auto& tail : tails) {
    auto bytes = gz;
    bytes.insert(bytes.end(), tail.begin(), tail.end());
    write_raw(path("tail.gz"), bytes);
    const std::string msg = error_of<DataError>([&] { read_idx(path("tail.gz"), 1); });
    expect_contains(msg, {path("tail.gz"), "trailing bytes after the gzip data",
                          "at byte " + std::to_string(gz.size())});
  }
}

// Several whole members are one gzip stream (RFC 1952; `cat a.gz b.gz`
// gunzips to the concatenation): allowed, and read as their concatenation.
TEST_F(IdxTest, ConcatenatedGzipMembersReadAsOneStream) {
  const auto payload = idx_bytes(0x801, {5000}, pattern(5000, 17));
  const size_t cut = 1234;
  write_gz(path("a.gz"), std::vector<uint8_t>(payload.begin(), payload.begin() + cut));
  write_gz(path("b.gz"), std::vector<uint8_t>(payload.begin() + cut, payload.end()));
  write_gz(path("empty.gz"), {});
  auto both = read_all(path("a.gz"));
  const auto b = read_all(path("b.gz")), e = read_all(path("empty.gz"));
  both.insert(both.end(), e.begin(), e.end());
  both.insert(both.end(), b.begin(), b.end());
  write_raw(path("ab.gz"), both);
  const IdxArray a = read_idx(path("ab.gz"), 1);
  EXPECT_EQ(a.data, std::vector<uint8_t>(payload.begin() + 8, payload.end()));
  // A second member that adds data past the payload is the trailing-data error.
  both.insert(both.end(), e.begin(), e.end());
  write_gz(path("one.gz"), {7});
  const auto one = read_all(path("one.gz"));
  both.insert(both.end(), one.begin(), one.end());
  write_raw(path("abc.gz"), both);
  expect_contains(error_of<DataError>([&] { read_idx(path("abc.gz"), 1); }),
                  {path("abc.gz"), "expected 5000 bytes of data after the header, found 5001"});
  // A second member cut off is a truncated stream.
  both.resize(both.size() - 3);
  write_raw(path("abc.gz"), both);
  expect_contains(error_of<DataError>([&] { read_idx(path("abc.gz"), 1); }),
                  {path("abc.gz"), "gzip", "unexpected end of file"});
}

TEST_F(IdxTest, LoadMnistDirGz) {
  write_mnist(5, 3);
  const DataSplit s = load_mnist_dir(dir_, "mnist");
  EXPECT_EQ(s.train.name, "mnist");
  EXPECT_EQ(s.train.size(), 5u);
  EXPECT_EQ(s.test.size(), 3u);
  for (const Dataset* d : {&s.train, &s.test}) {
    EXPECT_EQ(d->c, 1);
    EXPECT_EQ(d->h, 28);
    EXPECT_EQ(d->w, 28);
    EXPECT_EQ(d->classes, 10);
    EXPECT_EQ(d->x.size(), d->size() * 784);
  }
  const auto px = pattern(5 * 784, 1);
  for (size_t i = 0; i < px.size(); ++i) ASSERT_EQ(s.train.x[i], float(px[i]) / 255.0f) << i;
  const auto lt = labels(3, 4);
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(s.test.y[i], lt[i]);
  EXPECT_TRUE(s.mean.empty());
}

TEST_F(IdxTest, LoadMnistDirRaw) {
  write_mnist(4, 2, 28, /*gz=*/false);
  const DataSplit s = load_mnist_dir(dir_, "fashion-mnist");
  EXPECT_EQ(s.train.size(), 4u);
  EXPECT_EQ(s.test.size(), 2u);
  const auto px = pattern(2 * 784, 3);
  for (size_t i = 0; i < px.size(); ++i) ASSERT_EQ(s.test.x[i], float(px[i]) / 255.0f) << i;
}

TEST_F(IdxTest, GzPreferredOverRaw) {
  write_mnist(4, 2, 28, /*gz=*/true);
  // Raw twins with other contents (and a different count): they must be ignored.
  write_raw(path("train-images-idx3-ubyte"), idx_bytes(0x803, {1, 28, 28}, std::vector<uint8_t>(784, 255)));
  write_raw(path("train-labels-idx1-ubyte"), idx_bytes(0x801, {1}, {9}));
  const DataSplit s = load_mnist_dir(dir_, "mnist");
  ASSERT_EQ(s.train.size(), 4u);
  EXPECT_EQ(s.train.x[0], float(pattern(1, 1)[0]) / 255.0f);
}

TEST_F(IdxTest, WrongImageSize) {
  write_mnist(3, 2);
  write_gz(path("t10k-images-idx3-ubyte.gz"), idx_bytes(0x803, {2, 27, 28}, pattern(2 * 27 * 28, 5)));
  const std::string msg = error_of<DataError>([&] { load_mnist_dir(dir_, "mnist"); });
  expect_contains(msg, {"t10k-images-idx3-ubyte.gz", "expected 28x28", "found 27x28"});
}

TEST_F(IdxTest, LabelCountMismatch) {
  write_mnist(3, 2);
  write_gz(path("train-labels-idx1-ubyte.gz"), idx_bytes(0x801, {4}, {1, 2, 3, 4}));
  const std::string msg = error_of<DataError>([&] { load_mnist_dir(dir_, "mnist"); });
  expect_contains(
      msg, {path("train-images-idx3-ubyte.gz"), path("train-labels-idx1-ubyte.gz"), "3 images", "4 labels"});
}

TEST_F(IdxTest, LabelOutOfRange) {
  write_mnist(3, 4);
  write_gz(path("t10k-labels-idx1-ubyte.gz"), idx_bytes(0x801, {4}, {1, 2, 10, 4}));
  const std::string msg = error_of<DataError>([&] { load_mnist_dir(dir_, "mnist"); });
  expect_contains(msg, {path("t10k-labels-idx1-ubyte.gz"), "index 2", "is 10", "[0, 10)"});
}

TEST_F(IdxTest, TruncatedImagesInDir) {
  write_mnist(3, 2, 28, /*gz=*/false);
  auto b = read_all(path("train-images-idx3-ubyte"));
  b.resize(b.size() - 100);
  write_raw(path("train-images-idx3-ubyte"), b);
  const std::string msg = error_of<DataError>([&] { load_mnist_dir(dir_, "mnist"); });
  expect_contains(msg, {path("train-images-idx3-ubyte"), "expected 2352 bytes", "found 2252"});
}

TEST_F(IdxTest, MissingFileInDir) {
  write_mnist(3, 2);
  fs::remove(path("t10k-labels-idx1-ubyte.gz"));
  const std::string fm = error_of<DataError>([&] { load_mnist_dir(dir_, "fashion-mnist"); });
  expect_contains(fm, {path("t10k-labels-idx1-ubyte.gz"), "dataset-fashion-mnist", "--data-dir"});
  const std::string m = error_of<DataError>([&] { load_mnist_dir(dir_, "mnist"); });
  expect_contains(m, {path("t10k-labels-idx1-ubyte.gz"), "--data-dir"});
  EXPECT_EQ(m.find("dataset-fashion-mnist"), std::string::npos) << m;
}

TEST_F(IdxTest, MissingDirectory) {
  const std::string missing = path("no/such/dir");
  const std::string fm = error_of<DataError>([&] { load_mnist_dir(missing, "fashion-mnist"); });
  expect_contains(
      fm, {missing, "does not exist", "install the Debian package dataset-fashion-mnist", "--data-dir"});
  const std::string m = error_of<DataError>([&] { load_mnist_dir(missing, "mnist"); });
  expect_contains(m, {missing, "does not exist", "--data-dir"});
  const std::string ld = error_of<DataError>([&] { load_dataset("fashion-mnist", missing, 0); });
  expect_contains(ld, {missing, "dataset-fashion-mnist"});
}

TEST(LoadDataset, NamesAndDefaults) {
  EXPECT_EQ(default_data_dir("fashion-mnist"), "/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(default_data_dir("mnist"), "");
  EXPECT_EQ(default_data_dir("gaussian"), "");
  expect_contains(error_of<DataError>([] { load_dataset("mnist", "", 0); }), {"mnist", "--data-dir"});
  expect_contains(error_of<DataError>([] { load_dataset("cifar10", "", 0); }), {"cifar10", "--data-dir"});
  expect_contains(error_of<DataError>([] { load_dataset("imagenet", "", 0); }),
                  {"imagenet", "fashion-mnist", "mnist", "cifar10", "gaussian", "teacher"});
}

TEST_F(IdxTest, LoadDatasetMnistNormalises) {
  write_mnist(50, 20);
  const DataSplit s = load_dataset("mnist", dir_, 0);
  ASSERT_EQ(s.mean.size(), 1u);
  double sum = 0, sq = 0;
  for (float v : s.train.x) sum += v;
  const double mean = sum / double(s.train.x.size());
  for (float v : s.train.x) sq += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 0.0, 1e-5);
  EXPECT_NEAR(std::sqrt(sq / double(s.train.x.size())), 1.0, 1e-5);
}

TEST(FashionMnist, InstalledPackage) {
  const std::string dir = default_data_dir("fashion-mnist");
  if (!fs::is_directory(dir)) {
    GTEST_SKIP() << dir << " not found (install the Debian package dataset-fashion-mnist)";
  }
  const auto t0 = std::chrono::steady_clock::now();
  DataSplit s = load_mnist_dir(dir, "fashion-mnist");
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[          ] Fashion-MNIST loaded in %.3f s\n", load_s);
  ASSERT_EQ(s.train.size(), 60000u);
  ASSERT_EQ(s.test.size(), 10000u);
  EXPECT_EQ(s.train.h, 28);
  EXPECT_EQ(s.train.w, 28);
  EXPECT_EQ(s.train.c, 1);
  auto check = [](const Dataset& d, int per_class) {
    std::vector<int> counts(10, 0);
    for (int32_t y : d.y) {
      ASSERT_GE(y, 0);
      ASSERT_LT(y, 10);
      ++counts[size_t(y)];
    }
    for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[size_t(c)], per_class) << "class " << c;
    const auto [lo, hi] = std::minmax_element(d.x.begin(), d.x.end());
    EXPECT_EQ(*lo, 0.0f);
    EXPECT_EQ(*hi, 1.0f);
  };
  check(s.train, 6000);
  check(s.test, 1000);
  double raw_sum = 0;
  for (float v : s.train.x) raw_sum += v;
  const double raw_mean = raw_sum / double(s.train.x.size());

  normalize(s);
  ASSERT_EQ(s.mean.size(), 1u);
  ASSERT_EQ(s.stddev.size(), 1u);
  EXPECT_NEAR(s.mean[0], raw_mean, 1e-6);
  EXPECT_GT(s.stddev[0], 0.0f);
  double sum = 0, sq = 0;
  for (float v : s.train.x) sum += v;
  const double mean = sum / double(s.train.x.size());
  for (float v : s.train.x) sq += (v - mean) * (v - mean);
  EXPECT_NEAR(mean, 0.0, 1e-4);
  EXPECT_NEAR(std::sqrt(sq / double(s.train.x.size())), 1.0, 1e-4);
  double test_sum = 0;
  for (float v : s.test.x) test_sum += v;
  EXPECT_NEAR(test_sum / double(s.test.x.size()), 0.0, 0.05);  // same statistics, not refitted
}

}  // namespace
}  // namespace adasync
