// APAM: asynchronous AMSGrad on the parameter server, on a convex problem
// (softmax regression on Gaussian classes), with a staleness bound.
#include <gtest/gtest.h>

#include "runtime/drivers/driver.h"
#include "runtime/run/trainer.h"

namespace adasync {
namespace {

// Records what happened to every arriving gradient.
class Recorder : public DriverHooks, public UpdateObserver {
 public:
  explicit Recorder(int64_t updates) : updates_(updates) {}
  void on_push(const PushEvent& e) override {
    arrivals.push_back({version_at_arrival, e.tau, e.result.counted, e.result.drop});
  }
  void on_update(const UpdateEvent& e) override {
    version_at_arrival = e.update.snapshot->version;
    for (const auto& a : e.update.applied) max_applied = std::max(max_applied, a.staleness);
  }
  bool on_time(double) override { return true; }
  bool keep_going(double) override { return version_at_arrival < updates_; }

  struct Arrival {
    int64_t version, tau;
    bool counted;
    Drop drop;
  };
  std::vector<Arrival> arrivals;
  int64_t version_at_arrival = 0, max_applied = 0;

 private:
  int64_t updates_;
};

TEST(Apam, ConvergesOnAConvexProblemAndDropsExactlyTheGradientsOverTheBound) {
  DataSplit d = make_gaussian_classes(6000, 1000, 20, 5, 1.2, 11);
  normalize(d);
  const int P = 16;
  const int64_t bound = 6;
  auto ctx = Context::cpu();
  ModelWorker worker(0, *ctx, "linear", d.train, 32);
  std::vector<float> init(worker.num_params());
  worker.model().init_params(init.data(), 3);
  OptimizerConfig oc;
  oc.name = OptimizerKind::AmsGrad;
  ParamServer ps(init.size(), init.data(), std::make_unique<HostOptimizer>(oc, init.size(), nullptr), 2 * P);
  AggregatorConfig ac;
  ac.variant = Variant::Async;
  ac.workers = P;
  ac.max_staleness = bound;
  Aggregator agg(ac, ps);
  // Heavy-tailed compute times make some gradients very stale.
  Straggler straggler(parse_straggler("pareto:scale=1,shape=1.5", "--straggler"), {}, P, 7);
  std::vector<Sampler> samplers;
  for (int w = 0; w < P; ++w) samplers.emplace_back(d.train.size(), 32, 100 + uint64_t(w));
  Recorder rec(3000);
  PolicyConfig pc;
  pc.lr.lr = 1e-2;
  pc.workers = P;
  Policy policy(pc, init.size(), 1, *ps.latest());
  UpdateLoop loop(ps, agg, policy);
  loop.observe(&rec);
  DriverSetup ds;
  ds.loop = &loop;
  ds.straggler = &straggler;
  ds.samplers = &samplers;
  ds.workers = {&worker};
  ds.hooks = &rec;
  run_virtual(ds);

  // Every arrival: counted iff its staleness at arrival is within the bound.
  int64_t over = 0;
  for (const auto& a : rec.arrivals) {
    const int64_t s = a.version - a.tau;
    EXPECT_EQ(a.counted, s <= bound) << "staleness " << s;
    if (!a.counted) {
      EXPECT_EQ(a.drop, Drop::OverBound);
      ++over;
    }
  }
  EXPECT_GT(over, 0);  // the bound did bite
  EXPECT_EQ(agg.stats().dropped_bound, over);
  EXPECT_EQ(agg.stats().pushes, int64_t(rec.arrivals.size()));
  EXPECT_LE(rec.max_applied, bound);

  auto ectx = Context::cpu();
  Evaluator ev(*ectx, "linear", d.test);
  const EvalResult start = ev.evaluate(init.data()), end = ev.evaluate(ps.latest()->data);
  EXPECT_LT(end.loss, 0.5 * start.loss);
  EXPECT_GT(end.accuracy, 0.85);
}

TEST(Apam, TrainerRunsAsyncAmsGradWithTheBoundInItsMetrics) {
  auto data = std::make_shared<DataSplit>(make_gaussian_classes(4000, 500, 16, 4, 1.5, 2));
  normalize(*data);
  TrainConfig c;
  c.model = "linear";
  c.dataset = "gaussian";
  c.batch = 16;
  c.opt.name = OptimizerKind::AmsGrad;
  c.lr = 1e-2;
  c.workers = 8;
  c.set_variant("async");
  c.max_staleness = 4;
  c.clock = ClockKind::Virtual;
  c.straggler = "pareto:scale=1,shape=1.5";
  c.max_updates = 1500;
  c.eval_every = "0";
  c.progress = Progress::None;
  c.devices = Devices::Cpu;
  Trainer t(c, data);
  const RunSummary s = t.run();
  EXPECT_GT(s.stats.dropped_bound, 0);
  EXPECT_LE(s.stats.staleness_max, 4);
  EXPECT_GT(s.final_eval.accuracy, 0.85);
}

}  // namespace
}  // namespace adasync
