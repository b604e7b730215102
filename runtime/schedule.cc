#include "runtime/schedule.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include "datasets/rng.h"
#include "runtime/straggler.h"

namespace adasync {

int sqrt_rule_k(double ratio, int k0, int k_prev, int workers) {
  const double target = std::ceil(double(k0) * std::sqrt(std::max(ratio, 0.0)) - 1e-12);
  return std::min(workers, std::max(k_prev, int(std::min(target, 1e9))));
}

int order_stat_k(double ratio, int k0, int workers) {
  if (k0 >= workers) return workers;
  const double rhs = std::max(ratio, 0.0) * double(k0) * k0 / double(workers - k0);
  for (int k = 1; k < workers; ++k)
    if (double(k) * k / double(workers - k) >= rhs - 1e-12) return k;
  return workers;
}

namespace {

class FixedSchedule : public KSchedule {
 public:
  explicit FixedSchedule(int k) : k_(k) {}
  std::string describe() const override { return "fixed K=" + std::to_string(k_); }
  int initial_k() const override { return k_; }
  std::optional<KChange> after_update(double, int, const std::function<double()>&) override { return std::nullopt; }

 private:
  int k_;
};

class AdaSyncSchedule : public KSchedule {
 public:
  AdaSyncSchedule(int k0, int workers, double interval, std::string rule)
      : k0_(k0), p_(workers), interval_(interval), rule_(std::move(rule)), next_(interval) {}
  std::string describe() const override {
    std::ostringstream os;
    os << "adasync (" << rule_ << " rule, K0=" << k0_ << ", every " << interval_ << " s)";
    return os.str();
  }
  int initial_k() const override { return k0_; }
  bool needs_start_loss() const override { return std::isnan(f0_); }
  void set_start_loss(double f0) override { f0_ = f0; }
  std::vector<double> state() const override { return {next_, f0_}; }
  void set_state(const std::vector<double>& s) override {
    if (s.size() == 2) next_ = s[0], f0_ = s[1];
  }

  std::optional<KChange> after_update(double now, int k_now, const std::function<double()>& loss) override {
    if (now < next_) return std::nullopt;
    while (next_ <= now) next_ += interval_;
    if (std::isnan(f0_) || k_now >= p_) return std::nullopt;
    const double ft = loss();
    if (!(ft > 0) || !std::isfinite(ft)) return std::nullopt;
    const double ratio = f0_ / ft;
    int k = rule_ == "order-stat" ? order_stat_k(ratio, k0_, p_) : sqrt_rule_k(ratio, k0_, k_now, p_);
    k = std::max(k, k_now);  // K never decreases
    if (k == k_now) return std::nullopt;
    std::ostringstream why;
    why.precision(3);
    why << rule_ << " rule, F0/Ft = " << ratio;
    return KChange{k_now, k, now, f0_, ft, why.str()};
  }

 private:
  int k0_, p_;
  double interval_;
  std::string rule_;
  double next_;
  double f0_ = std::numeric_limits<double>::quiet_NaN();
};

class PiecewiseSchedule : public KSchedule {
 public:
  explicit PiecewiseSchedule(std::vector<std::pair<double, int>> pts) : pts_(std::move(pts)) {}
  std::string describe() const override {
    std::ostringstream os;
    os << "piecewise";
    for (auto& [t, k] : pts_) os << " " << t << "s:" << k;
    return os.str();
  }
  int initial_k() const override { return pts_.front().second; }
  std::optional<KChange> after_update(double now, int k_now, const std::function<double()>&) override {
    int k = pts_.front().second;
    for (auto& [t, kk] : pts_)
      if (now >= t) k = kk;
    if (k == k_now) return std::nullopt;
    return KChange{k_now, k, now, NAN, NAN, "piecewise schedule"};
  }

 private:
  std::vector<std::pair<double, int>> pts_;
};

}  // namespace

std::unique_ptr<KSchedule> make_schedule(const ScheduleConfig& c) {
  if (c.kind == "fixed") return std::make_unique<FixedSchedule>(c.k);
  if (c.kind == "adasync") {
    if (c.k < 1 || c.k > c.workers)
      throw UsageError("--k0: expected a start K in [1, --workers = " + std::to_string(c.workers) + "], found " +
                       std::to_string(c.k));
    if (!(c.interval > 0))
      throw UsageError("--schedule-every: AdaSync needs a positive interval T_0, found " + std::to_string(c.interval));
    if (c.rule != "sqrt" && c.rule != "order-stat")
      throw UsageError("--adasync-rule: expected sqrt or order-stat, found '" + c.rule + "'");
    return std::make_unique<AdaSyncSchedule>(c.k, c.workers, c.interval, c.rule);
  }
  if (c.kind == "piecewise") {
    std::vector<std::pair<double, int>> pts;
    std::stringstream ss(c.points);
    std::string item;
    while (std::getline(ss, item, ',')) {
      const auto colon = item.find(':');
      if (colon == std::string::npos)
        throw UsageError("--schedule-points: expected TIME:K items such as 0:1,30s:2, found '" + item + "'");
      const double t = parse_seconds(item.substr(0, colon), "--schedule-points");
      int k = 0;
      try {
        k = std::stoi(item.substr(colon + 1));
      } catch (const std::exception&) {
        k = 0;
      }
      if (k < 1 || k > c.workers)
        throw UsageError("--schedule-points: K must be in [1, --workers = " + std::to_string(c.workers) + "], found '" +
                         item + "'");
      if (!pts.empty() && t <= pts.back().first)
        throw UsageError("--schedule-points: times must increase, found '" + item + "' after " +
                         std::to_string(pts.back().first) + " s");
      pts.emplace_back(t, k);
    }
    if (pts.empty() || pts.front().first != 0)
      throw UsageError("--schedule-points: the list must start at time 0 (e.g. 0:1,30s:2), found '" + c.points + "'");
    return std::make_unique<PiecewiseSchedule>(std::move(pts));
  }
  throw UsageError("--schedule: expected fixed, adasync or piecewise, found '" + c.kind + "'");
}

// ------------------------------------------------------------------ sketches
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

void validate(const LrConfig& c) {
  if (c.rule != "const" && c.rule != "staleness" && c.rule != "distance")
    throw UsageError("--lr-rule: expected const, staleness or distance, found '" + c.rule + "'");
  if (c.rule == "distance" && !(c.c > 0))
    throw UsageError("--lr-c: the distance rule needs a positive C, found " + std::to_string(c.c));
  if (c.distance != "exact" && c.distance != "sketch")
    throw UsageError("--lr-distance: expected exact or sketch, found '" + c.distance + "'");
  if (c.sketch_buckets < 16) throw UsageError("--sketch-buckets: expected at least 16, found " + std::to_string(c.sketch_buckets));
}

LrRule::LrRule(const LrConfig& c, size_t n, uint64_t seed) : cfg_(c), n_(n) {
  validate(c);
  if (c.rule == "distance" && c.distance == "sketch") sketch_ = std::make_unique<DistanceSketch>(n, c.sketch_buckets, seed, 1024);
}

void LrRule::on_publish(const Snapshot& s) {
  if (sketch_) sketch_->record(s.version, s.data);
}

UpdateRates LrRule::rates(const Aggregator& agg, const Snapshot& current) {
  UpdateRates r;
  r.lr = float(cfg_.lr);
  const auto& pending = agg.pending();
  const size_t k = pending.size();
  if (cfg_.rule == "const" || k == 0) {
    last_mean_rate_ = cfg_.lr;
    return r;  // weights 1/K
  }
  r.weights.resize(k);
  double sum = 0;
  for (size_t l = 0; l < k; ++l) {
    double eta = cfg_.lr;
    const int64_t staleness = current.version - pending[l].tau;
    if (cfg_.rule == "staleness") {
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

}  // namespace adasync
