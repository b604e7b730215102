// Drivers: how time advances. Both feed the same update loop (variant rule,
// policy, parameter server) through the same worker step; each keeps only its
// notion of time.
//
// Virtual: a single-threaded discrete-event simulation. A worker that starts
// a mini-batch at time t draws its batch and its compute time X from the
// straggler model and finishes at t + X; its gradient is that of the snapshot
// it pulled at t (computed when it is delivered, and only if it will count).
// Cancelled work is removed from the event queue. Ties are broken by start
// order, so a seed fixes the whole run on any machine.
//
// Threads: one host thread per worker and one PS thread; time is wall time.
// Injected delays are interruptible sleeps (CPU) or a spin kernel on the
// worker's stream (CUDA). Workers of k-batch variants go on without waiting
// for the PS; the others wait for its word after each push.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/drivers/worker.h"
#include "runtime/engine/update_loop.h"
#include "runtime/faults.h"
#include "runtime/straggler.h"

namespace adasync {

// The virtual driver's whole state between two events: what each worker is
// computing (its parameter version, batch and finish time) and the event
// sequence counter. With the snapshots of those versions and the rest of the
// run's state it continues a run bit for bit (checkpoint and resume).
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

// What a driver asks of the run as time passes: the supervisor.
class DriverHooks {
 public:
  virtual ~DriverHooks() = default;
  // The clock reached `now` (virtual: before the event at `now`; threads: at
  // least every 50 ms). False stops.
  virtual bool on_time(double now) = 0;
  // After each update, or a failure. False stops.
  virtual bool keep_going(double now) = 0;
  // Virtual, after an update and the restarts it caused: the state a
  // checkpoint needs (the snapshots in flight are those of the jobs' taus).
  virtual void at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) {}
};

struct DriverSetup {
  UpdateLoop* loop = nullptr;
  Straggler* straggler = nullptr;
  std::vector<Sampler>* samplers = nullptr;  // one per worker
  std::vector<GradientWorker*> workers;       // threads: one per worker; virtual: one shared or one each
  double base_time = 0;                       // virtual: fixed part of every compute time (seconds)
  // Virtual: the parameter server's service time per update. Pushes that
  // arrive while it is busy wait in arrival order; workers an update wakes
  // start when it is done. 0: updates take no time.
  double ps_time = 0;
  DriverHooks* hooks = nullptr;
  const FaultPlan* faults = nullptr;
  // Virtual: continue from a saved state; snapshot_of(v) gives the parameters
  // of version v for the jobs in flight.
  const VirtualState* resume = nullptr;
  std::function<SnapshotPtr(int64_t)> snapshot_of;
  // Threads: each worker's sampler position, published after every draw (the
  // PS thread reads them for checkpoints). Sized by the driver.
  std::vector<std::atomic<uint64_t>>* positions = nullptr;
  double time_offset = 0;  // threads: clock time at the start (resume)
};

// Run until the hooks say stop (or, virtual, no event is left). Return the
// clock time at the stop.
double run_virtual(DriverSetup& s);
double run_threads(DriverSetup& s);

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
