// safetensors: a model's parameters round-trip bit for bit with their
// metadata; the layout is the format's; the reader refuses every kind of
// damage with one message naming the file, what it expected and what it found.
#include <gtest/gtest.h>

#include <cstring>

#include "models/safetensors.h"

namespace adasync {
namespace {

// A file from a header text and a data section.
std::string file_of(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(&out[0], &n, 8);
  return out + header + data;
}

SafetensorsFile decode(const std::string& bytes) {
  return decode_safetensors(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), "m.safetensors");
}

TEST(Safetensors, AModelRoundTripsWithItsMetadata) {
  const Shape in{1, 12, 12};
  const std::string arch = "conv3x3-4,relu,pool2,fc8,relu,fc";
  const auto tensors = model_param_tensors(arch, in, 3);
  auto ctx = Context::cpu();
  Model<float> m(*ctx, arch, in, 3, 1);
  std::vector<float> p(m.num_params());
  m.init_params(p.data(), 5);
  const std::map<std::string, std::string> meta = {{"model", arch}, {"normalization_mean", "[0.5]"}};
  const std::string bytes = encode_safetensors(tensors, p.data(), meta);

  uint64_t hlen = 0;
  std::memcpy(&hlen, bytes.data(), 8);
  EXPECT_EQ((8 + hlen) % 8, 0u);  // data 8-byte aligned
  EXPECT_EQ(bytes.size(), 8 + hlen + 4 * p.size());
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + hlen, p.data(), 4 * p.size()), 0);  // little-endian row-major, in order

  const SafetensorsFile f = decode(bytes);
  EXPECT_EQ(f.metadata, meta);
  ASSERT_EQ(f.tensors.size(), 6u);
  EXPECT_EQ(f.tensors[0].name, "conv1.weight");
  EXPECT_EQ(f.tensors[0].shape, (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(f.tensors[2].name, "fc1.weight");
  EXPECT_EQ(f.tensors[2].shape, (std::vector<int64_t>{8, 144}));
  EXPECT_EQ(f.tensors[5].name, "fc2.bias");
  EXPECT_EQ(read_model_params(f, tensors, "m"), p);
}

// Batch-norm buffers travel with the parameters under PyTorch's names; the
// counter is an I64 scalar, as PyTorch's num_batches_tracked.
TEST(Safetensors, BatchNormBuffersRoundTripWithAnIntegerCounter) {
  const Shape in{3, 8, 8};
  const std::string arch = "conv3x3-4,bn,relu,res8-s2,gap,fc";
  const auto tensors = model_param_tensors(arch, in, 3);
  auto ctx = Context::cpu();
  Model<float> m(*ctx, arch, in, 3, 1);
  std::vector<float> p(m.num_params());
  m.init_params(p.data(), 5);
  for (const auto& t : tensors)
    if (t.kind == TensorKind::Count) p[t.offset] = 1234;
    else if (t.kind == TensorKind::RunningStat) p[t.offset] = 0.25f;
  const SafetensorsFile f = decode(encode_safetensors(tensors, p.data(), {}));
  const SafetensorsEntry* nbt = f.find("bn1.num_batches_tracked");
  ASSERT_NE(nbt, nullptr);
  EXPECT_EQ(nbt->dtype, "I64");
  EXPECT_TRUE(nbt->shape.empty());
  int64_t v = 0;
  std::memcpy(&v, f.data.data() + nbt->begin, 8);
  EXPECT_EQ(v, 1234);
  ASSERT_NE(f.find("layer1.0.bn2.running_var"), nullptr);
  EXPECT_EQ(f.find("layer1.0.bn2.running_var")->dtype, "F32");
  EXPECT_EQ(read_model_params(f, tensors, "m"), p);
}

struct BadFile {
  const char* label;
  std::string bytes;
  std::string message;  // after "m.safetensors: "
};

void PrintTo(const BadFile& b, std::ostream* os) { *os << b.label; }  // CTest's name for the case

class BadFiles : public ::testing::TestWithParam<BadFile> {};

TEST_P(BadFiles, AreOneClearError) {
  try {
    decode(GetParam().bytes);
    FAIL() << "no error";
  } catch (const SafetensorsError& e) {
    const std::string want = "m.safetensors: " + GetParam().message;
    if (want.back() == ' ') EXPECT_EQ(std::string(e.what()).substr(0, want.size()), want);
    else EXPECT_EQ(std::string(e.what()), want);
  }
}

const std::string k8(8, 'x');  // data for two F32 values

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, const std::string& off) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":" + off + "}";
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadFiles,
    ::testing::Values(
        BadFile{"short", "abc", "not a safetensors file: expected at least 8 bytes (the header length), found 3"},
        BadFile{"length past end", file_of("{}", "").substr(0, 9),
                "header length 2 runs past the end of the file (1 bytes follow the length field)"},
        BadFile{"not json", file_of("{\"a\":", ""),
                "header is not valid JSON: "},  // then the parser's own words
        BadFile{"array", file_of("[1,2]", ""), "header: expected a JSON object, found array"},
        BadFile{"deep", file_of(std::string(100, '[') + std::string(100, ']'), ""),
                "header nests deeper than 64 levels"},
        BadFile{"metadata not object", file_of("{\"__metadata__\":[]}", ""),
                "__metadata__: expected an object of strings, found array"},
        BadFile{"metadata value", file_of("{\"__metadata__\":{\"epochs\":3}}", ""),
                "__metadata__ 'epochs': expected a string, found number"},
        BadFile{"entry not object", file_of("{\"w\":3}", ""), "tensor 'w': expected an object, found number"},
        BadFile{"extra key", file_of("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"grad\":1}}", k8),
                "tensor 'w': unexpected key 'grad' (expected dtype, shape and data_offsets)"},
        BadFile{"no dtype", file_of("{\"w\":{\"shape\":[2],\"data_offsets\":[0,8]}}", k8), "tensor 'w': expected a dtype string"},
        BadFile{"bad dtype", file_of("{" + entry("w", "F31", "[2]", "[0,8]") + "}", k8), "tensor 'w': unknown dtype 'F31'"},
        BadFile{"no shape", file_of("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", k8), "tensor 'w': expected a shape array"},
        BadFile{"negative dim", file_of("{" + entry("w", "F32", "[-2]", "[0,8]") + "}", k8),
                "tensor 'w': shape [-2]: expected non-negative integers"},
        BadFile{"huge shape", file_of("{" + entry("w", "F32", "[4294967296,4294967296]", "[0,8]") + "}", k8),
                "tensor 'w': shape [4294967296,4294967296] is larger than any file"},
        BadFile{"bad offsets", file_of("{" + entry("w", "F32", "[2]", "[0]") + "}", k8),
                "tensor 'w': expected data_offsets [begin, end] of non-negative integers, found [0]"},
        BadFile{"reversed offsets", file_of("{" + entry("w", "F32", "[0]", "[8,0]") + "}", k8),
                "tensor 'w': data_offsets [8,0] end before they begin"},
        BadFile{"span vs shape", file_of("{" + entry("w", "F32", "[3]", "[0,8]") + "}", k8),
                "tensor 'w': shape [3] of F32 needs 12 bytes, data_offsets [0,8] span 8"},
        BadFile{"past data", file_of("{" + entry("w", "F32", "[2]", "[4,12]") + "}", k8),
                "tensor 'w': data_offsets [4,12] end past the data section, which holds 8 bytes"},
        BadFile{"gap", file_of("{" + entry("w", "F32", "[1]", "[4,8]") + "}", k8),
                "bytes [0, 4) of the data section belong to no tensor (expected 'w' to start at 0)"},
        BadFile{"overlap", file_of("{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F32", "[1]", "[4,8]") + "}", k8),
                "tensor 'b' at [4, 8) overlaps 'a' at [0, 8)"},
        BadFile{"trailing", file_of("{" + entry("w", "F32", "[1]", "[0,4]") + "}", k8),
                "the data section holds 8 bytes, the tensors cover 4 (expected them to cover it exactly)"},
        BadFile{"empty name", file_of("{" + entry("", "F32", "[2]", "[0,8]") + "}", k8), "a tensor has an empty name"}),
    [](const auto& info) {
      std::string s = info.param.label;
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// Against a model: linear on 1x2x2 inputs, 2 classes (fc1.weight [2, 4], fc1.bias [2]).
struct BadModelFile {
  const char* label;
  std::string header;
  std::string message;
};

void PrintTo(const BadModelFile& b, std::ostream* os) { *os << b.label; }

class BadModelFiles : public ::testing::TestWithParam<BadModelFile> {};

TEST_P(BadModelFiles, AreOneClearError) {
  const auto tensors = model_param_tensors("linear", Shape{1, 2, 2}, 2);
  const std::string h = GetParam().header;
  // Size the data section from the header's own offsets (the file is otherwise valid).
  const size_t end = h.rfind(']'), comma = h.rfind(',', end);
  const std::string bytes = file_of(h, std::string(std::stoul(h.substr(comma + 1, end - comma - 1)), '\0'));
  try {
    read_model_params(decode(bytes), tensors, "--init-from m.safetensors");
    FAIL() << "no error";
  } catch (const SafetensorsError& e) {
    EXPECT_EQ(std::string(e.what()), "--init-from m.safetensors: " + GetParam().message);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadModelFiles,
    ::testing::Values(
        BadModelFile{"missing", "{" + entry("fc1.weight", "F32", "[2,4]", "[0,32]") + "}",
                     "no tensor 'fc1.bias' (expected shape [2]); the file holds: fc1.weight"},
        BadModelFile{"dtype", "{" + entry("fc1.weight", "F64", "[2,4]", "[0,64]") + "," +
                                  entry("fc1.bias", "F32", "[2]", "[64,72]") + "}",
                     "tensor 'fc1.weight': expected dtype F32, found F64"},
        BadModelFile{"shape", "{" + entry("fc1.weight", "F32", "[4,2]", "[0,32]") + "," +
                                  entry("fc1.bias", "F32", "[2]", "[32,40]") + "}",
                     "tensor 'fc1.weight': expected shape [2, 4], found [4, 2]"},
        BadModelFile{"flat", "{" + entry("fc1.weight", "F32", "[8]", "[0,32]") + "," +
                                 entry("fc1.bias", "F32", "[2]", "[32,40]") + "}",
                     "tensor 'fc1.weight': expected shape [2, 4], found [8]"},
        BadModelFile{"extra", "{" + entry("fc1.weight", "F32", "[2,4]", "[0,32]") + "," +
                                  entry("fc1.bias", "F32", "[2]", "[32,40]") + "," +
                                  entry("fc2.weight", "F32", "[1]", "[40,44]") + "}",
                     "unexpected tensor 'fc2.weight' (the model holds: fc1.weight, fc1.bias)"}),
    [](const auto& info) { return std::string(info.param.label); });

TEST(Safetensors, TensorsMayComeInAnyHeaderOrderAndFileOrder) {
  // Bias first in the data section, keys in another order: still the model's buffer.
  const std::string h = "{\"__metadata__\":{\"format\":\"pt\"}," + entry("fc1.weight", "F32", "[2,4]", "[8,40]") + "," +
                        entry("fc1.bias", "F32", "[2]", "[0,8]") + "}";
  std::string data(40, '\0');
  const float b[2] = {1, 2}, w[8] = {3, 4, 5, 6, 7, 8, 9, 10};
  std::memcpy(&data[0], b, 8);
  std::memcpy(&data[8], w, 32);
  const auto p = read_model_params(decode(file_of(h, data)), model_param_tensors("linear", Shape{1, 2, 2}, 2), "m");
  EXPECT_EQ(p, (std::vector<float>{3, 4, 5, 6, 7, 8, 9, 10, 1, 2}));
}

}  // namespace
}  // namespace adasync
