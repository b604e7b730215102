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

#include "datasets/sampler.h"
#include "runtime/straggler.h"
#include "runtime/variant.h"
#include "runtime/worker.h"

namespace adasync {

class EngineListener {
 public:
  virtual ~EngineListener() = default;
  // Learning rate and weights of the update about to be applied.
  virtual UpdateRates rates(const Aggregator& agg, double now) = 0;
  virtual void on_push(const Push& p, const Aggregator::PushResult& r, double now) {}
  // After an update; may change K through agg.set_k().
  virtual void on_update(Aggregator& agg, const Aggregator::UpdateResult& u, double now) = 0;
  // `n` computations were abandoned on a cancel (any thread in real time).
  virtual void on_cancelled(int n) {}
  // The clock reached `now` (virtual: before the event at `now` is handled;
  // real: at least every 50 ms). Returns false to stop.
  virtual bool on_time(double now) = 0;
  // After each update. Returns false to stop.
  virtual bool keep_going(const Aggregator& agg, double now) = 0;
};

struct EngineSetup {
  ParamServer* ps = nullptr;
  Aggregator* agg = nullptr;
  Straggler* straggler = nullptr;
  std::vector<Sampler>* samplers = nullptr;      // one per worker
  std::vector<GradientWorker*> workers;           // real: one per worker; virtual: one shared or one each
  double base_time = 0;                           // virtual: fixed part of every compute time (seconds)
  EngineListener* listener = nullptr;
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
