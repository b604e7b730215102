#include "runtime/straggler.h"

#include <unistd.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "kernels/context.h"
#include "runtime/input_file.h"

namespace adasync {

double parse_seconds(const std::string& text, const std::string& flag) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    throw UsageError(flag + ": expected a duration such as 20ms, 0.5 or 2s, found '" + text + "'");
  }
  const std::string unit = text.substr(used);
  double scale = 1;
  if (unit.empty() || unit == "s") scale = 1;
  else if (unit == "ms") scale = 1e-3;
  else if (unit == "us") scale = 1e-6;
  else if (unit == "min") scale = 60;
  else throw UsageError(flag + ": unknown time unit '" + unit + "' in '" + text + "' (expected s, ms, us or min)");
  if (!(v >= 0) || !std::isfinite(v))
    throw UsageError(flag + ": expected a non-negative duration, found '" + text + "'");
  return v * scale;
}

namespace {
std::map<std::string, std::string> parse_kv(const std::string& body, const std::string& flag,
                                            const std::string& text) {
  std::map<std::string, std::string> kv;
  std::stringstream ss(body);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto eq = item.find('=');
    if (eq == std::string::npos)
      throw UsageError(flag + ": expected key=value in '" + text + "', found '" + item + "'");
    kv[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return kv;
}

double need(std::map<std::string, std::string>& kv, const std::string& key, const std::string& flag,
            const std::string& text) {
  auto it = kv.find(key);
  if (it == kv.end()) throw UsageError(flag + ": '" + text + "' needs " + key + "=...");
  const double v = parse_seconds(it->second, flag);
  kv.erase(it);
  return v;
}

std::vector<std::vector<double>> read_trace(const std::string& path, const std::string& flag) {
  uint64_t size = 0;
  ::close(open_regular_input(path, flag + " trace file '" + path + "'", &size));  // not a FIFO, not a device
  std::ifstream in(path);
  if (!in) throw UsageError(flag + ": cannot open trace file '" + path + "'");
  std::vector<std::vector<double>> rows;
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty() || line[0] == '#') continue;
    for (char& c : line)
      if (c == ',') c = ' ';
    std::stringstream ss(line);
    std::vector<double> row;
    std::string tok;
    while (ss >> tok) {
      double v = -1;
      try {
        v = parse_seconds(tok, flag);
      } catch (const UsageError&) {
        throw UsageError(flag + ": " + path + ":" + std::to_string(lineno) + ": expected a duration, found '" + tok +
                         "'");
      }
      row.push_back(v);
    }
    if (!row.empty()) rows.push_back(std::move(row));
  }
  if (rows.empty()) throw UsageError(flag + ": trace file '" + path + "' holds no times (expected one line per worker)");
  return rows;
}
}  // namespace

StragglerSpec parse_straggler(const std::string& text, const std::string& flag) {
  StragglerSpec s;
  s.text = text;
  const auto colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  auto kv = parse_kv(colon == std::string::npos ? "" : text.substr(colon + 1), flag, text);
  if (kind == "none") {
    s.kind = StragglerSpec::Kind::None;
  } else if (kind == "const") {
    s.kind = StragglerSpec::Kind::Const;
    s.a = need(kv, "value", flag, text);
  } else if (kind == "exp") {
    s.kind = StragglerSpec::Kind::Exp;
    s.a = need(kv, "mean", flag, text);
  } else if (kind == "shifted-exp") {
    s.kind = StragglerSpec::Kind::ShiftedExp;
    s.a = need(kv, "shift", flag, text);
    s.b = need(kv, "mean", flag, text);
  } else if (kind == "pareto") {
    s.kind = StragglerSpec::Kind::Pareto;
    s.a = need(kv, "scale", flag, text);
    auto it = kv.find("shape");
    if (it == kv.end()) throw UsageError(flag + ": '" + text + "' needs shape=...");
    try {
      s.b = std::stod(it->second);
    } catch (const std::exception&) {
      s.b = -1;
    }
    if (!(s.b > 0)) throw UsageError(flag + ": pareto shape must be a positive number, found '" + it->second + "'");
    kv.erase(it);
  } else if (kind == "uniform") {
    s.kind = StragglerSpec::Kind::Uniform;
    s.a = need(kv, "min", flag, text);
    s.b = need(kv, "max", flag, text);
    if (s.b < s.a) throw UsageError(flag + ": uniform needs min <= max, found '" + text + "'");
  } else if (kind == "trace") {
    s.kind = StragglerSpec::Kind::Trace;
    auto it = kv.find("path");
    if (it == kv.end()) throw UsageError(flag + ": '" + text + "' needs path=FILE");
    s.trace = read_trace(it->second, flag);
    kv.erase(it);
  } else {
    throw UsageError(flag + ": unknown straggler model '" + kind +
                     "' (expected none, const, exp, shifted-exp, pareto, uniform or trace)");
  }
  if (!kv.empty()) throw UsageError(flag + ": unknown key '" + kv.begin()->first + "' in '" + text + "'");
  return s;
}

std::vector<double> parse_slowdown(const std::string& text, const std::string& flag) {
  std::vector<double> out;
  std::stringstream ss(text);
  std::string tok;
  while (std::getline(ss, tok, ',')) {
    double v = 0;
    size_t used = 0;
    try {
      v = std::stod(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != tok.size() || !(v > 0) || !std::isfinite(v))
      throw UsageError(flag + ": expected positive factors such as 1,1,2,4, found '" + tok + "'");
    out.push_back(v);
  }
  if (out.empty()) throw UsageError(flag + ": expected positive factors such as 1,1,2,4, found '" + text + "'");
  return out;
}

double StragglerSpec::mean() const {
  switch (kind) {
    case Kind::None: return 0;
    case Kind::Const: return a;
    case Kind::Exp: return a;
    case Kind::ShiftedExp: return a + b;
    case Kind::Pareto: return b > 1 ? b * a / (b - 1) : INFINITY;
    case Kind::Uniform: return 0.5 * (a + b);
    case Kind::Trace: {
      double s = 0;
      size_t n = 0;
      for (const auto& r : trace)
        for (double v : r) s += v, ++n;
      return n ? s / double(n) : 0;
    }
  }
  return 0;
}

Straggler::Straggler(StragglerSpec spec, std::vector<double> slowdown, int workers, uint64_t seed)
    : spec_(std::move(spec)), slowdown_(std::move(slowdown)), trace_pos_(size_t(workers), 0) {
  for (int w = 0; w < workers; ++w) rng_.emplace_back(seed, 0x5157 + uint64_t(w));
}

double Straggler::slowdown(int w) const {
  if (slowdown_.empty()) return 1.0;
  return w < int(slowdown_.size()) ? slowdown_[size_t(w)] : slowdown_.back();
}

double Straggler::draw(int w) {
  Rng& r = rng_[size_t(w)];
  double x = 0;
  switch (spec_.kind) {
    case StragglerSpec::Kind::None: x = 0; break;
    case StragglerSpec::Kind::Const: x = spec_.a; break;
    case StragglerSpec::Kind::Exp: x = r.exponential(spec_.a); break;
    case StragglerSpec::Kind::ShiftedExp: x = spec_.a + r.exponential(spec_.b); break;
    case StragglerSpec::Kind::Pareto: {
      double u = r.uniform();
      x = spec_.a / std::pow(1.0 - u, 1.0 / spec_.b);
      break;
    }
    case StragglerSpec::Kind::Uniform: x = r.uniform(spec_.a, spec_.b); break;
    case StragglerSpec::Kind::Trace: {
      const auto& row = spec_.trace[size_t(w) % spec_.trace.size()];
      x = row[trace_pos_[size_t(w)]++ % row.size()];
      break;
    }
  }
  return x * slowdown(w);
}

std::vector<uint64_t> Straggler::state() const {
  std::vector<uint64_t> s;
  for (size_t w = 0; w < rng_.size(); ++w) {
    uint64_t st[4];
    rng_[w].get_state(st);
    s.insert(s.end(), st, st + 4);
    s.push_back(trace_pos_[w]);
  }
  return s;
}

void Straggler::set_state(const std::vector<uint64_t>& s) {
  EXPECTS(s.size() == rng_.size() * 5, "straggler state of " << s.size() << " words for " << rng_.size() << " workers");
  for (size_t w = 0; w < rng_.size(); ++w) {
    rng_[w].set_state(&s[w * 5]);
    trace_pos_[w] = s[w * 5 + 4];
  }
}

}  // namespace adasync
