// Fault injection, for testing what long runs meet: `--inject` takes a list
// such as "nan@2:10,throw@1:5,hang@3:20:2s":
//   nan@W:N       worker W's N-th gradient (counting from 1) comes back non-finite
//   throw@W:N     worker W's N-th computation throws (the worker fails)
//   hang@W:N:T    worker W's N-th computation takes T seconds longer
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/context.h"

namespace adasync {

struct Fault {
  enum class Kind { Nan, Throw, Hang } kind = Kind::Nan;
  int worker = 0;
  int64_t at = 1;
  double seconds = 0;
};

// Parses a list such as "nan@2:10,throw@1:5"; throws UsageError naming
// `what` (the flag) and the item on bad input. Worker ids are bounded by the
// config's check, which knows the worker count.
std::vector<Fault> parse_faults(const std::string& spec, const std::string& what);
constexpr const char* kFaultSyntax = "expected nan@W:N, throw@W:N or hang@W:N:T";
std::string to_string(const Fault& f);  // "throw@1:5", "hang@3:20:2s"

class FaultPlan {
 public:
  FaultPlan() = default;
  explicit FaultPlan(std::vector<Fault> faults) : faults_(std::move(faults)) {}
  bool empty() const { return faults_.empty(); }
  // The fault for worker w's n-th computation (1-based), if any.
  const Fault* at(int w, int64_t n) const;

 private:
  std::vector<Fault> faults_;
};

// Thrown by an injected `throw` fault (a stand-in for a CUDA error or a bug).
struct InjectedFailure : Error {
  using Error::Error;
};

}  // namespace adasync
