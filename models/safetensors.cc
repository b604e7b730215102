#include "models/safetensors.h"

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors I/O copies floats as they lie in memory: little-endian hosts only"
#endif

namespace adasync {

namespace {

// The format's own bound on the header (safetensors' reference reader).
constexpr uint64_t kMaxHeader = 100u * 1000u * 1000u;
// Deeper nesting has no meaning here; refusing it keeps the JSON parser's
// and destructor's recursion shallow on hostile input.
constexpr int kMaxDepth = 64;

size_t dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U64", 8},  {"U32", 4},     {"U16", 2},     {"U8", 1},  {"BOOL", 1}};
  auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

int json_depth(const unsigned char* p, size_t n) {
  int depth = 0, worst = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < n; ++i) {
    const unsigned char ch = p[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (ch == '\\') escaped = true;
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '{' || ch == '[') {
      worst = std::max(worst, ++depth);
    } else if (ch == '}' || ch == ']') {
      --depth;
    }
  }
  return worst;
}

std::string range_string(uint64_t a, uint64_t b) { return "[" + std::to_string(a) + ", " + std::to_string(b) + ")"; }

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string encode_safetensors(const std::vector<ParamTensor>& tensors, const float* params,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    const bool count = t.kind == TensorKind::Count;
    const uint64_t bytes = uint64_t(t.count) * (count ? sizeof(int64_t) : sizeof(float));
    h[t.name] = {{"dtype", count ? "I64" : "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(&out[0], &n, 8);
  out += header;
  out.reserve(out.size() + offset);
  for (const auto& t : tensors) {
    if (t.kind != TensorKind::Count) {
      out.append(reinterpret_cast<const char*>(params + t.offset), t.count * sizeof(float));
      continue;
    }
    for (size_t i = 0; i < t.count; ++i) {  // counters are whole numbers kept in the float buffer
      const int64_t v = int64_t(params[t.offset + i]);
      out.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
  }
  return out;
}

uint64_t safetensors_header_end(const unsigned char* bytes, size_t avail) {
  if (avail < 8) return 8;
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes, 8);
  return hlen > kMaxHeader ? 8 : 8 + hlen;
}

SafetensorsFile decode_safetensors(const unsigned char* bytes, size_t size, const std::string& what) {
  return decode_safetensors_header(bytes, size, size, what, true);
}

SafetensorsFile decode_safetensors_header(const unsigned char* bytes, size_t avail, uint64_t size,
                                          const std::string& what, bool with_data) {
  auto fail = [&](const std::string& msg) -> void { throw SafetensorsError(what + ": " + msg); };
  if (size < 8)
    fail("not a safetensors file: expected at least 8 bytes (the header length), found " + std::to_string(size));
  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes, 8);
  if (hlen > size - 8)
    fail("header length " + std::to_string(hlen) + " runs past the end of the file (" + std::to_string(size - 8) +
         " bytes follow the length field)");
  if (hlen > kMaxHeader)
    fail("header length " + std::to_string(hlen) + " exceeds the format's limit of " + std::to_string(kMaxHeader));
  EXPECTS(avail >= 8 + hlen && (!with_data || avail == size), "decode_safetensors_header: " << avail << " bytes given");
  const unsigned char* hp = bytes + 8;
  if (json_depth(hp, size_t(hlen)) > kMaxDepth)
    fail("header nests deeper than " + std::to_string(kMaxDepth) + " levels");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(hp, hp + hlen);
  } catch (const std::exception& e) {
    fail(std::string("header is not valid JSON: ") + e.what());
  }
  if (!h.is_object()) fail(std::string("header: expected a JSON object, found ") + h.type_name());

  SafetensorsFile f;
  const uint64_t data_size = size - 8 - hlen;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(std::string("__metadata__: expected an object of strings, found ") + v.type_name());
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          fail("__metadata__ '" + m.key() + "': expected a string, found " + m.value().type_name());
        f.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (name.empty()) fail("a tensor has an empty name");
    if (!v.is_object()) fail(where + ": expected an object, found " + v.type_name());
    for (auto k = v.begin(); k != v.end(); ++k)
      if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
        fail(where + ": unexpected key '" + k.key() + "' (expected dtype, shape and data_offsets)");
    SafetensorsEntry e;
    e.name = name;
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where + ": expected a dtype string");
    e.dtype = v["dtype"].get<std::string>();
    const size_t esize = dtype_size(e.dtype);
    if (esize == 0) fail(where + ": unknown dtype '" + e.dtype + "'");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where + ": expected a shape array");
    uint64_t count = 1;
    bool overflow = false;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(where + ": shape " + v["shape"].dump() + ": expected non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      e.shape.push_back(int64_t(std::min<uint64_t>(dim, uint64_t(INT64_MAX))));
      if (dim != 0 && count > UINT64_MAX / dim / esize) overflow = true;
      count *= dim;
    }
    if (overflow) fail(where + ": shape " + v["shape"].dump() + " is larger than any file");
    const uint64_t nbytes = count * esize;
    const auto& off = v.contains("data_offsets") ? v["data_offsets"] : nlohmann::json();
    if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(where + ": expected data_offsets [begin, end] of non-negative integers, found " + off.dump());
    e.begin = off[0].get<uint64_t>();
    e.end = off[1].get<uint64_t>();
    if (e.end < e.begin) fail(where + ": data_offsets " + off.dump() + " end before they begin");
    if (e.end - e.begin != nbytes)
      fail(where + ": shape " + shape_string(e.shape) + " of " + e.dtype + " needs " + std::to_string(nbytes) +
           " bytes, data_offsets " + off.dump() + " span " + std::to_string(e.end - e.begin));
    if (e.end > data_size)
      fail(where + ": data_offsets " + off.dump() + " end past the data section, which holds " +
           std::to_string(data_size) + " bytes");
    f.tensors.push_back(std::move(e));
  }
  std::sort(f.tensors.begin(), f.tensors.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const auto& t = f.tensors[i];
    if (t.begin > covered)
      fail("bytes " + range_string(covered, t.begin) + " of the data section belong to no tensor (expected '" +
           t.name + "' to start at " + std::to_string(covered) + ")");
    if (t.begin < covered)
      fail("tensor '" + t.name + "' at " + range_string(t.begin, t.end) + " overlaps '" + f.tensors[i - 1].name +
           "' at " + range_string(f.tensors[i - 1].begin, f.tensors[i - 1].end));
    covered = t.end;
  }
  if (covered != data_size)
    fail("the data section holds " + std::to_string(data_size) + " bytes, the tensors cover " +
         std::to_string(covered) + " (expected them to cover it exactly)");
  if (with_data) f.data.assign(bytes + 8 + hlen, bytes + size);
  return f;
}

SafetensorsFile read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw SafetensorsError(path + ": cannot open the file");
  std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_safetensors(bytes.data(), bytes.size(), path);
}

std::vector<float> read_model_params(const SafetensorsFile& f, const std::vector<ParamTensor>& expected,
                                     const std::string& what) {
  check_model_tensors(f, expected, what);
  size_t total = 0;
  for (const auto& t : expected) total = std::max(total, t.offset + t.count);
  std::vector<float> params(total);
  for (const auto& t : expected) {
    const SafetensorsEntry* e = f.find(t.name);
    if (t.kind != TensorKind::Count) {
      if (t.count) std::memcpy(params.data() + t.offset, f.data.data() + e->begin, t.count * sizeof(float));
      continue;
    }
    for (size_t i = 0; i < t.count; ++i) {
      int64_t v = 0;
      std::memcpy(&v, f.data.data() + e->begin + i * sizeof v, sizeof v);
      if (v < 0 || v > (int64_t(1) << 24))  // exact in the float buffer
        throw SafetensorsError(what + ": tensor '" + t.name + "': expected a count in [0, 2^24], found " +
                               std::to_string(v));
      params[t.offset + i] = float(v);
    }
  }
  return params;
}

void check_model_tensors(const SafetensorsFile& f, const std::vector<ParamTensor>& expected, const std::string& what) {
  auto names = [](const auto& list) {
    std::string s;
    size_t shown = 0;
    for (const auto& t : list) {
      if (++shown > 12) return s + ", ...";
      s += (s.empty() ? "" : ", ") + t.name;
    }
    return s.empty() ? std::string("none") : s;
  };
  for (const auto& t : expected) {
    const SafetensorsEntry* e = f.find(t.name);
    if (e == nullptr)
      throw SafetensorsError(what + ": no tensor '" + t.name + "' (expected shape " + shape_string(t.shape) +
                             "); the file holds: " + names(f.tensors));
    const bool count = t.kind == TensorKind::Count;
    const char* dtype = count ? "I64" : "F32";
    if (e->dtype != dtype)
      throw SafetensorsError(what + ": tensor '" + t.name + "': expected dtype " + dtype + ", found " + e->dtype);
    if (e->shape != t.shape)
      throw SafetensorsError(what + ": tensor '" + t.name + "': expected shape " + shape_string(t.shape) +
                             ", found " + shape_string(e->shape));
  }
  for (const auto& e : f.tensors) {
    bool known = false;
    for (const auto& t : expected) known = known || t.name == e.name;
    if (!known)
      throw SafetensorsError(what + ": unexpected tensor '" + e.name + "' (the model holds: " + names(expected) + ")");
  }
}

}  // namespace adasync
