// SwarmSGD's two drivers: the virtual clock's event loop (one thread, steps
// in time order) and the real clock's node threads. A node's step is the
// worker step every algorithm shares (prepare_step, compute_gradient): its
// batch, compute time and injected fault are drawn as a PS worker's are; the
// result goes to the algorithm (SwarmEngine::apply, after_step), and a node
// whose computation throws leaves (SwarmEngine::leave).
#pragma once

#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "datasets/sampler.h"
#include "runtime/algorithms/swarm.h"
#include "runtime/drivers/driver.h"
#include "runtime/drivers/worker.h"
#include "runtime/faults.h"
#include "runtime/straggler.h"

namespace adasync {

struct SwarmSetup {
  std::vector<GradientWorker*> workers;      // virtual: one shared; real: one per local node
  std::vector<Sampler>* samplers = nullptr;  // one per local node
  Straggler* straggler = nullptr;
  const FaultPlan* faults = nullptr;         // node i's n-th computation is worker i's
};

// Runs until the listener says stop or every node has left; returns the
// virtual time at the stop. Continues a restored engine exactly.
double run_swarm_virtual(SwarmEngine& e, const SwarmSetup& s, SwarmListener& l);

// A thread per local node on the wall clock.
class SwarmThreads {
 public:
  SwarmThreads(SwarmEngine& e, SwarmSetup s);
  ~SwarmThreads();  // stops the threads still running (an error)
  // start() runs the threads, stop() tells them to stop (an injected delay
  // under way ends at once) and waits for them; running() is false once all
  // have ended.
  void start(SwarmListener& l);
  void stop();
  void request_stop() { stop_ = true; }
  bool running() const { return alive_.load() > 0; }
  // A node thread's error (it stops them all): rethrown here, and by run().
  void rethrow_error();
  // start(), the listener's on_time every 20 ms until a stop, stop().
  double run(SwarmListener& l);

 private:
  void node_loop(int i);
  SwarmEngine& e_;
  SwarmSetup s_;
  std::vector<Buffer<float>> work_;  // each node's copy of its model for a step
  std::atomic<bool> stop_{false}, failed_{false};
  std::atomic<int> alive_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;
  std::vector<std::thread> threads_;
  CancelSource cancel_;
  uint64_t gen_ = 0;
  WallTimer clock_;
  SwarmListener* listener_ = nullptr;
};

}  // namespace adasync
