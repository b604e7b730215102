// The settings the config and the engine share: the variants, the AdaSync
// rules, the optimizer's and the learning rate's settings, each with its
// parsing or validation. The config holds them; the engine's parts take them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/context.h"  // UsageError

namespace adasync {

enum class ScheduleKind { Fixed, AdaSync, Piecewise };
enum class GraphKind { Complete, Ring, Torus, Regular };
enum class LrKind { Const, Staleness, Distance };
enum class LrSchedule { Const, Step, Cosine };
enum class DistanceKind { Sketch, Exact };
enum class OptimizerKind { Sgd, Adam, AmsGrad };

enum class Variant { Sync, KSync, KBatchSync, Async, KAsync, KBatchAsync };
Variant parse_variant(const std::string& s);  // throws UsageError
const char* to_string(Variant v);
bool has_k(Variant v);           // K is a free parameter
bool is_synchronous(Variant v);  // zero staleness, cancellation on update
// A torus of P nodes: its rows, the largest divisor r of P with r <= P / r (0: none >= 2, no torus).
int torus_rows(int P);

// Auto: the default rule (default_ada_rule), resolved when the run starts.
enum class AdaRule { Auto, Sqrt, OrderStat, Runtime, Plateau, RuntimePlateau, Goodput };
AdaRule parse_ada_rule(const std::string& s);  // throws UsageError naming --adasync-rule
// The rule `--adasync-rule auto` takes for a variant (README: why).
AdaRule default_ada_rule(Variant v);
// T_0 when --schedule-every is not given: the ratio rules decide every
// budget/20 (10 s without a budget); the plateau rule, whose windows are
// counted in updates, checks every budget/100 (1 s).
double default_decision_interval(AdaRule r, double budget);
const char* to_string(AdaRule r);

struct OptimizerConfig {
  OptimizerKind name = OptimizerKind::Sgd;
  double momentum = 0.9;     // sgd only; 0 = plain SGD (the trainer resolves "auto" before this)
  bool nesterov = false;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool bias_correction = true;
  double weight_decay = 0;
  bool no_decay_bn = false;  // no weight decay on biases and batch-norm affine terms
};

// Throws UsageError for an out-of-range hyper-parameter.
void validate(const OptimizerConfig& c);

struct LrConfig {
  LrKind rule = LrKind::Const;
  double lr = 0.05;                 // eta (const, staleness) or eta_max (distance)
  double c = 0.0;                   // C for distance (> 0 required)
  DistanceKind distance = DistanceKind::Sketch;
  size_t sketch_buckets = 4096;
  // The schedule over the run, as a multiplier of lr at `epoch` (epochs of
  // counted samples): const; step (times gamma at each milestone passed);
  // cosine (from 1 to 0 over total_epochs, PyTorch's CosineAnnealingLR);
  // each times a linear warm-up over the first warmup epochs.
  LrSchedule schedule = LrSchedule::Const;
  std::vector<double> milestones;
  double gamma = 0.1;
  double total_epochs = 0;
  double warmup = 0;
  double grads_per_epoch = 0;  // counted gradients in an epoch (train size / batch); 0: no schedule
};

void validate(const LrConfig& c);

// The names of an enum's values, as the flags spell them. parse_enum throws
// UsageError("FLAG: expected a, b or c, found 'x'").
// ADASYNC_ENUM_NAMES(E, {E::A, "a"}, ...) names an enum's values (here and in config.h).
template <class E>
struct EnumNames;
#define ADASYNC_ENUM_NAMES(E, ...)                                                 \
  template <>                                                                      \
  struct EnumNames<E> {                                                            \
    static constexpr std::pair<E, const char*> values[] = {__VA_ARGS__};           \
  };
ADASYNC_ENUM_NAMES(Variant, {Variant::Sync, "sync"}, {Variant::KSync, "k-sync"}, {Variant::KBatchSync, "k-batch-sync"},
                   {Variant::Async, "async"}, {Variant::KAsync, "k-async"}, {Variant::KBatchAsync, "k-batch-async"})
ADASYNC_ENUM_NAMES(ScheduleKind, {ScheduleKind::Fixed, "fixed"}, {ScheduleKind::AdaSync, "adasync"},
                   {ScheduleKind::Piecewise, "piecewise"})
ADASYNC_ENUM_NAMES(AdaRule, {AdaRule::Auto, "auto"}, {AdaRule::Sqrt, "sqrt"}, {AdaRule::OrderStat, "order-stat"},
                   {AdaRule::Runtime, "runtime"}, {AdaRule::Plateau, "plateau"},
                   {AdaRule::RuntimePlateau, "runtime-plateau"}, {AdaRule::Goodput, "goodput"})
ADASYNC_ENUM_NAMES(LrKind, {LrKind::Const, "const"}, {LrKind::Staleness, "staleness"}, {LrKind::Distance, "distance"})
ADASYNC_ENUM_NAMES(LrSchedule, {LrSchedule::Const, "const"}, {LrSchedule::Step, "step"}, {LrSchedule::Cosine, "cosine"})
ADASYNC_ENUM_NAMES(DistanceKind, {DistanceKind::Sketch, "sketch"}, {DistanceKind::Exact, "exact"})
ADASYNC_ENUM_NAMES(GraphKind, {GraphKind::Complete, "complete"}, {GraphKind::Ring, "ring"}, {GraphKind::Torus, "torus"},
                   {GraphKind::Regular, "regular"})
ADASYNC_ENUM_NAMES(OptimizerKind, {OptimizerKind::Sgd, "sgd"}, {OptimizerKind::Sgd, "momentum"},
                   {OptimizerKind::Adam, "adam"}, {OptimizerKind::AmsGrad, "amsgrad"})

// "a, b or c": the values of E, for messages and --help.
template <class E>
std::string enum_choices() {
  std::string s;
  const size_t n = std::size(EnumNames<E>::values);
  for (size_t i = 0; i < n; ++i) s += (i == 0 ? "" : i + 1 == n ? " or " : ", ") + std::string(EnumNames<E>::values[i].second);
  return s;
}
template <class E>
E parse_enum(const std::string& s, const std::string& flag) {
  for (const auto& [e, name] : EnumNames<E>::values)
    if (s == name) return e;
  throw UsageError(flag + ": expected " + enum_choices<E>() + ", found '" + s + "'");
}
template <class E, class = decltype(EnumNames<E>::values)>
const char* name_of(E e) {
  for (const auto& [v, name] : EnumNames<E>::values)
    if (v == e) return name;
  return "?";
}
// JSON: enums are written by name (checkpoints, trace headers, metrics).
template <class E, class = decltype(EnumNames<E>::values)>
void to_json(nlohmann::json& j, E e) {
  j = name_of(e);
}
template <class E, class = decltype(EnumNames<E>::values)>
void from_json(const nlohmann::json& j, E& e) {
  e = parse_enum<E>(j.get<std::string>(), "enum");
}

// A number of a checkpoint's state that may be NaN (a loss not yet seen, a
// rule's unset reference): JSON has no NaN, so it is written as null and
// read back as NaN.
struct Real {
  double v = 0;
  Real() = default;
  Real(double x) : v(x) {}  // NOLINT: a double is a Real
  operator double() const { return v; }  // NOLINT
};
inline void to_json(nlohmann::json& j, const Real& r) { j = r.v; }
inline void from_json(const nlohmann::json& j, Real& r) { r.v = j.is_null() ? NAN : j.get<double>(); }

}  // namespace adasync
