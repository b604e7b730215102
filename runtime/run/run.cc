#include <algorithm>

#include "runtime/run/run.h"

#include "kernels/mix_hash.h"

namespace adasync {

EvalResult Run::evaluate(const SnapshotPtr& s, double now, bool final, const nlohmann::json& extra) {
  // Counted before the evaluation: training goes on while it runs, and the
  // samples must match the snapshot's update count.
  const int64_t samples = reporter->counted_samples();
  const EvalResult ev = evaluator->evaluate(s->data, final ? 0 : cfg.eval_samples);
  reporter->evaluated(ev, s->version, now, final, extra, samples);
  return ev;
}

EvalResult Run::evaluate_at(const SnapshotPtr& s, double now, int64_t samples) {
  const EvalResult ev = evaluator->evaluate(s->data, cfg.eval_samples);
  reporter->evaluated(ev, s->version, now, false, nlohmann::json::object(), samples);
  return ev;
}

Sampler make_sampler(const TrainConfig& c, size_t train_size, int w) {
  return Sampler(train_size, c.batch, c.seed * 1000003ULL + 17 * uint64_t(w) + 1, c.shard ? w : 0,
                 c.shard ? c.workers : 1);
}

Augmentation make_augmentation(const TrainConfig& c, const DataSplit& d) {
  Augmentation a;
  a.on = c.augment;
  a.seed = mix64(c.seed ^ 0x6175676d656e74ULL);  // "augment": its own stream
  for (int ch = 0; ch < d.train.c; ++ch)
    a.fill.push_back(size_t(ch) < d.mean.size() ? float((0.0 - d.mean[size_t(ch)]) / d.stddev[size_t(ch)]) : 0.f);
  return a;
}

std::unique_ptr<Dataset> training_sample(const Dataset& train, int images, uint64_t seed) {
  const size_t m = std::min(size_t(images), train.size());
  auto ls = std::make_unique<Dataset>();
  ls->name = train.name + "-sample";
  ls->c = train.c, ls->h = train.h, ls->w = train.w, ls->classes = train.classes;
  Sampler pick(train.size(), int(m), seed, 0, 1, true);
  std::vector<int32_t> idx;
  pick.next(&idx);
  for (int32_t i : idx) {
    ls->x.insert(ls->x.end(), train.row(size_t(i)), train.row(size_t(i)) + train.dim());
    ls->y.push_back(train.y[size_t(i)]);
  }
  return ls;
}

}  // namespace adasync
