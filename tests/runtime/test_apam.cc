// APAM: asynchronous AMSGrad on the parameter server, on a convex problem
// (softmax regression on Gaussian classes), with a staleness bound.
#include <gtest/gtest.h>

#include "runtime/clock.h"
#include "runtime/trainer.h"

namespace adasync {
namespace {

// Records what happened to every arriving gradient.
class Recorder : public EngineListener {
 public:
  explicit Recorder(int64_t updates) : updates_(updates) {}
  UpdateRates rates(const Aggregator&, double) override { return UpdateRates{1e-2f, {}}; }
  void on_push(const Push& p, const Aggregator::PushResult& r, double) override {
    arrivals.push_back({version_at_arrival, p.tau, r.counted, r.drop});
  }
  void on_update(Aggregator& agg, const Aggregator::UpdateResult& u, double) override {
    version_at_arrival = agg.version();
    for (const auto& a : u.applied) max_applied = std::max(max_applied, a.staleness);
  }
  bool on_time(double) override { return true; }
  bool keep_going(const Aggregator& agg, double) override { return agg.version() < updates_; }

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
  oc.name = "amsgrad";
  ParamServer ps(init.size(), init.data(), std::make_unique<HostOptimizer>(oc, init.size(), nullptr), 2 * P);
  AggregatorConfig ac;
  ac.variant = Variant::Async;
  ac.workers = P;
  ac.max_staleness = bound;
  Aggregator agg(ac, ps);
  // Heavy-tailed compute times make some gradients very stale.
  Straggler straggler(parse_straggler("pareto:scale=1,shape=1.5"), {}, P, 7);
  std::vector<Sampler> samplers;
  for (int w = 0; w < P; ++w) samplers.emplace_back(d.train.size(), 32, 100 + uint64_t(w));
  Recorder rec(3000);
  EngineSetup es;
  es.ps = &ps;
  es.agg = &agg;
  es.straggler = &straggler;
  es.samplers = &samplers;
  es.workers = {&worker};
  es.listener = &rec;
  run_virtual(es);

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
  c.opt.name = "amsgrad";
  c.lr = 1e-2;
  c.workers = 8;
  c.variant = "async";
  c.max_staleness = 4;
  c.clock = "virtual";
  c.straggler = "pareto:scale=1,shape=1.5";
  c.max_updates = 1500;
  c.eval_every = "0";
  c.progress = "none";
  c.devices = "cpu";
  Trainer t(c, data);
  const RunSummary s = t.run();
  EXPECT_GT(s.stats.dropped_bound, 0);
  EXPECT_LE(s.stats.staleness_max, 4);
  EXPECT_GT(s.final_eval.accuracy, 0.85);
}

}  // namespace
}  // namespace adasync
