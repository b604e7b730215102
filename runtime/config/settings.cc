#include "runtime/config/settings.h"

#include "kernels/context.h"  // UsageError

namespace adasync {

Variant parse_variant(const std::string& s) {
  if (s == "sync") return Variant::Sync;
  if (s == "k-sync") return Variant::KSync;
  if (s == "k-batch-sync") return Variant::KBatchSync;
  if (s == "async") return Variant::Async;
  if (s == "k-async") return Variant::KAsync;
  if (s == "k-batch-async") return Variant::KBatchAsync;
  throw UsageError("--variant: expected sync, k-sync, k-batch-sync, async, k-async or k-batch-async, found '" + s +
                   "'");
}

const char* to_string(Variant v) {
  switch (v) {
    case Variant::Sync:
      return "sync";
    case Variant::KSync:
      return "k-sync";
    case Variant::KBatchSync:
      return "k-batch-sync";
    case Variant::Async:
      return "async";
    case Variant::KAsync:
      return "k-async";
    case Variant::KBatchAsync:
      return "k-batch-async";
  }
  return "?";
}

bool has_k(Variant v) {
  return v == Variant::KSync || v == Variant::KBatchSync || v == Variant::KAsync || v == Variant::KBatchAsync;
}

bool is_synchronous(Variant v) { return v == Variant::Sync || v == Variant::KSync || v == Variant::KBatchSync; }

int torus_rows(int P) {
  int rows = 0;
  for (int r = 2; r * r <= P; ++r)
    if (P % r == 0) rows = r;
  return rows;
}

AdaRule parse_ada_rule(const std::string& s) {
  if (s == "sqrt") return AdaRule::Sqrt;
  if (s == "order-stat") return AdaRule::OrderStat;
  if (s == "runtime") return AdaRule::Runtime;
  if (s == "plateau") return AdaRule::Plateau;
  if (s == "runtime-plateau") return AdaRule::RuntimePlateau;
  if (s == "goodput") return AdaRule::Goodput;
  throw UsageError("--adasync-rule: expected sqrt, order-stat, runtime, plateau, runtime-plateau or goodput, found '" +
                   s + "'");
}

AdaRule default_ada_rule(Variant) { return AdaRule::RuntimePlateau; }

double default_decision_interval(AdaRule r, double budget) {
  if (r == AdaRule::Plateau || r == AdaRule::RuntimePlateau) return budget > 0 ? budget / 100 : 1.0;
  if (r == AdaRule::Goodput) return budget > 0 ? budget / 50 : 2.0;  // the first decision ends a short warm-up
  return budget > 0 ? budget / 20 : 10.0;
}

const char* to_string(AdaRule r) {
  switch (r) {
    case AdaRule::Auto:
      return "auto";
    case AdaRule::Sqrt:
      return "sqrt";
    case AdaRule::OrderStat:
      return "order-stat";
    case AdaRule::Runtime:
      return "runtime";
    case AdaRule::Plateau:
      return "plateau";
    case AdaRule::RuntimePlateau:
      return "runtime-plateau";
    case AdaRule::Goodput:
      return "goodput";
  }
  return "?";
}

void validate(const OptimizerConfig& c) {
  if (!(c.momentum >= 0 && c.momentum < 1))
    throw UsageError("--momentum: expected a value in [0, 1), found " + std::to_string(c.momentum));
  if (!(c.beta1 >= 0 && c.beta1 < 1))
    throw UsageError("--beta1: expected a value in [0, 1), found " + std::to_string(c.beta1));
  if (!(c.beta2 >= 0 && c.beta2 < 1))
    throw UsageError("--beta2: expected a value in [0, 1), found " + std::to_string(c.beta2));
  if (!(c.eps > 0)) throw UsageError("--eps: expected a positive value, found " + std::to_string(c.eps));
  if (!(c.weight_decay >= 0))
    throw UsageError("--weight-decay: expected >= 0, found " + std::to_string(c.weight_decay));
}

void validate(const LrConfig& c) {
  if (c.rule == LrKind::Distance && !(c.c > 0))
    throw UsageError("--lr-c: the distance rule needs a positive C, found " + std::to_string(c.c));
  if (c.sketch_buckets < 16)
    throw UsageError("--sketch-buckets: expected at least 16, found " + std::to_string(c.sketch_buckets));
}

}  // namespace adasync
