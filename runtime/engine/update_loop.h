// The update loop: one gradient's whole way through the parameter server.
// It owns the order of things (count or drop, rates, apply, publish, K) and
// answers each push with a Decision for the driver: whom to cancel, whom to
// wake, what the pusher does next. Observers (the reporter, the supervisor)
// see read-only events and change nothing.
//
//   driver --push--> submit() --Decision--> driver
//                      |  Aggregator (the variant's rule)
//                      |  Policy (rates; K after the update)
//                      |  ParamServer (apply, publish)
//                      `--> observers: on_push, on_update
//
// submit() and worker_failed() run on one thread (the PS thread or the event
// loop); cancelled() may be called from any.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "runtime/engine/aggregator.h"
#include "runtime/engine/param_server.h"
#include "runtime/engine/policy.h"

namespace adasync {

struct PushEvent {
  int worker = 0;
  int64_t tau = 0;
  float loss = 0;
  bool finite = true;
  double time = 0;
  Aggregator::PushResult result;
};

struct UpdateEvent {
  const Aggregator::UpdateResult& update;  // snapshot published, gradients applied
  const AggregatorStats& stats;            // after the update
  float lr = 0;                            // the update's base rate
  int k = 0;                               // K for the next update
  const std::optional<KChange>& k_change;  // made after this update
  double now = 0;
  double b_noise = NAN;                    // the gradient noise scale so far (NaN: not measured)
  const std::optional<KChange>* k_kept = nullptr;  // a decision that kept K (goodput), or null
};

class UpdateObserver {
 public:
  virtual ~UpdateObserver() = default;
  virtual void on_push(const PushEvent&) {}
  virtual void on_update(const UpdateEvent&) {}
  // Worker w failed; `left` workers remain.
  virtual void on_worker_failed(int w, const std::string& what, int left, double now) {}
  // A process holding workers [first, last] was lost (--transport mpi: it
  // never confirmed the stop); the run is already stopping.
  virtual void on_rank_lost(int rank, int first, int last, const std::string& what, double now) {}
};

// What the driver does after a push or a failure.
struct Decision {
  bool updated = false;
  bool cancel_all = false;  // abandon every computation in flight
  std::vector<int> wake;    // these pull the new version and start again
  Next pusher = Next::Wait; // the pusher, when no update woke it
};

class UpdateLoop {
 public:
  UpdateLoop(ParamServer& ps, Aggregator& agg, Policy& policy) : ps_(ps), agg_(agg), policy_(policy) {}
  void observe(UpdateObserver* o) { observers_.push_back(o); }

  Decision submit(Push p, double now);
  Decision worker_failed(int w, const std::string& what, double now);
  // Reports a lost worker process to the observers; changes nothing.
  void rank_lost(int rank, int first, int last, const std::string& what, double now) {
    for (UpdateObserver* o : observers_) o->on_rank_lost(rank, first, last, what, now);
  }
  // n computations were abandoned on a cancel.
  void cancelled(int n) { cancelled_.fetch_add(n, std::memory_order_relaxed); }
  int64_t cancelled_count() const { return cancelled_.load(std::memory_order_relaxed); }
  void set_cancelled(int64_t n) { cancelled_.store(n, std::memory_order_relaxed); }
  // A worker starts a computation of `x` clock seconds (any thread).
  void drew(double x) { policy_.on_draw(x); }

  ParamServer& ps() { return ps_; }
  Aggregator& aggregator() { return agg_; }
  const Aggregator& aggregator() const { return agg_; }
  Policy& policy() { return policy_; }

 private:
  Decision apply(double now);

  ParamServer& ps_;
  Aggregator& agg_;
  Policy& policy_;
  std::vector<UpdateObserver*> observers_;
  std::atomic<int64_t> cancelled_{0};
};

}  // namespace adasync
