#include "runtime/theory.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/clock.h"

namespace adasync::theory {

double harmonic(int n) {
  double h = 0;
  for (int i = 1; i <= n; ++i) h += 1.0 / i;
  return h;
}

double expected_time(Variant v, int P, int K, const StragglerSpec& s, double base) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (v == Variant::Sync) K = P;
  if (v == Variant::Async) K = 1;
  const bool exp = s.kind == StragglerSpec::Kind::Exp;
  const bool shifted = s.kind == StragglerSpec::Kind::ShiftedExp;
  const double mean_exp = exp ? s.a : (shifted ? s.b : 0);  // 1/mu
  const double shift = base + (shifted ? s.a : 0);
  const double order_stat = (harmonic(P) - harmonic(P - K)) * mean_exp;  // E[X_{K:P}] - shift
  switch (v) {
    case Variant::Sync:
    case Variant::KSync:
      if (exp || shifted) return shift + order_stat;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const) return base + s.mean();
      return nan;
    case Variant::KBatchSync:
      if (exp && shift == 0) return K * mean_exp / P;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const)
        return (base + s.mean()) * std::ceil(double(K) / P);
      return nan;
    case Variant::KAsync:
      if (exp && shift == 0) return order_stat;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const) return base + s.mean();
      return nan;
    case Variant::Async:
    case Variant::KBatchAsync:
      // Renewal: P workers each deliver one gradient per E[X]; an update takes K of them.
      return K * (base + s.mean()) / P;
  }
  return nan;
}

double empirical_order_stat(const std::vector<double>& xs, int K, int P) {
  // P(X_{K:P} <= x_(i)) = P(Bin(P, i/n) >= K): sum x_(i) times its mass.
  const size_t n = xs.size();
  auto at_least_k = [&](double p) {
    double tail = 0;
    for (int j = K; j <= P; ++j) {
      double c = 1;  // binomial coefficient C(P, j)
      for (int i = 1; i <= j; ++i) c = c * double(P - j + i) / double(i);
      tail += c * std::pow(p, j) * std::pow(1 - p, P - j);
    }
    return tail;
  };
  double e = 0, prev = 0;
  for (size_t i = 0; i < n; ++i) {
    const double cur = at_least_k(double(i + 1) / double(n));
    e += xs[i] * (cur - prev);
    prev = cur;
  }
  return e;
}

double expected_time_observed(Variant v, int P, int K, std::vector<double> xs) {
  if (xs.empty()) return std::numeric_limits<double>::quiet_NaN();
  if (v == Variant::Sync) K = P;
  if (v == Variant::Async) K = 1;
  if (v == Variant::Async || v == Variant::KBatchAsync || v == Variant::KBatchSync) {
    double sum = 0;
    for (double x : xs) sum += x;
    return double(K) * sum / double(xs.size()) / double(P);
  }
  std::sort(xs.begin(), xs.end());
  return empirical_order_stat(xs, K, P);
}

namespace {
// Workers that compute nothing: the Monte Carlo measures scheduling alone.
class NullWorker : public GradientWorker {
 public:
  size_t num_params() const override { return 1; }
  void pull(const SnapshotPtr&) override {}
  bool compute(const std::vector<int32_t>&, float* slot, double, const CancelSource*, uint64_t,
               GradResult* out) override {
    slot[0] = 0;
    out->loss = 0;
    out->finite = true;
    return true;
  }
};

class CountingListener : public EngineListener {
 public:
  explicit CountingListener(int64_t target) : target_(target) { times_.reserve(size_t(target)); }
  UpdateRates rates(const Aggregator&, double) override { return UpdateRates{0.f, {}}; }
  void on_update(Aggregator&, const Aggregator::UpdateResult&, double now) override { times_.push_back(now); }
  bool on_time(double) override { return true; }
  bool keep_going(const Aggregator& agg, double) override { return agg.version() < target_; }
  const std::vector<double>& times() const { return times_; }

 private:
  int64_t target_;
  std::vector<double> times_;
};
}  // namespace

Estimate simulate(Variant v, int P, int K, const StragglerSpec& spec, int64_t updates, uint64_t seed, double base,
                  double ps_time) {
  const float zero = 0;
  OptimizerConfig oc;
  oc.momentum = 0;
  ParamServer ps(1, &zero, std::make_unique<HostOptimizer>(oc, 1, nullptr), 2 * P);
  AggregatorConfig ac;
  ac.variant = v;
  ac.workers = P;
  ac.k = K;
  Aggregator agg(ac, ps);
  Straggler straggler(spec, {}, P, seed);
  std::vector<Sampler> samplers;
  for (int w = 0; w < P; ++w) samplers.emplace_back(1, 1, seed, 0, 1, false);
  NullWorker worker;
  CountingListener listener(updates);
  EngineSetup es;
  es.ps = &ps;
  es.agg = &agg;
  es.straggler = &straggler;
  es.samplers = &samplers;
  es.workers = {&worker};
  es.base_time = base;
  es.ps_time = ps_time;
  es.listener = &listener;
  run_virtual(es);

  Estimate e;
  const auto& t = listener.times();
  e.updates = int64_t(t.size());
  if (t.empty()) return e;
  e.mean = t.back() / double(t.size());
  // Standard error from 20 batch means of the inter-update times.
  const size_t batches = 20, per = t.size() / batches;
  if (per > 0) {
    std::vector<double> m;
    for (size_t b = 0; b < batches; ++b) {
      const double t0 = b == 0 ? 0 : t[b * per - 1];
      m.push_back((t[(b + 1) * per - 1] - t0) / double(per));
    }
    double mu = 0, var = 0;
    for (double x : m) mu += x / double(batches);
    for (double x : m) var += (x - mu) * (x - mu) / double(batches - 1);
    e.std_err = std::sqrt(var / double(batches));
  }
  return e;
}

}  // namespace adasync::theory
