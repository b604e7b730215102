#include "runtime/engine/lr_rule.h"

#include <algorithm>
#include <cmath>

#include "datasets/rng.h"

namespace adasync {

DistanceSketch::DistanceSketch(size_t n, size_t m, uint64_t seed, size_t versions)
    : n_(n), m_(std::max<size_t>(1, m)), keep_(std::max<size_t>(2, versions)) {
  Rng rng(seed, 0x5e7c);
  sign_.resize((n_ + m_ - 1) / m_);
  for (auto& s : sign_) s = (rng.next_u64() >> 63) ? 1.f : -1.f;
}

void DistanceSketch::record(int64_t version, const float* w) {
  std::vector<float> s(m_, 0.f);
  for (size_t r = 0; r < sign_.size(); ++r) {
    const float sg = sign_[r];
    const size_t base = r * m_, len = std::min(m_, n_ - base);
    const float* row = w + base;
    for (size_t c = 0; c < len; ++c) s[c] += sg * row[c];
  }
  ring_.emplace_back(version, std::move(s));
  while (ring_.size() > keep_) ring_.pop_front();
}

bool DistanceSketch::distance2(int64_t a, int64_t b, double* out) const {
  const std::vector<float>* sa = nullptr;
  const std::vector<float>* sb = nullptr;
  for (const auto& [v, s] : ring_) {
    if (v == a) sa = &s;
    if (v == b) sb = &s;
  }
  if (sa == nullptr || sb == nullptr) return false;
  double d = 0;
  for (size_t c = 0; c < m_; ++c) {
    const double x = double((*sa)[c]) - double((*sb)[c]);
    d += x * x;
  }
  *out = d;
  return true;
}

std::vector<int64_t> DistanceSketch::versions() const {
  std::vector<int64_t> v;
  for (const auto& [ver, s] : ring_) v.push_back(ver);
  return v;
}

std::vector<float> DistanceSketch::values() const {
  std::vector<float> v;
  for (const auto& [ver, s] : ring_) v.insert(v.end(), s.begin(), s.end());
  return v;
}

void DistanceSketch::restore(const std::vector<int64_t>& versions, const std::vector<float>& values) {
  EXPECTS(values.size() == versions.size() * m_, values.size() << " sketch values for " << versions.size() << " versions");
  ring_.clear();
  for (size_t i = 0; i < versions.size(); ++i)
    ring_.emplace_back(versions[i], std::vector<float>(values.begin() + long(i * m_), values.begin() + long((i + 1) * m_)));
}

double exact_distance2(const float* a, const float* b, size_t n) {
  double d = 0;
  for (size_t i = 0; i < n; ++i) {
    const double x = double(a[i]) - double(b[i]);
    d += x * x;
  }
  return d;
}


LrRule::LrRule(const LrConfig& c, size_t n, uint64_t seed) : cfg_(c), n_(n) {
  validate(c);
  if (c.rule == LrKind::Distance && c.distance == DistanceKind::Sketch) sketch_ = std::make_unique<DistanceSketch>(n, c.sketch_buckets, seed, 1024);
}

void LrRule::on_publish(const Snapshot& s) {
  if (sketch_) sketch_->record(s.version, s.data);
}

UpdateRates LrRule::rates(const Aggregator& agg, const Snapshot& current) {
  UpdateRates r;
  r.lr = float(cfg_.lr);
  const auto& pending = agg.pending();
  const size_t k = pending.size();
  if (cfg_.rule == LrKind::Const || k == 0) {
    last_mean_rate_ = cfg_.lr;
    return r;  // weights 1/K
  }
  r.weights.resize(k);
  double sum = 0;
  for (size_t l = 0; l < k; ++l) {
    double eta = cfg_.lr;
    const int64_t staleness = current.version - pending[l].tau;
    if (cfg_.rule == LrKind::Staleness) {
      eta = cfg_.lr / double(std::max<int64_t>(1, staleness));
    } else if (staleness > 0) {
      double d2 = 0;
      if (!(sketch_ && sketch_->distance2(current.version, pending[l].tau, &d2))) {
        EXPECTS(pending[l].params != nullptr, "distance rule without the gradient's snapshot");
        d2 = exact_distance2(current.data, pending[l].params->data, n_);
      }
      eta = d2 > 0 ? std::min(cfg_.c / d2, cfg_.lr) : cfg_.lr;
    }
    r.weights[l] = float(eta / cfg_.lr / double(k));
    sum += eta;
  }
  last_mean_rate_ = sum / double(k);
  return r;
}

double lr_multiplier(const LrConfig& c, double epoch) {
  double m = 1;
  if (c.schedule == LrSchedule::Step) {
    for (double at : c.milestones)
      if (epoch >= at) m *= c.gamma;
  } else if (c.schedule == LrSchedule::Cosine && c.total_epochs > 0) {
    const double t = std::min(1.0, std::max(0.0, epoch / c.total_epochs));
    m = 0.5 * (1 + std::cos(M_PI * t));
  }
  // Linear warm-up; the first update already moves (at 1 / warm-up updates of lr).
  if (c.warmup > 0 && epoch < c.warmup)
    m *= std::max(epoch, c.grads_per_epoch > 0 ? 1 / c.grads_per_epoch : 0.0) / c.warmup;
  return m;
}

}  // namespace adasync
