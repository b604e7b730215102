#include "runtime/drivers/simulate.h"

#include <cmath>
#include <memory>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/drivers/driver.h"

namespace adasync::theory {

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

class Counting : public DriverHooks, public UpdateObserver {
 public:
  explicit Counting(int64_t target) : target_(target) { times_.reserve(size_t(target)); }
  void on_update(const UpdateEvent& e) override { times_.push_back(e.now); }
  bool on_time(double) override { return true; }
  bool keep_going(double) override { return int64_t(times_.size()) < target_; }
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
  PolicyConfig pc;
  pc.lr.lr = 0;
  pc.workers = P;
  Policy policy(pc, 1, seed, *ps.latest());
  UpdateLoop loop(ps, agg, policy);
  Counting listener(updates);
  loop.observe(&listener);
  DriverSetup ds;
  ds.loop = &loop;
  ds.straggler = &straggler;
  ds.samplers = &samplers;
  ds.workers = {&worker};
  ds.base_time = base;
  ds.ps_time = ps_time;
  ds.hooks = &listener;
  run_virtual(ds);

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
