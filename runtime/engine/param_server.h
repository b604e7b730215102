// ParamServer: the host copy of the parameters, its version, published
// snapshots and the gradient slots workers push into.
//
// Ownership. Parameters live only in snapshots: version j is one buffer of n
// floats (pinned when a GPU is usable, so a pull is one H2D copy). An update
// reads the current snapshot and writes version j+1 into a fresh buffer, then
// publishes it; a pull never sees a half-applied update and never waits for
// one. A snapshot is reference counted (shared_ptr); when the last holder
// lets go, its buffer returns to the pool for reuse. Workers hold the snapshot
// they computed on until they push, so the pool grows to at most P + 2
// buffers.
//
// Slots are the push targets: each holds one gradient of n floats. A worker
// takes a free slot (a SlotLease), fills it, and hands it to the PS with its
// tag; the lease returns it once the gradient is applied or dropped. 2P slots mean a worker
// never waits for one (at most P in flight plus K - 1 <= P - 1 counted).
//
// Thread safety: latest(), acquire_slot() and SlotLease::release() may be called
// from any thread; apply() and the setters only from the PS thread.
#pragma once

#include <condition_variable>
#include <functional>
#include <cstdint>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include "kernels/context.h"
#include "runtime/engine/optimizer.h"

namespace adasync {

struct Snapshot {
  int64_t version = 0;
  const float* data = nullptr;
  size_t size = 0;
};
using SnapshotPtr = std::shared_ptr<const Snapshot>;

class ParamServer;

// One gradient slot, held by whoever fills or owns the gradient; it goes back
// to the pool when the lease is destroyed (move-only, so exactly one owner).
class SlotLease {
 public:
  SlotLease() = default;
  SlotLease(SlotLease&& o) noexcept { *this = std::move(o); }
  SlotLease& operator=(SlotLease&& o) noexcept;
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease() { release(); }
  float* data() const { return data_; }
  explicit operator bool() const { return data_ != nullptr; }
  void release();

 private:
  friend class ParamServer;
  SlotLease(ParamServer* ps, float* data, int index) : ps_(ps), data_(data), index_(index) {}
  ParamServer* ps_ = nullptr;
  float* data_ = nullptr;
  int index_ = -1;
};

class ParamServer {
 public:
  // init: n initial parameters (host memory), published as version 0.
  ParamServer(size_t n, const float* init, std::unique_ptr<HostOptimizer> optimizer, int slots);
  ~ParamServer();
  ParamServer(const ParamServer&) = delete;
  ParamServer& operator=(const ParamServer&) = delete;

  size_t size() const { return n_; }
  SnapshotPtr latest() const;
  int64_t version() const;
  HostOptimizer& optimizer() { return *opt_; }

  // One update: w_{j+1} = optimizer(w_j, sum_l c[l] grads[l]) at rate lr,
  // published as version j+1. Returns the new snapshot.
  SnapshotPtr apply(const std::vector<const float*>& grads, const std::vector<float>& c, float lr);
  // Publishes `params` as version `version` (resume and replay).
  void reset(const float* params, int64_t version);
  // A snapshot of `params` as version `version`, not published (resume: the
  // older versions that computations in flight were started on).
  SnapshotPtr make_snapshot(const float* params, int64_t version);
  // A snapshot whose buffer `fill` writes, returning its version (a transport
  // receiving parameters straight into it); not published.
  SnapshotPtr make_snapshot(const std::function<int64_t(float*)>& fill);

  // Blocks while none is free; an empty lease once the slots are closed (a
  // stopping run: nobody may wait for a slot that queued messages hold).
  SlotLease acquire_slot();
  // Without waiting: an empty lease when none is free (*closed: the slots are closed).
  SlotLease try_acquire_slot(bool* closed);
  void close_slots();
  void open_slots();
  int free_slots() const;

  // Memory kind of snapshot and slot buffers (pinned when a GPU is usable).
  MemKind memory_kind() const { return kind_; }

 private:
  SnapshotPtr wrap(float* buf, int64_t version);
  void publish(SnapshotPtr s);
  float* take_buffer();
  void give_buffer(float* p);
  friend class SlotLease;
  void release_slot(int index);

  size_t n_;
  std::unique_ptr<HostOptimizer> opt_;
  MemKind kind_ = MemKind::Pinned;

  mutable std::mutex mu_;  // guards current_, free_buffers_
  SnapshotPtr current_;
  std::vector<float*> free_buffers_;
  std::vector<Buffer<float>> buffers_;  // owns every snapshot buffer

  mutable std::mutex slot_mu_;
  std::condition_variable slot_cv_;
  std::vector<Buffer<float>> slots_;
  std::vector<int> free_slots_;
  bool slots_closed_ = false;
  // Outstanding snapshots point back here; this flag catches a PS destroyed first.
  std::shared_ptr<bool> alive_;
};

}  // namespace adasync
