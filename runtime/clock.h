// The two clocks that drive training. Both feed the same Aggregator (the
// variant rule), ParamServer (optimizer) and EngineListener (schedule,
// learning-rate rule, metrics, trace, stop conditions).
//
// Virtual clock: a single-threaded discrete-event simulation. A worker that
// starts a mini-batch at time t draws its batch and its compute time X from
// the straggler model and finishes at t + X; its gradient is that of the
// snapshot it pulled at t (computed when it is delivered, and only if it will
// count). Cancelled work is removed from the event queue. Ties are broken by
// start order, so a seed fixes the whole run on any machine.
//
// Real clock: one host thread per worker and one PS thread; time is wall
// time. Injected delays are interruptible sleeps (CPU) or a spin kernel on the
// worker's stream (CUDA). Workers of k-batch variants go on without waiting
// for the PS; the others wait for its word after each push.
#pragma once

#include <chrono>
#include <vector>

#include <atomic>
#include <functional>
#include <memory>

#include "datasets/sampler.h"
#include "runtime/faults.h"
#include "runtime/straggler.h"
#include "runtime/variant.h"
#include "runtime/worker.h"

namespace adasync {

// The virtual clock's whole state between two events: what each worker is
// computing (its parameter version, batch and finish time) and the event
// sequence counter. With the snapshots of those versions and the trainer's
// own state it continues a run bit for bit (checkpoint and resume).
struct VirtualJob {
  bool active = false;
  int64_t tau = 0;
  uint64_t batch = 0;
  uint64_t gen = 0;
  double finish = 0;
  uint64_t seq = 0;
  int64_t computations = 0;  // started so far (fault injection counts these)
};
struct VirtualState {
  double now = 0;
  uint64_t seq = 0;
  double ps_free = 0;  // when the parameter server finishes its update in service
  std::vector<VirtualJob> jobs;  // one per worker
};

class EngineListener {
 public:
  virtual ~EngineListener() = default;
  // Learning rate and weights of the update about to be applied.
  virtual UpdateRates rates(const Aggregator& agg, double now) = 0;
  virtual void on_push(const Push& p, const Aggregator::PushResult& r, double now) {}
  // After an update; may change K through agg.set_k().
  virtual void on_update(Aggregator& agg, const Aggregator::UpdateResult& u, double now) = 0;
  // Worker w started a computation that takes `x` clock seconds (virtual: the
  // drawn time; real: the injected delay plus its last measured compute).
  virtual void on_draw(int w, double x) {}
  // `n` computations were abandoned on a cancel (any thread in real time).
  virtual void on_cancelled(int n) {}
  // The clock reached `now` (virtual: before the event at `now` is handled;
  // real: at least every 50 ms). Returns false to stop.
  virtual bool on_time(double now) = 0;
  // After each update. Returns false to stop.
  virtual bool keep_going(const Aggregator& agg, double now) = 0;
  // Virtual clock, after an update and the restarts it caused: the state a
  // checkpoint needs (the snapshots in flight are those of the jobs' taus).
  virtual void at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) {}
  // Worker w failed (an exception from its computation); it never returns.
  virtual void on_worker_failed(int w, const std::string& what, double now) {}
};

struct EngineSetup {
  ParamServer* ps = nullptr;
  Aggregator* agg = nullptr;
  Straggler* straggler = nullptr;
  std::vector<Sampler>* samplers = nullptr;      // one per worker
  std::vector<GradientWorker*> workers;           // real: one per worker; virtual: one shared or one each
  double base_time = 0;                           // virtual: fixed part of every compute time (seconds)
  // Virtual: the parameter server's service time per update. Pushes that
  // arrive while it is busy wait in arrival order; workers an update wakes
  // start when it is done. 0: updates take no time.
  double ps_time = 0;
  EngineListener* listener = nullptr;
  const FaultPlan* faults = nullptr;
  // Virtual clock: continue from a saved state; snapshot_of(v) gives the
  // parameters of version v for the jobs in flight.
  const VirtualState* resume = nullptr;
  std::function<SnapshotPtr(int64_t)> snapshot_of;
  // Real clock: each worker's sampler position, published after every draw
  // (the PS thread reads them for checkpoints). Sized by the engine.
  std::vector<std::atomic<uint64_t>>* positions = nullptr;
  double time_offset = 0;  // real clock: clock time at the start (resume)
};

// Runs until the listener says stop (or, virtual, no event is left).
// Returns the clock time at the stop.
double run_virtual(EngineSetup& s);
double run_real(EngineSetup& s);

// Seconds since construction on the steady clock.
class WallTimer {
 public:
  WallTimer() : t0_(std::chrono::steady_clock::now()) {}
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  }

 private:
  std::chrono::steady_clock::time_point t0_;
};

}  // namespace adasync
