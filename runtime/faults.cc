#include "runtime/faults.h"

#include <sstream>
#include <stdexcept>

#include "kernels/context.h"
#include "runtime/straggler.h"

namespace adasync {

std::vector<Fault> parse_faults(const std::string& spec, const std::string& what) {
  std::vector<Fault> faults;
  std::stringstream ss(spec);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const auto bad = [&](const std::string& why) {
      return UsageError(what + ": " + why + " in '" + item + "' (" + kFaultSyntax + ")");
    };
    const auto at = item.find('@');
    if (at == std::string::npos) throw bad("no '@'");
    Fault f;
    const std::string kind = item.substr(0, at);
    if (kind == "nan") f.kind = Fault::Kind::Nan;
    else if (kind == "throw") f.kind = Fault::Kind::Throw;
    else if (kind == "hang") f.kind = Fault::Kind::Hang;
    else throw bad("unknown fault '" + kind + "'");
    std::vector<std::string> parts;
    std::stringstream ps(item.substr(at + 1));
    std::string p;
    while (std::getline(ps, p, ':')) parts.push_back(p);
    if (parts.size() != (f.kind == Fault::Kind::Hang ? 3u : 2u)) throw bad("wrong number of fields");
    try {
      f.worker = std::stoi(parts[0]);
      f.at = std::stoll(parts[1]);
    } catch (const std::exception&) {
      throw bad("worker and count must be integers");
    }
    if (f.worker < 0) throw bad("worker " + parts[0] + " is negative");
    if (f.at < 1) throw bad("the count starts at 1");
    if (f.kind == Fault::Kind::Hang) f.seconds = parse_seconds(parts[2], what);
    faults.push_back(f);
  }
  return faults;
}

std::string to_string(const Fault& f) {
  const char* kind = f.kind == Fault::Kind::Nan ? "nan" : f.kind == Fault::Kind::Throw ? "throw" : "hang";
  std::string s = std::string(kind) + "@" + std::to_string(f.worker) + ":" + std::to_string(f.at);
  if (f.kind == Fault::Kind::Hang) {
    std::ostringstream t;
    t << f.seconds << "s";
    s += ":" + t.str();
  }
  return s;
}

const Fault* FaultPlan::at(int w, int64_t n) const {
  for (const auto& f : faults_)
    if (f.worker == w && f.at == n) return &f;
  return nullptr;
}

}  // namespace adasync
