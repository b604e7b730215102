#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/file.h"

namespace adasync {
namespace {

namespace fs = std::filesystem;

constexpr int kImageSide = 28;
constexpr int kFashionClasses = 10;

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08X", v);
  return buf;
}

std::string dims_str(const std::vector<uint32_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) s += (i ? "x" : "") + std::to_string(dims[i]);
  return s.empty() ? "(scalar)" : s;
}

// The bytes of a data file: raw, or decompressed when it starts with the gzip
// magic (1f 8b). A gzip file is one or more whole members (RFC 1952 allows
// several, and `cat a.gz b.gz` is what gunzip reads as the concatenation);
// anything after the last member that is not another member is an error.
// zlib's gzread would silently drop such trailing bytes, hence inflate here.
class DataSource {
 public:
  explicit DataSource(const std::string& path) : path_(path), f_(std::fopen(path.c_str(), "rb")) {
    if (!f_) throw DataError(path + ": cannot open: " + std::strerror(errno));
    in_.resize(size_t(1) << 18);
    fill(2);
    gzip_ = end_ - pos_ >= 2 && in_[pos_] == 0x1f && in_[pos_ + 1] == 0x8b;
    if (gzip_) {
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw DataError(path + ": cannot start zlib");
      z_live_ = true;
    }
  }
  ~DataSource() {
    if (z_live_) inflateEnd(&z_);
  }
  DataSource(const DataSource&) = delete;
  DataSource& operator=(const DataSource&) = delete;

  // Reads up to n bytes, fewer only at the end of the data.
  size_t read(uint8_t* buf, size_t n, const char* what) { return gzip_ ? inflate_some(buf, n, what) : raw(buf, n); }

 private:
  // Makes at least `want` unread bytes available unless the file ends first.
  void fill(size_t want) {
    if (end_ - pos_ >= want || eof_) return;
    std::memmove(in_.data(), in_.data() + pos_, end_ - pos_);
    end_ -= pos_;
    pos_ = 0;
    while (end_ < want && !eof_) {
      const size_t r = std::fread(in_.data() + end_, 1, in_.size() - end_, f_.get());
      end_ += r;
      if (r == 0) {
        if (std::ferror(f_.get())) throw DataError(path_ + ": read error: " + std::strerror(errno));
        eof_ = true;
      }
    }
  }

  size_t raw(uint8_t* buf, size_t n) {
    size_t got = 0;
    while (got < n) {
      fill(1);
      if (pos_ == end_) break;
      const size_t k = std::min(n - got, end_ - pos_);
      std::memcpy(buf + got, in_.data() + pos_, k);
      pos_ += k;
      got += k;
    }
    return got;
  }

  [[noreturn]] void corrupt(const char* what, const std::string& why) const {
    throw DataError(path_ + ": corrupt or truncated gzip stream while reading " + what + " (zlib: " + why + ")");
  }

  size_t inflate_some(uint8_t* buf, size_t n, const char* what) {
    size_t got = 0;
    while (got < n) {
      if (member_done_) {
        fill(2);
        if (pos_ == end_) break;  // the end of the file after a whole member
        if (end_ - pos_ < 2 || in_[pos_] != 0x1f || in_[pos_ + 1] != 0x8b) {
          char found[64];
          std::snprintf(found, sizeof found, "0x%02X%s", in_[pos_], end_ - pos_ >= 2 ? " ..." : "");
          throw DataError(path_ + ": trailing bytes after the gzip data: expected the end of the file or another " +
                          "gzip member (0x1F 0x8B) at byte " + std::to_string(consumed_) + ", found " + found);
        }
        inflateReset(&z_);
        member_done_ = false;
      }
      fill(1);
      z_.next_in = in_.data() + pos_;
      z_.avail_in = uInt(end_ - pos_);
      z_.next_out = buf + got;
      z_.avail_out = uInt(std::min<size_t>(n - got, size_t(1) << 30));
      const uInt in_before = z_.avail_in, out_before = z_.avail_out;
      const int r = inflate(&z_, Z_NO_FLUSH);
      pos_ += in_before - z_.avail_in;
      consumed_ += in_before - z_.avail_in;
      got += out_before - z_.avail_out;
      if (r == Z_STREAM_END) {
        member_done_ = true;
      } else if (r == Z_BUF_ERROR || (r == Z_OK && in_before == z_.avail_in && out_before == z_.avail_out)) {
        if (eof_ && pos_ == end_) corrupt(what, "unexpected end of file");
      } else if (r != Z_OK) {
        corrupt(what, z_.msg != nullptr ? z_.msg : "error " + std::to_string(r));
      }
    }
    return got;
  }

  std::string path_;
  std::unique_ptr<std::FILE, FileClose> f_;
  std::vector<uint8_t> in_;
  size_t pos_ = 0, end_ = 0;
  uint64_t consumed_ = 0;  // compressed bytes inflate has taken
  bool eof_ = false, gzip_ = false, z_live_ = false, member_done_ = false;
  z_stream z_{};
};

}  // namespace

IdxArray read_idx(const std::string& path, int expected_ndims) {
  if (expected_ndims < 1 || expected_ndims > 255) {
    throw std::invalid_argument("read_idx: expected_ndims must be in [1, 255], got " +
                                std::to_string(expected_ndims));
  }
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw DataError(path + ": file not found");
  if (!fs::is_regular_file(st)) throw DataError(path + ": expected a regular IDX file, found something else");

  DataSource f(path);

  uint8_t magic[4];
  const size_t got_magic = f.read(magic, 4, "the IDX header");
  if (got_magic < 4) {
    throw DataError(path + ": expected a 4-byte IDX magic number, found a file of " +
                    std::to_string(got_magic) + " bytes");
  }
  const uint32_t expected_magic = 0x0800u | uint32_t(expected_ndims);
  const uint32_t found_magic =
      (uint32_t(magic[0]) << 24) | (uint32_t(magic[1]) << 16) | (uint32_t(magic[2]) << 8) | magic[3];
  if (found_magic != expected_magic) {
    std::string why;
    if (magic[0] != 0 || magic[1] != 0) {
      why = "not an IDX file";
    } else if (magic[2] != 0x08) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "element type 0x%02X instead of 0x08 (unsigned byte)", magic[2]);
      why = buf;
    } else {
      why = std::to_string(magic[3]) + " dimensions instead of " + std::to_string(expected_ndims);
    }
    throw DataError(path + ": bad IDX magic number: expected " + hex32(expected_magic) +
                    " (unsigned bytes, " + std::to_string(expected_ndims) + " dimensions), found " +
                    hex32(found_magic) + " (" + why + ")");
  }

  IdxArray out;
  std::vector<uint8_t> raw_dims(size_t(expected_ndims) * 4);
  const size_t got_dims = f.read(raw_dims.data(), raw_dims.size(), "the IDX dimensions");
  if (got_dims < raw_dims.size()) {
    throw DataError(path + ": truncated IDX header: expected " + std::to_string(raw_dims.size()) +
                    " bytes of dimensions after the magic number, found " + std::to_string(got_dims));
  }
  // A size bound far above any real IDX file keeps the product from overflowing.
  constexpr uint64_t kMaxBytes = uint64_t(1) << 40;
  uint64_t want = 1;
  bool too_big = false, has_zero = false;
  for (int i = 0; i < expected_ndims; ++i) {
    const uint8_t* p = &raw_dims[size_t(i) * 4];
    const uint32_t d = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    out.dims.push_back(d);
    if (d == 0) {
      has_zero = true;
    } else if (want > kMaxBytes / d) {
      too_big = true;
    } else {
      want *= d;
    }
  }
  if (has_zero) want = 0;
  if (too_big && !has_zero) {
    throw DataError(path + ": implausible IDX dimensions " + dims_str(out.dims) + ": expected at most " +
                    std::to_string(kMaxBytes) + " bytes of data");
  }

  // Grow with the data actually read rather than trusting the header with one
  // huge allocation (a damaged header can claim terabytes).
  constexpr size_t kChunk = size_t(1) << 20;
  size_t got = 0;
  while (got < want) {
    const size_t step = size_t(std::min<uint64_t>(want - got, std::max<size_t>(kChunk, got)));
    out.data.resize(got + step);
    const size_t r = f.read(out.data.data() + got, step, "the IDX data");
    got += r;
    if (r < step) break;
  }
  out.data.resize(got);
  if (got < want) {
    throw DataError(path + ": truncated IDX data (dimensions " + dims_str(out.dims) + "): expected " +
                    std::to_string(want) + " bytes of data after the header, found " + std::to_string(got));
  }
  // Reading past the end also makes zlib check the gzip trailer (CRC and length).
  uint64_t extra = 0;
  std::vector<uint8_t> scratch(1 << 16);
  for (;;) {
    const size_t r = f.read(scratch.data(), scratch.size(), "past the IDX data");
    extra += r;
    if (r < scratch.size()) break;
  }
  if (extra > 0) {
    throw DataError(path + ": trailing bytes after the IDX data (dimensions " + dims_str(out.dims) +
                    "): expected " + std::to_string(want) + " bytes of data after the header, found " +
                    std::to_string(want + extra));
  }
  return out;
}

namespace {

std::string missing_hint(const std::string& name) {
  if (name == "fashion-mnist") return "install the Debian package dataset-fashion-mnist or pass --data-dir";
  if (name == "mnist") {
    return "pass --data-dir pointing at a directory with the MNIST IDX files (train-images-idx3-ubyte[.gz], "
           "...)";
  }
  return "pass --data-dir";
}

// NAME.gz when it exists (preferred), else NAME; throws naming both when neither does.
std::string pick_file(const fs::path& dir, const std::string& base, const std::string& name) {
  std::error_code ec;
  const fs::path gz = dir / (base + ".gz");
  if (fs::exists(gz, ec)) return gz.string();
  const fs::path raw = dir / base;
  if (fs::exists(raw, ec)) return raw.string();
  throw DataError(name + ": missing file " + gz.string() + " (or " + raw.string() + " uncompressed); " +
                  missing_hint(name));
}

Dataset make_images(const std::string& name, const std::string& images_path, const std::string& labels_path) {
  IdxArray images = read_idx(images_path, 3);
  if (images.dims[1] != uint32_t(kImageSide) || images.dims[2] != uint32_t(kImageSide)) {
    throw DataError(images_path + ": expected " + std::to_string(kImageSide) + "x" +
                    std::to_string(kImageSide) + " images, found " + std::to_string(images.dims[1]) + "x" +
                    std::to_string(images.dims[2]));
  }
  const size_t n = images.dims[0];
  if (n == 0) throw DataError(images_path + ": expected at least one image, found 0");
  IdxArray labels = read_idx(labels_path, 1);
  if (labels.dims[0] != n) {
    throw DataError("image and label counts differ: " + images_path + " holds " + std::to_string(n) +
                    " images but " + labels_path + " holds " + std::to_string(labels.dims[0]) + " labels");
  }
  Dataset d;
  d.name = name;
  d.c = 1;
  d.h = kImageSide;
  d.w = kImageSide;
  d.classes = kFashionClasses;
  d.y.resize(n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t v = labels.data[i];
    if (v >= kFashionClasses) {
      throw DataError(labels_path + ": label at index " + std::to_string(i) + " is " + std::to_string(v) +
                      ", expected a value in [0, " + std::to_string(kFashionClasses) + ")");
    }
    d.y[i] = v;
  }
  d.x.resize(images.data.size());
  const uint8_t* src = images.data.data();
  float* dst = d.x.data();
  for (size_t i = 0, m = images.data.size(); i < m; ++i) dst[i] = float(src[i]) / 255.0f;
  return d;
}

}  // namespace

DataSplit load_mnist_dir(const std::string& dir, const std::string& name) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw DataError(name + ": data directory " + dir +
                    (fs::exists(dir, ec) ? " is not a directory (a file;" : " does not exist (") + " expected a directory holding " +
                    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and " +
                    "t10k-labels-idx1-ubyte.gz); " + missing_hint(name));
  }
  // Resolve all four files first so a missing one is reported before any reading.
  const std::string train_images = pick_file(dir, "train-images-idx3-ubyte", name);
  const std::string train_labels = pick_file(dir, "train-labels-idx1-ubyte", name);
  const std::string test_images = pick_file(dir, "t10k-images-idx3-ubyte", name);
  const std::string test_labels = pick_file(dir, "t10k-labels-idx1-ubyte", name);
  DataSplit split;
  split.train = make_images(name, train_images, train_labels);
  split.test = make_images(name, test_images, test_labels);
  return split;
}

}  // namespace adasync
