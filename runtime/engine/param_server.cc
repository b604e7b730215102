#include "runtime/engine/param_server.h"

#include <cstring>
#include <utility>

namespace adasync {

ParamServer::ParamServer(size_t n, const float* init, std::unique_ptr<HostOptimizer> optimizer, int slots)
    : n_(n), opt_(std::move(optimizer)), alive_(std::make_shared<bool>(true)) {
  EXPECTS(opt_ != nullptr && opt_->size() == n, "optimizer sized for " << (opt_ ? opt_->size() : 0) << " of " << n);
  EXPECTS(slots >= 1, "slots " << slots);
  for (int i = 0; i < slots; ++i) {
    slots_.emplace_back(MemKind::Pinned, n);
    kind_ = slots_.back().kind();
    free_slots_.push_back(i);
  }
  reset(init, 0);
}

ParamServer::~ParamServer() {
  // Every other holder is gone by now (workers are joined first); snapshots
  // released later must not touch the pool.
  *alive_ = false;
  current_.reset();
}

float* ParamServer::take_buffer() {
  std::lock_guard<std::mutex> lk(mu_);
  if (free_buffers_.empty()) {
    buffers_.emplace_back(MemKind::Pinned, n_);
    kind_ = buffers_.back().kind();
    return buffers_.back().data();
  }
  float* p = free_buffers_.back();
  free_buffers_.pop_back();
  return p;
}

void ParamServer::give_buffer(float* p) {
  std::lock_guard<std::mutex> lk(mu_);
  free_buffers_.push_back(p);
}

SnapshotPtr ParamServer::wrap(float* buf, int64_t version) {
  std::shared_ptr<bool> alive = alive_;
  return SnapshotPtr(new Snapshot{version, buf, n_}, [this, alive](const Snapshot* p) {
    if (*alive) give_buffer(const_cast<float*>(p->data));
    delete p;
  });
}

void ParamServer::reset(const float* params, int64_t version) {
  float* buf = take_buffer();
  std::memcpy(buf, params, n_ * sizeof(float));
  publish(wrap(buf, version));
}

SnapshotPtr ParamServer::make_snapshot(const float* params, int64_t version) {
  float* buf = take_buffer();
  std::memcpy(buf, params, n_ * sizeof(float));
  return wrap(buf, version);
}

SnapshotPtr ParamServer::make_snapshot(const std::function<int64_t(float*)>& fill) {
  float* buf = take_buffer();
  int64_t version = 0;
  try {
    version = fill(buf);
  } catch (...) {
    give_buffer(buf);
    throw;
  }
  return wrap(buf, version);
}

void ParamServer::publish(SnapshotPtr s) {
  SnapshotPtr old;
  {
    std::lock_guard<std::mutex> lk(mu_);
    old = std::exchange(current_, std::move(s));
  }
  // `old` may be the last reference: its buffer goes back to the pool, which
  // takes mu_, so it is released here, outside the lock.
}

SnapshotPtr ParamServer::latest() const {
  std::lock_guard<std::mutex> lk(mu_);
  return current_;
}

int64_t ParamServer::version() const {
  std::lock_guard<std::mutex> lk(mu_);
  return current_->version;
}

SnapshotPtr ParamServer::apply(const std::vector<const float*>& grads, const std::vector<float>& c, float lr) {
  ADASYNC_RANGE("ps/apply");
  EXPECTS(grads.size() == c.size() && !grads.empty(), grads.size() << " gradients, " << c.size() << " weights");
  SnapshotPtr cur = latest();
  float* out = take_buffer();
  opt_->step(cur->data, out, grads.data(), c.data(), int(grads.size()), lr);
  SnapshotPtr next = wrap(out, cur->version + 1);
  publish(next);
  return next;
}

SlotLease& SlotLease::operator=(SlotLease&& o) noexcept {
  if (this != &o) {
    release();
    ps_ = std::exchange(o.ps_, nullptr);
    data_ = std::exchange(o.data_, nullptr);
    index_ = std::exchange(o.index_, -1);
  }
  return *this;
}

void SlotLease::release() {
  if (ps_ != nullptr) ps_->release_slot(index_);
  ps_ = nullptr;
  data_ = nullptr;
  index_ = -1;
}

SlotLease ParamServer::acquire_slot() {
  std::unique_lock<std::mutex> lk(slot_mu_);
  slot_cv_.wait(lk, [this] { return slots_closed_ || !free_slots_.empty(); });
  if (slots_closed_) return SlotLease();
  const int i = free_slots_.back();
  free_slots_.pop_back();
  return SlotLease(this, slots_[size_t(i)].data(), i);
}

SlotLease ParamServer::try_acquire_slot(bool* closed) {
  std::lock_guard<std::mutex> lk(slot_mu_);
  *closed = slots_closed_;
  if (slots_closed_ || free_slots_.empty()) return SlotLease();
  const int i = free_slots_.back();
  free_slots_.pop_back();
  return SlotLease(this, slots_[size_t(i)].data(), i);
}

void ParamServer::release_slot(int index) {
  {
    std::lock_guard<std::mutex> lk(slot_mu_);
    free_slots_.push_back(index);
  }
  slot_cv_.notify_one();
}

void ParamServer::close_slots() {
  {
    std::lock_guard<std::mutex> lk(slot_mu_);
    slots_closed_ = true;
  }
  slot_cv_.notify_all();
}

void ParamServer::open_slots() {
  std::lock_guard<std::mutex> lk(slot_mu_);
  slots_closed_ = false;
}

int ParamServer::free_slots() const {
  std::lock_guard<std::mutex> lk(slot_mu_);
  return int(free_slots_.size());
}

}  // namespace adasync
