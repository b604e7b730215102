// The six aggregation rules of the parameter server (ALGORITHMS.md section 2)
// as one state machine, shared by the real and the virtual clock.
//
// The driver (a PS thread or the discrete-event loop) hands every arriving
// gradient to push(). The Aggregator decides whether it counts toward the
// current update or is dropped (and why), and what the pushing worker does
// next. When K gradients are counted, push() reports update_due and the
// driver calls update(), which averages them, runs the optimizer through the
// ParamServer, publishes version j+1 and says whom to cancel and wake:
//
//   variant        counts                       pusher next     on update
//   sync/k-sync    tau == j, K distinct workers  wait            cancel all, all pull
//   k-batch-sync   tau == j, any worker          continue (w_j)  cancel all, all pull
//   async/k-async  any tau, K distinct workers   wait            counted pushers pull
//   k-batch-async  any tau, any worker           pull            -
//
// sync is k-sync with K = P and async is k-async with K = 1. A gradient
// older than max_staleness versions, or flagged non-finite, is dropped and
// counted as such; its worker pulls again (or continues at w_j in a sync
// variant). K may change between updates (schedules).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "runtime/config/settings.h"
#include "runtime/engine/param_server.h"

namespace adasync {


enum class Next { Wait, Continue, Pull };
enum class Drop { None, Stale, OverBound, NonFinite };
const char* to_string(Drop d);

struct Push {
  int worker = 0;
  int64_t tau = 0;       // version the gradient was computed at
  uint64_t batch = 0;    // the worker's batch number
  float loss = 0;        // mini-batch loss at w_tau
  bool finite = true;    // every gradient entry finite
  SlotLease slot;        // the gradient (returned when the push is applied or dropped)
  SnapshotPtr params;    // w_tau, held until the gradient is applied or dropped
  double time = 0;       // arrival time (clock seconds)
};

// One counted gradient of an applied update.
struct Applied {
  int worker;
  int64_t tau;
  uint64_t batch;
  int64_t staleness;
  float weight;  // c_l in w_{j+1} = rule(w_j, sum_l c_l g_l)
  float loss;
  double time;
};

// Learning rate and per-gradient weights of one update, chosen by the caller
// (learning-rate rules); weights default to 1/K each.
struct UpdateRates {
  float lr = 0;
  std::vector<float> weights;  // empty: 1/K each
};

struct AggregatorStats {
  int64_t pushes = 0, counted = 0, updates = 0;
  int64_t dropped_stale = 0, dropped_bound = 0, dropped_nonfinite = 0;
  int64_t cancelled = 0;  // computations abandoned on a cancel (reported by drivers)
  double staleness_sum = 0;
  int64_t staleness_max = 0;
  std::vector<int64_t> pushes_by_worker, counted_by_worker;
  int64_t dropped() const { return dropped_stale + dropped_bound + dropped_nonfinite; }
};

struct AggregatorConfig {
  Variant variant = Variant::Sync;
  int workers = 1;
  int k = 1;                   // ignored by sync (P) and async (1)
  int64_t max_staleness = -1;  // < 0: unbounded
};

class Aggregator {
 public:
  Aggregator(const AggregatorConfig& cfg, ParamServer& ps);

  Variant variant() const { return cfg_.variant; }
  int workers() const { return cfg_.workers; }
  int k() const { return k_; }
  void set_k(int k);  // takes effect from the next count; clamped to [1, P]
  int64_t version() const { return version_; }
  int counted_now() const { return int(pending_.size()); }

  // Would a gradient computed at tau count if it arrived now (finite)?
  bool accepts(int64_t tau) const;

  struct PushResult {
    bool counted = false;
    Drop drop = Drop::None;
    bool update_due = false;  // call update() now
    Next next = Next::Wait;   // what the pusher does when no update is due
  };
  PushResult push(Push p);

  struct UpdateResult {
    SnapshotPtr snapshot;
    bool cancel_all = false;  // cancel every computation in flight
    std::vector<int> wake;    // workers to pull and start again
    std::vector<Applied> applied;
  };
  // Applies the counted gradients; rates.weights (if given) has one entry each.
  UpdateResult update(const UpdateRates& rates);
  // Staleness (j - tau) of each counted gradient, in count order (for rate rules).
  std::vector<int64_t> pending_staleness() const;
  // The gradients the next update applies, in order.
  std::vector<const float*> pending_gradients() const;
  const std::vector<Push>& pending() const { return pending_; }

  AggregatorStats& stats() { return stats_; }
  const AggregatorStats& stats() const { return stats_; }

  // Resume: set the version the PS holds, with nothing pending.
  void set_version(int64_t v) { version_ = v; }

  // A worker is gone for good: K shrinks to the workers left where the rule
  // needs distinct workers (sync waits for every live worker). Returns true
  // when the counted gradients now make an update due.
  bool worker_failed(int w);
  int alive() const { return alive_; }
  bool is_alive(int w) const { return !dead_[size_t(w)]; }

 private:
  AggregatorConfig cfg_;
  ParamServer& ps_;
  int k_ = 1;
  int k_requested_ = 1;
  int alive_ = 0;
  std::vector<char> dead_;
  int64_t version_ = 0;
  std::vector<Push> pending_;              // counted, not yet applied
  std::vector<char> counted_this_round_;  // per worker, for the distinct-worker rules
  AggregatorStats stats_;
};

}  // namespace adasync
