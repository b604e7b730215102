#include "runtime/engine/aggregator.h"

#include <algorithm>

namespace adasync {


const char* to_string(Drop d) {
  switch (d) {
    case Drop::None: return "none";
    case Drop::Stale: return "stale";
    case Drop::OverBound: return "over-staleness-bound";
    case Drop::NonFinite: return "non-finite";
  }
  return "?";
}

Aggregator::Aggregator(const AggregatorConfig& cfg, ParamServer& ps)
    : cfg_(cfg), ps_(ps), counted_this_round_(size_t(cfg.workers), 0) {
  EXPECTS(cfg.workers >= 1, "workers " << cfg.workers);
  alive_ = cfg.workers;
  dead_.assign(size_t(cfg.workers), 0);
  stats_.pushes_by_worker.assign(size_t(cfg.workers), 0);
  stats_.counted_by_worker.assign(size_t(cfg.workers), 0);
  set_k(cfg.k);
  version_ = ps.version();
}

void Aggregator::set_k(int k) {
  k_requested_ = k;
  // Rules that take K distinct workers can wait for no more than are alive.
  const bool distinct = cfg_.variant == Variant::KSync || cfg_.variant == Variant::KAsync;
  const int cap = distinct ? std::max(1, alive_) : cfg_.workers;
  if (cfg_.variant == Variant::Sync) k_ = std::max(1, alive_);
  else if (cfg_.variant == Variant::Async) k_ = 1;
  else k_ = std::clamp(k, 1, std::min(cfg_.workers, cap));
}

bool Aggregator::worker_failed(int w) {
  if (w < 0 || w >= cfg_.workers || dead_[size_t(w)]) return false;
  dead_[size_t(w)] = 1;
  --alive_;
  set_k(k_requested_);
  return !pending_.empty() && int(pending_.size()) >= k_;
}

bool Aggregator::accepts(int64_t tau) const {
  if (is_synchronous(cfg_.variant)) return tau == version_;
  return cfg_.max_staleness < 0 || version_ - tau <= cfg_.max_staleness;
}

Aggregator::PushResult Aggregator::push(Push p) {
  PushResult r;
  const Variant v = cfg_.variant;
  const bool sync = is_synchronous(v);
  ++stats_.pushes;
  ++stats_.pushes_by_worker[size_t(p.worker)];

  if (sync && p.tau != version_) r.drop = Drop::Stale;
  else if (!sync && cfg_.max_staleness >= 0 && version_ - p.tau > cfg_.max_staleness) r.drop = Drop::OverBound;
  else if (!p.finite) r.drop = Drop::NonFinite;

  if (r.drop != Drop::None) {
    switch (r.drop) {
      case Drop::Stale: ++stats_.dropped_stale; break;
      case Drop::OverBound: ++stats_.dropped_bound; break;
      default: ++stats_.dropped_nonfinite; break;
    }
    // A stale gradient's worker already has a pull from the update that made
    // it stale; a sync worker whose fresh gradient was rejected tries another
    // batch at w_j; an async worker starts over at the latest version.
    r.next = r.drop == Drop::Stale ? Next::Wait : (sync ? Next::Continue : Next::Pull);
    return r;
  }

  r.counted = true;
  ++stats_.counted;
  ++stats_.counted_by_worker[size_t(p.worker)];
  counted_this_round_[size_t(p.worker)] = 1;
  pending_.push_back(std::move(p));
  r.update_due = int(pending_.size()) >= k_;
  switch (v) {
    case Variant::KBatchSync: r.next = Next::Continue; break;
    case Variant::KBatchAsync: r.next = Next::Pull; break;
    default: r.next = Next::Wait; break;  // sync, k-sync, async, k-async: wait for the update
  }
  return r;
}

std::vector<int64_t> Aggregator::pending_staleness() const {
  std::vector<int64_t> s;
  s.reserve(pending_.size());
  for (const auto& p : pending_) s.push_back(version_ - p.tau);
  return s;
}

std::vector<const float*> Aggregator::pending_gradients() const {
  std::vector<const float*> g;
  g.reserve(pending_.size());
  for (const auto& p : pending_) g.push_back(p.slot.data());
  return g;
}

Aggregator::UpdateResult Aggregator::update(const UpdateRates& rates) {
  EXPECTS(!pending_.empty(), "update with no counted gradient");
  const size_t k = pending_.size();
  std::vector<const float*> grads(k);
  std::vector<float> c(k, 1.0f / float(k));
  if (!rates.weights.empty()) {
    EXPECTS(rates.weights.size() == k, rates.weights.size() << " weights for " << k << " gradients");
    c = rates.weights;
  }
  for (size_t l = 0; l < k; ++l) grads[l] = pending_[l].slot.data();

  UpdateResult r;
  r.snapshot = ps_.apply(grads, c, rates.lr);
  r.applied.reserve(k);
  for (size_t l = 0; l < k; ++l) {
    const Push& p = pending_[l];
    const int64_t s = version_ - p.tau;
    stats_.staleness_sum += double(s);
    stats_.staleness_max = std::max(stats_.staleness_max, s);
    r.applied.push_back(Applied{p.worker, p.tau, p.batch, s, c[l], p.loss, p.time});
  }
  ++version_;
  ++stats_.updates;

  const Variant v = cfg_.variant;
  if (is_synchronous(v)) {
    r.cancel_all = true;
    for (int w = 0; w < cfg_.workers; ++w) r.wake.push_back(w);
  } else if (v == Variant::Async || v == Variant::KAsync) {
    for (int w = 0; w < cfg_.workers; ++w)
      if (counted_this_round_[size_t(w)]) r.wake.push_back(w);
  }
  std::fill(counted_this_round_.begin(), counted_this_round_.end(), 0);
  pending_.clear();
  return r;
}

}  // namespace adasync
