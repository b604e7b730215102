#include "models/describe.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "kernels/context.h"

namespace adasync {

namespace {

constexpr const char* kGrammar = "convKxK-C[-pP][-sS], poolN[-sS], relu, fcN, fc, bn, gap, dropP or resC[-sS][-proj]";
constexpr int kMaxWidth = 1 << 20;  // channels and outputs
constexpr int kMaxWindow = 1024;    // kernels, strides, padding

std::string zoo_names() {
  std::string s;
  for (const auto& z : zoo_descriptions()) s += (s.empty() ? "" : ", ") + z.first;
  return s;
}

std::string trim(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string cur;
  for (char ch : s) {
    if (ch == sep) {
      out.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  out.push_back(cur);
  return out;
}

// Reports faults of one description as "--model '<arg>': <where>: ...".
struct Where {
  std::string arg, where;
  [[noreturn]] void fail(const std::string& what) const {
    throw UsageError("--model '" + arg + "': " + where + ": " + what);
  }
  // A decimal integer in [lo, hi], nothing else.
  int number(const std::string& digits, const char* what, int lo, int hi) const {
    bool ok = !digits.empty() && digits.size() <= 9;
    for (char ch : digits) ok = ok && std::isdigit(static_cast<unsigned char>(ch));
    const long v = ok ? std::stol(digits) : -1;
    if (!ok || v < lo || v > hi)
      fail("expected " + std::string(what) + " in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], found '" +
           digits + "'");
    return int(v);
  }
};

LayerSpec parse_token(const std::string& tok, const Where& at) {
  LayerSpec l;
  if (tok.empty()) at.fail("empty layer (expected " + std::string(kGrammar) + ")");
  if (tok == "relu") return l;
  if (tok == "bn") {
    l.kind = LayerSpec::Kind::Bn;
    return l;
  }
  if (tok == "gap") {
    l.kind = LayerSpec::Kind::Gap;
    return l;
  }
  if (tok.rfind("drop", 0) == 0) {
    l.kind = LayerSpec::Kind::Dropout;
    l.percent = at.number(tok.substr(4), "dropout percent", 0, 99);
    return l;
  }
  if (tok.rfind("res", 0) == 0) {
    l.kind = LayerSpec::Kind::Res;
    const std::vector<std::string> parts = split(tok, '-');
    l.out = at.number(parts[0].substr(3), "block output channels", 1, kMaxWidth);
    bool seen_s = false;
    for (size_t i = 1; i < parts.size(); ++i) {
      if (parts[i] == "proj" && !l.projection) {
        l.projection = true;
      } else if (!parts[i].empty() && parts[i][0] == 's' && !seen_s) {
        l.stride = at.number(parts[i].substr(1), "stride", 1, kMaxWindow);
        seen_s = true;
      } else {
        at.fail("unexpected option '-" + parts[i] + "' (expected -sS stride or -proj, each at most once)");
      }
    }
    return l;
  }
  if (tok.rfind("fc", 0) == 0) {
    l.kind = LayerSpec::Kind::Fc;
    l.out = tok.size() == 2 ? 0 : at.number(tok.substr(2), "fc outputs", 1, kMaxWidth);
    return l;
  }
  const std::vector<std::string> parts = split(tok, '-');
  // Options after the required parts: "-p2", "-s1", each at most once.
  auto options = [&](size_t first, bool allow_pad) {
    bool seen_p = false, seen_s = false;
    for (size_t i = first; i < parts.size(); ++i) {
      const std::string& o = parts[i];
      if (allow_pad && !o.empty() && o[0] == 'p' && !seen_p) {
        l.pad = at.number(o.substr(1), "padding", 0, kMaxWindow);
        seen_p = true;
      } else if (!o.empty() && o[0] == 's' && !seen_s) {
        l.stride = at.number(o.substr(1), "stride", 1, kMaxWindow);
        seen_s = true;
      } else {
        at.fail("unexpected option '-" + o + "' (expected " + (allow_pad ? "-pP padding or " : "") +
                "-sS stride, each at most once)");
      }
    }
  };
  if (parts[0].rfind("pool", 0) == 0) {
    l.kind = LayerSpec::Kind::Pool;
    l.kernel = at.number(parts[0].substr(4), "pool size", 1, kMaxWindow);
    l.stride = l.kernel;
    options(1, false);
    return l;
  }
  if (parts[0].rfind("conv", 0) == 0) {
    l.kind = LayerSpec::Kind::Conv;
    const std::string k = parts[0].substr(4);
    const size_t x = k.find('x');
    if (x == std::string::npos || parts.size() < 2)
      at.fail("expected convKxK-C (e.g. conv5x5-32), found '" + tok + "'");
    const int kh = at.number(k.substr(0, x), "kernel size", 1, kMaxWindow);
    const int kw = at.number(k.substr(x + 1), "kernel size", 1, kMaxWindow);
    if (kh != kw) at.fail("expected a square kernel KxK, found " + std::to_string(kh) + "x" + std::to_string(kw));
    l.kernel = kh;
    l.out = at.number(parts[1], "output channels", 1, kMaxWidth);
    l.pad = l.kernel / 2;
    options(2, true);
    return l;
  }
  at.fail(std::string("not a layer (expected ") + kGrammar + ")");
}

// One JSON layer object: {"type": ..., fields}.
LayerSpec parse_object(const nlohmann::json& o, const Where& at) {
  if (!o.contains("type") || !o["type"].is_string())
    at.fail("expected a \"type\" of conv, pool, relu, fc, bn, gap, dropout or res, found " + o.dump());
  const std::string type = o["type"];
  auto field = [&](const char* key, const char* what, int lo, int hi, int fallback, bool required) {
    if (!o.contains(key)) {
      if (required) at.fail(std::string("a ") + type + " layer needs \"" + key + "\" (" + what + ")");
      return fallback;
    }
    const auto& v = o[key];
    if (!v.is_number_integer()) at.fail(std::string("\"") + key + "\": expected an integer, found " + v.dump());
    return at.number(v.dump(), what, lo, hi);
  };
  auto only = [&](std::initializer_list<const char*> keys) {
    for (auto it = o.begin(); it != o.end(); ++it) {
      bool ok = it.key() == "type";
      for (const char* k : keys) ok = ok || it.key() == k;
      if (!ok) {
        std::string valid;
        for (const char* k : keys) valid += std::string(valid.empty() ? "" : ", ") + k;
        at.fail("unknown key \"" + it.key() + "\" for a " + type + " layer (expected " +
                (valid.empty() ? std::string("none") : valid) + ")");
      }
    }
  };
  LayerSpec l;
  if (type == "conv") {
    only({"out", "kernel", "pad", "stride"});
    l.kind = LayerSpec::Kind::Conv;
    l.out = field("out", "output channels", 1, kMaxWidth, 0, true);
    l.kernel = field("kernel", "kernel size", 1, kMaxWindow, 0, true);
    l.pad = field("pad", "padding", 0, kMaxWindow, l.kernel / 2, false);
    l.stride = field("stride", "stride", 1, kMaxWindow, 1, false);
  } else if (type == "pool") {
    only({"size", "stride"});
    l.kind = LayerSpec::Kind::Pool;
    l.kernel = field("size", "pool size", 1, kMaxWindow, 0, true);
    l.stride = field("stride", "stride", 1, kMaxWindow, l.kernel, false);
  } else if (type == "relu") {
    only({});
  } else if (type == "fc") {
    only({"out"});
    l.kind = LayerSpec::Kind::Fc;
    l.out = field("out", "fc outputs", 1, kMaxWidth, 0, false);
  } else if (type == "bn" || type == "gap") {
    only({});
    l.kind = type == "bn" ? LayerSpec::Kind::Bn : LayerSpec::Kind::Gap;
  } else if (type == "dropout") {
    only({"p"});
    l.kind = LayerSpec::Kind::Dropout;
    if (!o.contains("p") || !o["p"].is_number()) at.fail("a dropout layer needs \"p\" (a number in [0, 0.99])");
    const double p = o["p"].get<double>();
    const double pct = p * 100;
    if (!(p >= 0 && p <= 0.99) || std::fabs(pct - std::round(pct)) > 1e-9)
      at.fail("\"p\": expected a probability in [0, 0.99] in whole percent, found " + o["p"].dump());
    l.percent = int(std::round(pct));
  } else if (type == "res") {
    only({"out", "stride", "projection"});
    l.kind = LayerSpec::Kind::Res;
    l.out = field("out", "block output channels", 1, kMaxWidth, 0, true);
    l.stride = field("stride", "stride", 1, kMaxWindow, 1, false);
    if (o.contains("projection")) {
      if (!o["projection"].is_boolean()) at.fail("\"projection\": expected true or false, found " + o["projection"].dump());
      l.projection = o["projection"].get<bool>();
    }
  } else {
    at.fail("unknown type \"" + type + "\" (expected conv, pool, relu, fc, bn, gap, dropout or res)");
  }
  return l;
}

std::vector<LayerSpec> parse_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("--model " + path + ": cannot open the model file");
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const std::exception& e) {
    throw UsageError("--model " + path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("layers") || !j["layers"].is_array() || j["layers"].empty())
    throw UsageError("--model " + path + ": expected an object with a non-empty \"layers\" array, found " +
                     (j.is_object() ? "the keys " + [&] {
                       std::string k;
                       for (auto it = j.begin(); it != j.end(); ++it) k += (k.empty() ? "" : ", ") + it.key();
                       return k.empty() ? std::string("(none)") : k;
                     }() : std::string(j.type_name())));
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.key() != "layers" && it.key() != "name")
      throw UsageError("--model " + path + ": unknown key \"" + it.key() + "\" (expected \"layers\" and optionally \"name\")");
  std::vector<LayerSpec> out;
  const auto& layers = j["layers"];
  for (size_t i = 0; i < layers.size(); ++i) {
    const Where at{path, "layers[" + std::to_string(i) + "]"};
    if (layers[i].is_string()) {
      const std::string tok = trim(layers[i].get<std::string>());
      out.push_back(parse_token(tok, Where{path, at.where + " '" + tok + "'"}));
    } else if (layers[i].is_object()) {
      out.push_back(parse_object(layers[i], at));
    } else {
      at.fail(std::string("expected a layer token or object, found ") + layers[i].type_name());
    }
  }
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

namespace {
// The CIFAR ResNet with n blocks per stage.
std::string resnet(int n) {
  std::string s = "conv3x3-16,bn,relu";
  const int widths[3] = {16, 32, 64};
  for (int stage = 0; stage < 3; ++stage)
    for (int b = 0; b < n; ++b)
      s += ",res" + std::to_string(widths[stage]) + (stage > 0 && b == 0 ? "-s2" : "");
  return s + ",gap,fc";
}
}  // namespace

const std::vector<std::pair<std::string, std::string>>& zoo_descriptions() {
  // Same padding everywhere but lenet5's second conv, as the zoo always was.
  static const std::vector<std::pair<std::string, std::string>> zoo = {
      {"cnn", "conv5x5-32,relu,pool2,conv5x5-64,relu,pool2,fc1024,relu,fc"},
      {"lenet5", "conv5x5-6,relu,pool2,conv5x5-16-p0,relu,pool2,fc120,relu,fc84,relu,fc"},
      {"mlp", "fc256,relu,fc256,relu,fc"},
      {"linear", "fc"},
      // He et al. 2016, section 4.2: 6n + 2 layers, 16/32/64 channels, option A.
      {"resnet20", resnet(3)},
      {"resnet32", resnet(5)},
      {"resnet56", resnet(9)},
      // Springenberg et al. 2015, All-CNN-C: dropout 20% on the input and
      // 50% after each stride-2 layer; ten 1x1 maps averaged (ten classes).
      {"allcnn",
       "drop20,conv3x3-96,relu,conv3x3-96,relu,conv3x3-96-s2,relu,drop50,conv3x3-192,relu,conv3x3-192,relu,"
       "conv3x3-192-s2,relu,drop50,conv3x3-192-p0,relu,conv1x1-192,relu,conv1x1-10,relu,gap"},
  };
  return zoo;
}

std::string LayerSpec::text() const {
  switch (kind) {
    case Kind::Conv: {
      std::string s = "conv" + std::to_string(kernel) + "x" + std::to_string(kernel) + "-" + std::to_string(out);
      if (pad != kernel / 2) s += "-p" + std::to_string(pad);
      if (stride != 1) s += "-s" + std::to_string(stride);
      return s;
    }
    case Kind::Pool:
    case Kind::ReluPool:
      return std::string(kind == Kind::ReluPool ? "relu," : "") + "pool" + std::to_string(kernel) +
             (stride != kernel ? "-s" + std::to_string(stride) : "");
    case Kind::Relu:
      return "relu";
    case Kind::Fc:
      return out > 0 ? "fc" + std::to_string(out) : "fc";
    case Kind::Bn:
      return "bn";
    case Kind::Gap:
      return "gap";
    case Kind::Dropout:
      return "drop" + std::to_string(percent);
    case Kind::Res:
      return "res" + std::to_string(out) + (stride != 1 ? "-s" + std::to_string(stride) : "") +
             (projection ? "-proj" : "");
  }
  return "?";
}

std::string ModelSpec::description() const {
  std::string s;
  for (const auto& l : layers) s += (s.empty() ? "" : ",") + l.text();
  return s;
}

ModelSpec parse_model(const std::string& arg) {
  ModelSpec spec;
  spec.source = arg;
  std::vector<LayerSpec> raw;
  const std::string text = trim(arg);
  if (ends_with(text, ".json")) {
    raw = parse_json_file(text);
  } else {
    std::string desc = text;
    for (const auto& z : zoo_descriptions())
      if (z.first == text) desc = z.second;
    if (desc.empty())
      throw UsageError("--model '" + arg + "': expected a zoo name (" + zoo_names() +
                       "), a layer list such as conv5x5-32,relu,pool2,fc or a .json file");
    const std::vector<std::string> tokens = split(desc, ',');
    for (size_t i = 0; i < tokens.size(); ++i) {
      const std::string tok = trim(tokens[i]);
      auto digit_after = [&](size_t k) { return tok.size() > k && std::isdigit(static_cast<unsigned char>(tok[k])); };
      const bool layer_like = tok == "relu" || tok == "bn" || tok == "gap" || tok.rfind("conv", 0) == 0 ||
                              tok.rfind("pool", 0) == 0 || tok.rfind("fc", 0) == 0 ||
                              (tok.rfind("drop", 0) == 0 && digit_after(4)) || (tok.rfind("res", 0) == 0 && digit_after(3));
      if (tokens.size() == 1 && !layer_like)  // one word: most likely a mistyped zoo name, so say both
        throw UsageError("--model '" + arg + "': not a zoo model (" + zoo_names() +
                         "), a .json file or a layer: expected " + kGrammar);
      raw.push_back(parse_token(tok, Where{arg, "layer " + std::to_string(i + 1) + " '" + tok + "'"}));
    }
  }
  // relu then pool: one fused layer (see the header).
  for (size_t i = 0; i < raw.size(); ++i) raw[i].position = int(i) + 1;
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i].kind == LayerSpec::Kind::Relu && i + 1 < raw.size() && raw[i + 1].kind == LayerSpec::Kind::Pool) {
      LayerSpec fused = raw[i + 1];
      fused.kind = LayerSpec::Kind::ReluPool;
      fused.position = raw[i].position;
      spec.layers.push_back(fused);
      ++i;
    } else {
      spec.layers.push_back(raw[i]);
    }
  }
  for (size_t i = 0; i + 1 < spec.layers.size(); ++i)
    if (spec.layers[i].kind == LayerSpec::Kind::Conv && spec.layers[i + 1].kind == LayerSpec::Kind::Bn)
      spec.layers[i].bias = false;
  return spec;
}

}  // namespace adasync
