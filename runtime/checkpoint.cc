#include "runtime/checkpoint.h"

#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "kernels/context.h"
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
  if (size < 8 + 4 + 8 + 4 + 4)
    throw CheckpointError(what + ": not a checkpoint: expected at least 28 bytes, found " + std::to_string(size));
  if (std::memcmp(data, kMagic, 8) != 0) throw CheckpointError(what + ": not a checkpoint: the magic is not \"ADASYNCK\"");
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
  const uint32_t version = r.get<uint32_t>("the format version");
  if (version != kCheckpointFormat)
    throw CheckpointError(what + ": checkpoint format " + std::to_string(version) + ", expected " +
                          std::to_string(kCheckpointFormat));
  Checkpoint c;
  const uint64_t hlen = r.get<uint64_t>("the header length");
  const unsigned char* h = r.bytes(hlen, "the header");
  try {
    c.header = nlohmann::json::parse(h, h + hlen);
  } catch (const std::exception& e) {
    throw CheckpointError(what + ": damaged checkpoint header: " + e.what());
  }
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

std::string save_checkpoint(const std::string& dir, int64_t version, const Checkpoint& c, int keep) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw UsageError("--checkpoint-dir: cannot create '" + dir + "': " + ec.message());
  const std::string path = (fs::path(dir) / checkpoint_name(version)).string();
  const auto bytes = encode_checkpoint(c);
  write_file_atomic(path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  const auto all = list_checkpoints(dir);
  for (size_t i = size_t(std::max(keep, 1)); i < all.size(); ++i) fs::remove(all[i], ec);
  return path;
}

std::string checkpoint_name(int64_t version) {
  char name[64];
  std::snprintf(name, sizeof name, "ckpt-%012lld.bin", static_cast<long long>(version));
  return name;
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError(path + ": cannot open checkpoint");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_checkpoint(bytes.data(), bytes.size(), path);
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("ckpt-", 0) == 0 && n.size() > 9 && n.substr(n.size() - 4) == ".bin") out.push_back(e.path().string());
  }
  std::sort(out.rbegin(), out.rend());  // zero-padded versions: lexicographic = numeric
  return out;
}

}  // namespace adasync
