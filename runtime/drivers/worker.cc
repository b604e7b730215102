#include "runtime/drivers/worker.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <thread>

namespace adasync {

// ------------------------------------------------------------------ CancelSource
CancelSource::CancelSource() {
  bool mapped = false;
  mapped_ = static_cast<volatile uint32_t*>(mapped_alloc(sizeof(uint32_t), &mapped));
  if (!mapped) {
    mapped_free(const_cast<uint32_t*>(mapped_), false);
    mapped_ = nullptr;
  } else {
    *mapped_ = 0;
  }
}

CancelSource::~CancelSource() {
  if (mapped_ != nullptr) mapped_free(const_cast<uint32_t*>(mapped_), true);
}

void CancelSource::cancel() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    const uint64_t g = gen_.load(std::memory_order_relaxed) + 1;
    gen_.store(g, std::memory_order_release);
    if (mapped_ != nullptr) *mapped_ = uint32_t(g);
  }
  cv_.notify_all();
}

namespace {
// A real-clock delay as a clock duration: capped at 1e9 s (31 years), since
// steady_clock's nanoseconds overflow past 9.2e9 s and would wrap to a short wait.
std::chrono::duration<double> real_delay(double seconds) {
  return std::chrono::duration<double>(std::min(seconds, 1e9));
}
}  // namespace

bool CancelSource::sleep_unless_cancelled(double seconds, uint64_t gen) const {
  std::unique_lock<std::mutex> lk(mu_);
  return !cv_.wait_for(lk, real_delay(seconds),
                       [&] { return gen_.load(std::memory_order_acquire) != gen; });
}

bool all_finite(const float* x, size_t n) {
  bool ok = true;
  for (size_t i = 0; i < n; ++i) ok &= std::isfinite(x[i]);
  return ok;
}

// ------------------------------------------------------------------ device data
namespace {
// The training set resident on a device, shared by every worker on it.
struct DeviceData {
  Buffer<float> x;
  Buffer<int32_t> y;
};

std::shared_ptr<DeviceData> device_data(Context& ctx, const Dataset& d) {
  static std::mutex mu;
  static std::map<std::pair<int, const Dataset*>, std::weak_ptr<DeviceData>> cache;
  std::lock_guard<std::mutex> lk(mu);
  auto& slot = cache[{ctx.device(), &d}];
  if (auto p = slot.lock()) return p;
  auto p = std::make_shared<DeviceData>();
  p->x = Buffer<float>(MemKind::Device, d.x.size(), ctx.device());
  p->y = Buffer<int32_t>(MemKind::Device, d.y.size(), ctx.device());
  mem_copy(p->x.data(), d.x.data(), d.x.size() * sizeof(float), ctx.stream());
  mem_copy(p->y.data(), d.y.data(), d.y.size() * sizeof(int32_t), ctx.stream());
  ctx.synchronize();
  slot = p;
  return p;
}
}  // namespace

// CUDA staging of one worker: indices in pinned memory (two buffers, used in
// turn), the gathered batch on the device, the step captured as a graph per
// index buffer, scalars read back through pinned memory.
struct ModelWorker::Device {
  std::shared_ptr<DeviceData> data;
  Buffer<int32_t> idx_host[2];
  Buffer<int32_t> idx_dev, y_dev, bad_dev, bad_host;
  Buffer<float> x_dev, loss_host;
  Buffer<float> x_aug_dev, fill_dev;  // --augment
  Event done;
  Graph graph[2];
  int parity = 0;
  int graph_batch = 0;  // batch size the graphs were captured for
  int eager_steps = 0;  // steps run before capture (warm-up: algorithm choice, workspace sizing)
};

ModelWorker::ModelWorker(int id, Context& ctx, const std::string& arch, const Dataset& train, int batch)
    : id_(id),
      ctx_(ctx),
      data_(train),
      model_(ctx, arch, Shape{train.c, train.h, train.w}, train.classes, batch) {
  const std::string w = "w" + std::to_string(id);
  range_pull_ = w + "/pull";
  range_fwd_ = w + "/forward";
  range_bwd_ = w + "/backward";
  range_push_ = w + "/push";
  range_delay_ = w + "/delay";
  if (ctx.is_cuda()) {
    dev_ = std::make_unique<Device>();
    dev_->data = device_data(ctx, train);
    const int dv = ctx.device();
    // The indices, then the epoch as two words (read by the augmentation kernel).
    dev_->idx_host[0] = Buffer<int32_t>(MemKind::Pinned, size_t(batch) + 2, dv);
    dev_->idx_host[1] = Buffer<int32_t>(MemKind::Pinned, size_t(batch) + 2, dv);
    dev_->idx_dev = Buffer<int32_t>(MemKind::Device, size_t(batch) + 2, dv);
    dev_->y_dev = Buffer<int32_t>(MemKind::Device, size_t(batch), dv);
    dev_->x_dev = Buffer<float>(MemKind::Device, size_t(batch) * train.dim(), dv);
    dev_->bad_dev = Buffer<int32_t>(MemKind::Device, 1, dv);
    dev_->bad_host = Buffer<int32_t>(MemKind::Pinned, 1, dv);
    dev_->loss_host = Buffer<float>(MemKind::Pinned, 1, dv);
  } else {
    x_.resize(size_t(batch) * train.dim());
    y_.resize(size_t(batch));
  }
}

void ModelWorker::set_augmentation(const Augmentation& a) {
  EXPECTS(!a.on || (int(a.fill.size()) == data_.c && a.pad >= 0), "augmentation fill for " << data_.c << " channels");
  aug_ = a;
  if (!a.on) return;
  if (dev_) {
    dev_->x_aug_dev = Buffer<float>(MemKind::Device, dev_->x_dev.size(), ctx_.device());
    dev_->fill_dev = Buffer<float>(MemKind::Device, a.fill.size(), ctx_.device());
    mem_copy(dev_->fill_dev.data(), a.fill.data(), a.fill.size() * sizeof(float), ctx_.stream());
    ctx_.synchronize();
  } else {
    x_aug_.resize(x_.size());
  }
}

ModelWorker::~ModelWorker() {
  if (dev_) ctx_.synchronize();
}

void ModelWorker::pull(const SnapshotPtr& s) {
  ADASYNC_RANGE(range_pull_);
  ctx_.make_current();
  params_ = s;
  if (ctx_.is_cuda()) {
    mem_copy(model_.own_params(), s->data, s->size * sizeof(float), ctx_.stream());
  } else {
    model_.use_params(s->data);  // zero copy: the snapshot is immutable and we hold it
  }
}

bool ModelWorker::compute(const std::vector<int32_t>& indices, float* slot, double delay,
                          const CancelSource* cancel, uint64_t gen, GradResult* out) {
  EXPECTS(params_ != nullptr, "compute before the first pull");
  const int n = int(indices.size());
  const size_t dim = data_.dim();
  auto cancelled = [&] { return cancel != nullptr && cancel->generation() != gen; };

  if (!ctx_.is_cuda()) {
    for (int i = 0; i < n; ++i) {
      std::memcpy(x_.data() + size_t(i) * dim, data_.row(size_t(indices[size_t(i)])), dim * sizeof(float));
      y_[size_t(i)] = data_.y[size_t(indices[size_t(i)])];
    }
    const float* x = x_.data();
    if (aug_.on) {
      const int32_t epoch[2] = {int32_t(uint32_t(epoch_)), int32_t(uint32_t(epoch_ >> 32))};
      ops::augment_crop_flip(ctx_, x_.data(), x_aug_.data(), indices.data(), n, data_.c, data_.h, data_.w, aug_.pad,
                             aug_.flip, aug_.seed, epoch, aug_.fill.data());
      x = x_aug_.data();
    }
    model_.use_grads(slot);
    model_.set_batch_key(indices.data(), n, 0);  // dropout masks: the batch's own
    {
      ADASYNC_RANGE(range_fwd_);
      if (!model_.forward_loss(x, y_.data(), n, cancelled)) return false;
    }
    {
      ADASYNC_RANGE(range_bwd_);
      if (!model_.backward(x, n, cancelled)) return false;
    }
    if (delay > 0) {
      ADASYNC_RANGE(range_delay_);
      if (cancel != nullptr) {
        if (!cancel->sleep_unless_cancelled(delay, gen)) return false;
      } else {
        std::this_thread::sleep_for(real_delay(delay));
      }
    }
    int32_t bad = 0;
    ops::count_nonfinite(ctx_, slot, model_.num_params(), &bad);
    out->loss = *model_.loss_ptr();
    out->finite = bad == 0 && std::isfinite(out->loss);
    return !cancelled();
  }

  // CUDA: the gradient step on the stream, then the delay and the push.
  Device& d = *dev_;
  enqueue_gradient(indices);
  ops::count_nonfinite(ctx_, model_.grads(), model_.num_params(), d.bad_dev.data());
  if (delay > 0) {
    ADASYNC_RANGE(range_delay_);
    ops::spin_delay(ctx_, delay, cancel != nullptr ? cancel->mapped() : nullptr, uint32_t(gen));
  }
  {
    ADASYNC_RANGE(range_push_);
    mem_copy(slot, model_.grads(), model_.num_params() * sizeof(float), ctx_.stream());
    mem_copy(d.loss_host.data(), model_.loss_ptr(), sizeof(float), ctx_.stream());
    mem_copy(d.bad_host.data(), d.bad_dev.data(), sizeof(int32_t), ctx_.stream());
    d.done.record(ctx_);
    d.done.synchronize();
  }
  out->loss = d.loss_host.data()[0];
  out->finite = d.bad_host.data()[0] == 0 && std::isfinite(out->loss);
  return !cancelled();
}

void ModelWorker::enqueue_gradient(const std::vector<int32_t>& indices) {
  EXPECTS(ctx_.is_cuda() && dev_, "enqueue_gradient needs a CUDA worker");
  ctx_.make_current();
  Device& d = *dev_;
  const int n = int(indices.size());
  const int par = d.parity;
  d.parity ^= 1;
  std::memcpy(d.idx_host[par].data(), indices.data(), size_t(n) * sizeof(int32_t));
  d.idx_host[par].data()[n] = int32_t(uint32_t(epoch_));
  d.idx_host[par].data()[n + 1] = int32_t(uint32_t(epoch_ >> 32));
  // Indices -> device, gather, forward, backward: the fixed part of a step,
  // captured as a graph once warm-up (two eager steps) has chosen the cuDNN
  // algorithms and sized every workspace.
  auto step = [&] {
    mem_copy(d.idx_dev.data(), d.idx_host[par].data(), size_t(n + 2) * sizeof(int32_t), ctx_.stream());
    ops::gather_rows(ctx_, d.data->x.data(), d.data->y.data(), d.idx_dev.data(), n, data_.dim(), d.x_dev.data(),
                     d.y_dev.data());
    const float* x = d.x_dev.data();
    if (aug_.on) {
      ops::augment_crop_flip(ctx_, d.x_dev.data(), d.x_aug_dev.data(), d.idx_dev.data(), n, data_.c, data_.h, data_.w,
                             aug_.pad, aug_.flip, aug_.seed, d.idx_dev.data() + n, d.fill_dev.data());
      x = d.x_aug_dev.data();
    }
    model_.set_batch_key(d.idx_dev.data(), n, 0);
    {
      ADASYNC_RANGE(range_fwd_);
      model_.forward_loss(x, d.y_dev.data(), n);
    }
    {
      ADASYNC_RANGE(range_bwd_);
      model_.backward(x, n);
    }
  };
  if (d.graph_batch != n) {
    d.graph[0].reset();
    d.graph[1].reset();
    d.graph_batch = n;
    d.eager_steps = 0;
  }
  if (d.graph[par].ready()) {
    d.graph[par].launch(ctx_);
  } else if (d.eager_steps < 2 || !ctx_.use_graphs) {
    step();
    ++d.eager_steps;
  } else {
    try {
      d.graph[par].begin_capture(ctx_);
      step();
      d.graph[par].end_capture(ctx_);
      d.graph[par].launch(ctx_);
    } catch (const Error& e) {
      // A capture that fails leaves nothing launched: end it, go eager for good.
      d.graph[par].abort_capture(ctx_);
      ctx_.use_graphs = false;
      std::fprintf(stderr, "adasync: worker %d: CUDA graph capture failed, running eagerly: %s\n", id_, e.what());
      step();
    }
  }
}

// ------------------------------------------------------------------ Evaluator
struct Evaluator::Device {
  std::shared_ptr<DeviceData> data;
  Buffer<float> params_dev;
  Buffer<float> loss_host;
  Buffer<int32_t> correct_host;
  Event done;
};

Evaluator::Evaluator(Context& ctx, const std::string& arch, const Dataset& test, int batch)
    : ctx_(ctx),
      data_(test),
      batch_(batch),
      model_(ctx, arch, Shape{test.c, test.h, test.w}, test.classes, batch) {
  if (ctx.is_cuda()) {
    dev_ = std::make_unique<Device>();
    dev_->data = device_data(ctx, test);
    dev_->loss_host = Buffer<float>(MemKind::Pinned, 1, ctx.device());
    dev_->correct_host = Buffer<int32_t>(MemKind::Pinned, 1, ctx.device());
  }
}

Evaluator::~Evaluator() {
  if (dev_) ctx_.synchronize();
}

EvalResult Evaluator::evaluate(const float* params, size_t limit) {
  ADASYNC_RANGE("eval");
  ctx_.make_current();
  const size_t total = limit == 0 ? data_.size() : std::min(limit, data_.size());
  double loss = 0;
  int64_t correct = 0;
  if (ctx_.is_cuda()) mem_copy(model_.own_params(), params, model_.num_params() * sizeof(float), ctx_.stream());
  else model_.use_params(params);
  for (size_t i0 = 0; i0 < total; i0 += size_t(batch_)) {
    const int n = int(std::min<size_t>(size_t(batch_), total - i0));
    if (ctx_.is_cuda()) {
      model_.evaluate_batch(dev_->data->x.data() + i0 * data_.dim(), dev_->data->y.data() + i0, n);
      mem_copy(dev_->loss_host.data(), model_.loss_ptr(), sizeof(float), ctx_.stream());
      mem_copy(dev_->correct_host.data(), model_.correct_ptr(), sizeof(int32_t), ctx_.stream());
      dev_->done.record(ctx_);
      dev_->done.synchronize();
      loss += double(dev_->loss_host.data()[0]) * n;
      correct += dev_->correct_host.data()[0];
    } else {
      model_.evaluate_batch(data_.row(i0), data_.y.data() + i0, n);
      loss += double(*model_.loss_ptr()) * n;
      correct += *model_.correct_ptr();
    }
  }
  EvalResult r;
  r.samples = total;
  r.loss = total ? loss / double(total) : 0;
  r.accuracy = total ? double(correct) / double(total) : 0;
  return r;
}

}  // namespace adasync
