#include "runtime/checkpoint.h"

#include <zlib.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernels/context.h"
#include "runtime/input_file.h"
#include "runtime/output.h"

namespace adasync {
namespace fs = std::filesystem;

namespace {
constexpr char kMagic[8] = {'A', 'D', 'A', 'S', 'Y', 'N', 'C', 'K'};

template <typename T>
void put(std::vector<unsigned char>& out, T v) {
  unsigned char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  out.insert(out.end(), b, b + sizeof(T));
}

class Reader {
 public:
  Reader(const unsigned char* d, size_t n, std::string what) : d_(d), n_(n), what_(std::move(what)) {}
  template <typename T>
  T get(const char* field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, d_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  const unsigned char* bytes(uint64_t n, const char* field) {
    need(n, field);
    const unsigned char* p = d_ + pos_;
    pos_ += size_t(n);
    return p;
  }
  size_t pos() const { return pos_; }

 private:
  void need(uint64_t n, const char* field) {
    if (n > n_ - pos_)
      throw CheckpointError(what_ + ": truncated checkpoint: expected " + std::to_string(n) + " more bytes for " + field +
                            " at offset " + std::to_string(pos_) + ", found " + std::to_string(n_ - pos_));
  }
  const unsigned char* d_;
  size_t n_, pos_ = 0;
  std::string what_;
};

constexpr size_t kPrefixBytes = 8 + 4 + 8;  // magic, format version, header length
constexpr size_t kMinBytes = kPrefixBytes + 4 + 4;  // and the section count and the CRC

void check_magic(const unsigned char* p, const std::string& what) {
  if (std::memcmp(p, kMagic, 8) != 0) throw CheckpointError(what + ": not a checkpoint: the magic is not \"ADASYNCK\"");
}

void check_format(uint32_t format, const std::string& what) {
  if (format != kCheckpointFormat)
    throw CheckpointError(what + ": checkpoint format " + std::to_string(format) + ", expected " +
                          std::to_string(kCheckpointFormat));
}

nlohmann::json parse_header(const unsigned char* h, uint64_t n, const std::string& what) {
  try {
    return nlohmann::json::parse(h, h + n);
  } catch (const std::exception& e) {
    throw CheckpointError(what + ": damaged checkpoint header: " + e.what());
  }
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char ch) { return ch >= '0' && ch <= '9'; });
}

bool has_affixes(const std::string& n, const std::string& prefix, const std::string& suffix) {
  return n.size() >= prefix.size() + suffix.size() && n.compare(0, prefix.size(), prefix) == 0 &&
         n.compare(n.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

void Checkpoint::put_floats(const std::string& name, const float* p, size_t n) {
  auto& b = blobs[name];
  b.resize(n * sizeof(float));
  if (n) std::memcpy(b.data(), p, b.size());
}

std::vector<float> Checkpoint::floats(const std::string& name) const {
  auto it = blobs.find(name);
  if (it == blobs.end()) throw CheckpointError("checkpoint has no '" + name + "' section");
  if (it->second.size() % sizeof(float) != 0)
    throw CheckpointError("checkpoint section '" + name + "' holds " + std::to_string(it->second.size()) +
                          " bytes, not a whole number of floats");
  std::vector<float> v(it->second.size() / sizeof(float));
  if (!v.empty()) std::memcpy(v.data(), it->second.data(), it->second.size());
  return v;
}

void Checkpoint::put_u64s(const std::string& name, const std::vector<uint64_t>& v) {
  auto& b = blobs[name];
  b.resize(v.size() * sizeof(uint64_t));
  if (!v.empty()) std::memcpy(b.data(), v.data(), b.size());
}

std::vector<uint64_t> Checkpoint::u64s(const std::string& name) const {
  auto it = blobs.find(name);
  if (it == blobs.end()) throw CheckpointError("checkpoint has no '" + name + "' section");
  if (it->second.size() % sizeof(uint64_t) != 0)
    throw CheckpointError("checkpoint section '" + name + "' is not a whole number of 64-bit words");
  std::vector<uint64_t> v(it->second.size() / sizeof(uint64_t));
  if (!v.empty()) std::memcpy(v.data(), it->second.data(), it->second.size());
  return v;
}

std::vector<unsigned char> encode_checkpoint(const Checkpoint& c) {
  std::vector<unsigned char> out(kMagic, kMagic + 8);
  put<uint32_t>(out, kCheckpointFormat);
  const std::string h = c.header.dump();
  put<uint64_t>(out, h.size());
  out.insert(out.end(), h.begin(), h.end());
  put<uint32_t>(out, uint32_t(c.blobs.size()));
  for (const auto& [name, bytes] : c.blobs) {
    put<uint32_t>(out, uint32_t(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    put<uint64_t>(out, bytes.size());
    out.insert(out.end(), bytes.begin(), bytes.end());
  }
  const uint32_t crc = uint32_t(crc32_z(0L, out.data(), out.size()));
  put<uint32_t>(out, crc);
  return out;
}

Checkpoint decode_checkpoint(const unsigned char* data, size_t size, const std::string& what) {
  if (size < kMinBytes)
    throw CheckpointError(what + ": not a checkpoint: expected at least " + std::to_string(kMinBytes) +
                          " bytes, found " + std::to_string(size));
  check_magic(data, what);
  uint32_t stored = 0;
  std::memcpy(&stored, data + size - 4, 4);
  const uint32_t crc = uint32_t(crc32_z(0L, data, size - 4));
  if (stored != crc) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "bad checksum: expected %08x (stored), found %08x (computed)", stored, crc);
    throw CheckpointError(what + ": damaged checkpoint: " + buf);
  }
  Reader r(data, size - 4, what);
  r.bytes(8, "the magic");
  check_format(r.get<uint32_t>("the format version"), what);
  Checkpoint c;
  const uint64_t hlen = r.get<uint64_t>("the header length");
  c.header = parse_header(r.bytes(hlen, "the header"), hlen, what);
  const uint32_t count = r.get<uint32_t>("the section count");
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t nlen = r.get<uint32_t>("a section name length");
    const unsigned char* name = r.bytes(nlen, "a section name");
    const uint64_t blen = r.get<uint64_t>("a section length");
    const unsigned char* bytes = r.bytes(blen, "a section");
    c.blobs[std::string(reinterpret_cast<const char*>(name), nlen)].assign(bytes, bytes + blen);
  }
  if (r.pos() != size - 4)
    throw CheckpointError(what + ": " + std::to_string(size - 4 - r.pos()) + " unexpected bytes after the last section");
  return c;
}

std::string save_checkpoint(const std::string& dir, int64_t version, const Checkpoint& c, int keep,
                            const std::string& what) {
  // The listing trusts a file only when its name and the version inside agree.
  const auto hv = c.header.is_object() ? c.header.find("version") : c.header.end();
  EXPECTS(hv != c.header.end() && hv->is_number_integer() && hv->get<int64_t>() == version,
          "the header's \"version\" is " << (hv == c.header.end() ? std::string("missing") : hv->dump())
                                          << ", saving version " << version);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UsageError(what + ": cannot create '" + dir + "': " + ec.message());
  const std::string path = (fs::path(dir) / checkpoint_name(version)).string();
  const auto bytes = encode_checkpoint(c);
  write_file_atomic(path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()), what);
  // The file just written is always kept (a damaged one of a higher version
  // must not push it out); then the newest whole others of this run, up to `keep`.
  const nlohmann::json run = c.header.is_object() ? c.header.value("run_id", nlohmann::json()) : nlohmann::json();
  size_t kept = 1;
  for (const auto& [v, f] : list_valid_checkpoints(dir)) {
    if (f == path) continue;
    try {
      if (read_checkpoint_header(f).value("run_id", nlohmann::json()) != run) continue;  // another run's: left alone
    } catch (const CheckpointError&) {
      continue;
    }
    bool whole = kept < size_t(std::max(keep, 1));
    if (whole) {
      try {
        load_checkpoint(f);  // counted only when a resume could use it: CRC and sections whole
      } catch (const CheckpointError&) {
        whole = false;  // this run's, damaged: never counted, and of no use to keep
      }
    }
    if (whole) {
      ++kept;
      continue;
    }
    fs::remove(f, ec);
  }
  return path;
}

std::string checkpoint_name(int64_t version) {
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%012lld.bin", static_cast<long long>(version));
  return name;
}

Checkpoint load_checkpoint(const std::string& path) {
  read_checkpoint_header(path);  // a regular file, its magic, format and header first
  uint64_t size = 0;
  int fd = -1;
  try {
    fd = open_regular_input(path, path, &size);
  } catch (const UsageError& e) {
    throw CheckpointError(e.what());
  }
  std::vector<unsigned char> bytes(size_t(size), 0);
  for (size_t at = 0; at < bytes.size();) {
    const ssize_t got = ::pread(fd, bytes.data() + at, bytes.size() - at, off_t(at));
    if (got <= 0) {
      ::close(fd);
      throw CheckpointError(path + ": cannot read byte " + std::to_string(at) + " of " + std::to_string(size));
    }
    at += size_t(got);
  }
  ::close(fd);
  return decode_checkpoint(bytes.data(), bytes.size(), path);
}

nlohmann::json read_checkpoint_header(const std::string& path) {
  try {
    uint64_t unused = 0;
    ::close(open_regular_input(path, path, &unused));  // never a FIFO's endless wait or a device's endless bytes
  } catch (const UsageError& e) {
    throw CheckpointError(e.what());
  }
  std::ifstream in(path, std::ios::binary);
  std::error_code ec;
  const uint64_t size = fs::file_size(path, ec);
  if (!in || ec) throw CheckpointError(path + ": cannot open checkpoint");
  unsigned char prefix[kPrefixBytes];
  in.read(reinterpret_cast<char*>(prefix), kPrefixBytes);
  if (size < kMinBytes || size_t(in.gcount()) < kPrefixBytes)
    throw CheckpointError(path + ": not a checkpoint: expected at least " + std::to_string(kMinBytes) +
                          " bytes, found " + std::to_string(size));
  check_magic(prefix, path);
  uint32_t format = 0;
  uint64_t hlen = 0;
  std::memcpy(&format, prefix + 8, 4);
  std::memcpy(&hlen, prefix + 12, 8);
  check_format(format, path);
  if (hlen > size - kMinBytes)
    throw CheckpointError(path + ": truncated checkpoint: expected " + std::to_string(hlen) +
                          " bytes of header at offset " + std::to_string(kPrefixBytes) + ", found " +
                          std::to_string(size - kMinBytes));
  std::vector<unsigned char> h(static_cast<size_t>(hlen));
  in.read(reinterpret_cast<char*>(h.data()), std::streamsize(hlen));
  if (uint64_t(in.gcount()) != hlen) throw CheckpointError(path + ": cannot read the checkpoint header");
  return parse_header(h.data(), hlen, path);
}

CheckpointListing scan_checkpoints(const std::string& dir) {
  CheckpointListing out;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (!has_affixes(n, "ckpt-", ".bin")) continue;
    const std::string path = it->path().string();
    std::error_code sec;
    if (!fs::is_regular_file(it->symlink_status(sec))) {
      out.ignored.push_back(path + ": not a regular file");
      continue;
    }
    nlohmann::json h;
    try {
      h = read_checkpoint_header(path);
    } catch (const CheckpointError& e) {
      out.ignored.push_back(e.what());
      continue;
    }
    const auto v = h.is_object() ? h.find("version") : h.end();
    if (v == h.end() || !v->is_number_integer() || v->get<int64_t>() < 0) {
      out.ignored.push_back(path + ": expected a non-negative integer \"version\" in the header, found " +
                            (v == h.end() ? std::string("none") : v->dump()));
      continue;
    }
    const int64_t version = v->get<int64_t>();
    if (checkpoint_name(version) != n) {
      out.ignored.push_back(path + ": holds version " + std::to_string(version) + ", which would be named " +
                            checkpoint_name(version) + " (a copied or renamed checkpoint: left alone)");
      continue;
    }
    out.valid.emplace_back(version, path);
  }
  std::sort(out.valid.begin(), out.valid.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::sort(out.ignored.begin(), out.ignored.end());
  return out;
}

std::vector<std::pair<int64_t, std::string>> list_valid_checkpoints(const std::string& dir) {
  return scan_checkpoints(dir).valid;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& [v, path] : list_valid_checkpoints(dir)) out.push_back(std::move(path));
  return out;
}

std::string new_run_id() {
  std::random_device rd;
  uint64_t x = (uint64_t(rd()) << 32) ^ rd();
  x ^= uint64_t(::getpid()) * 0x9e3779b97f4a7c15ULL;
  x ^= uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) * 0xbf58476d1ce4e5b9ULL;
  char b[20];
  std::snprintf(b, sizeof b, "%016llx", static_cast<unsigned long long>(x));
  return b;
}

int remove_stale_temporaries(const std::string& dir, const std::string& what) {
  int removed = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) {
    const std::string n = it->path().filename().string();
    // write_file_atomic(P) writes P.tmp.XXXXXX (before, P.tmp): ckpt-<digits>.bin.tmp[.XXXXXX].
    const std::string prefix = "ckpt-", suffix = ".bin.tmp";
    const size_t cut = n.find(suffix);
    if (cut == std::string::npos || n.rfind(prefix, 0) != 0 || !all_digits(n.substr(prefix.size(), cut - prefix.size())))
      continue;
    if (cut + suffix.size() != n.size() && !is_temporary_of(n, n.substr(0, cut + 4))) continue;
    std::error_code sec;
    if (!fs::is_regular_file(it->symlink_status(sec))) continue;
    if (fs::remove(it->path(), sec)) ++removed;
    if (sec)
      throw UsageError(what + ": cannot remove the stale temporary '" + it->path().string() +
                       "': " + sec.message());
  }
  return removed;
}

}  // namespace adasync
