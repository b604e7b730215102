#include "runtime/algorithms/device_sync.h"

#include <cmath>

namespace adasync {

// One step's read-back: each worker's loss in pinned memory and a completion
// event per stream.
struct DeviceSync::Slot {
  Buffer<float> losses;
  std::vector<Event> done;
};

DeviceSync::DeviceSync(std::vector<ModelWorker*> workers, const OptimizerConfig& opt, const float* init)
    : workers_(std::move(workers)), opt_(opt) {
  EXPECTS(!workers_.empty(), "no workers");
  EXPECTS(opt.name == OptimizerKind::Sgd, "on-device updates support SGD (with momentum), not " << name_of(opt.name));
  n_ = workers_[0]->num_params();
  layout_ = workers_[0]->model().layout();
  size_t at = 0;
  if (opt.no_decay_bn)
    for (const auto& r : layout_.no_decay) {
      if (r.offset > at) segments_.emplace_back(at, r.offset, true);
      segments_.emplace_back(r.offset, r.offset + r.count, false);
      at = r.offset + r.count;
    }
  if (at < layout_.trainable) segments_.emplace_back(at, layout_.trainable, true);
  std::vector<Context*> ctxs;
  for (ModelWorker* w : workers_) {
    Context& c = w->context();
    EXPECTS(c.is_cuda(), "DeviceSync needs CUDA workers");
    ctxs.push_back(&c);
    mem_copy(w->model().own_params(), init, n_ * sizeof(float), c.stream());
    w->model().use_params(nullptr);
    if (opt.momentum > 0) {
      velocity_.emplace_back(MemKind::Device, n_, c.device());
      ops::fill<float>(c, velocity_.back().data(), 0.f, n_);
    }
  }
  if (workers_.size() > 1) comm_ = std::make_unique<Communicator>(ctxs);
  for (Context* c : ctxs) c->synchronize();
}

DeviceSync::~DeviceSync() {
  for (ModelWorker* w : workers_) w->context().synchronize();
}

void DeviceSync::step(const std::vector<std::vector<int32_t>>& batches, const std::vector<double>& delays, float lr) {
  ADASYNC_RANGE("device_sync/step");
  const size_t P = workers_.size();
  EXPECTS(batches.size() == P, batches.size() << " batches for " << P << " workers");
  // At most two steps in flight: each worker's index staging is double-buffered.
  if (inflight_.size() >= 2)
    for (auto& e : inflight_[inflight_.size() - 2]->done) e.synchronize();
  std::unique_ptr<Slot> slot;
  if (!spare_.empty()) {
    slot = std::move(spare_.back());
    spare_.pop_back();
  } else {
    slot = std::make_unique<Slot>();
    slot->losses = Buffer<float>(MemKind::Pinned, P);
    slot->done.resize(P);
  }
  std::vector<float*> grads;
  for (size_t w = 0; w < P; ++w) {
    ModelWorker& mw = *workers_[w];
    Context& c = mw.context();
    c.make_current();
    mw.enqueue_gradient(batches[w]);
    if (w < delays.size() && delays[w] > 0) ops::spin_delay(c, delays[w], nullptr, 0);
    mem_copy(slot->losses.data() + w, mw.model().loss_ptr(), sizeof(float), c.stream());
    grads.push_back(mw.model().grads());
  }
  if (comm_) comm_->all_reduce_sum(grads, n_);
  // Mean of P gradients folded into the update: v' = mu v' + sum g + P wd w and
  // w -= (lr / P) v' equals SGD on the mean gradient with v = v' / P.
  const float inv = 1.0f / float(P);
  for (size_t w = 0; w < P; ++w) {
    ModelWorker& mw = *workers_[w];
    Context& c = mw.context();
    c.make_current();
    float* wp = mw.model().own_params();
    for (const auto& [b, e, decayed] : segments_)
      ops::sgd_update(c, wp + b, grads[w] + b, velocity_.empty() ? nullptr : velocity_[w].data() + b, e - b, lr * inv,
                      float(opt_.momentum), decayed ? float(opt_.weight_decay) * float(P) : 0.f, opt_.nesterov);
    // Batch-norm buffers: the all-reduced statistics are P times their mean.
    for (const auto& r : layout_.buffers) {
      if (r.kind == TensorKind::Count) ops::axpy<float>(c, inv, grads[w] + r.offset, wp + r.offset, r.count);
      else ops::ema_update(c, wp + r.offset, grads[w] + r.offset, r.count, float(layout_.bn_momentum), inv);
    }
    slot->done[w].record(c);
  }
  inflight_.push_back(std::move(slot));
}

// Reads the losses of the finished steps: all of them (wait), or all but the
// newest, which the GPU may still be running.
std::vector<float> DeviceSync::collect(bool wait) {
  const size_t take = wait ? inflight_.size() : (inflight_.empty() ? 0 : inflight_.size() - 1);
  std::vector<float> out;
  for (size_t i = 0; i < take; ++i) {
    Slot& s = *inflight_[i];
    for (auto& e : s.done) e.synchronize();
    double sum = 0;
    for (size_t w = 0; w < workers_.size(); ++w) sum += s.losses.data()[w];
    out.push_back(float(sum / double(workers_.size())));
    spare_.push_back(std::move(inflight_[i]));
  }
  inflight_.erase(inflight_.begin(), inflight_.begin() + long(take));
  return out;
}

std::vector<float> DeviceSync::drain() { return collect(true); }
std::vector<float> DeviceSync::completed() { return collect(false); }

std::vector<float> DeviceSync::velocity_to_host() {
  drain();
  if (velocity_.empty()) return {};
  std::vector<float> v(n_);
  Context& c = workers_[0]->context();
  mem_copy(v.data(), velocity_[0].data(), n_ * sizeof(float), c.stream());
  c.synchronize();
  const float inv = 1.0f / float(workers_.size());
  for (float& x : v) x *= inv;
  return v;
}

void DeviceSync::velocity_from_host(const std::vector<float>& v) {
  if (velocity_.empty()) return;
  EXPECTS(v.size() == n_, "velocity of " << v.size() << " values for " << n_ << " parameters");
  std::vector<float> scaled(v);
  for (float& x : scaled) x *= float(workers_.size());
  for (size_t w = 0; w < workers_.size(); ++w) {
    Context& c = workers_[w]->context();
    mem_copy(velocity_[w].data(), scaled.data(), n_ * sizeof(float), c.stream());
    c.synchronize();
  }
}

void DeviceSync::params_to_host(float* out) {
  drain();
  ModelWorker& w = *workers_[0];
  mem_copy(out, w.model().own_params(), n_ * sizeof(float), w.context().stream());
  w.context().synchronize();
}

}  // namespace adasync
