// The supervisor: when a run stops, evaluates and checkpoints, the same for
// every algorithm. It is the drivers' hooks (time passing, after each update,
// the virtual clock's quiet points) and observes the update loop; the run
// gives it its actions (evaluate, capture and save a checkpoint) once.
//
// Stop rules: a signal, a stop request (target accuracy reached, a non-finite
// gradient under --on-nonfinite stop, an error), the time budget, the update
// limit, the sample limit (epochs). Cadences: evaluations and checkpoints
// every N updates (the next at the first multiple of N above the version) or
// every T clock seconds (the virtual clock evaluates at every multiple of T it
// passes, stamped with that time; the threads driver once, now).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config/config.h"
#include "runtime/drivers/driver.h"
#include "runtime/drivers/worker.h"
#include "runtime/engine/update_loop.h"
#include "runtime/checkpoint.h"
#include "runtime/run/reporter.h"
#include "runtime/stop_request.h"

namespace adasync {

struct SupervisorActions {
  // An intermediate evaluation at clock time `now`.
  std::function<EvalResult(double now)> evaluate;
  // The state to continue from (virtual: with the driver's state), and writing it.
  std::function<Checkpoint(double now, const VirtualState* vs, const SnapshotPtr& params)> capture;
  std::function<std::string(Checkpoint c, const SnapshotPtr& params, const std::vector<SnapshotPtr>& in_flight,
                            double now)>
      save;
  std::function<SnapshotPtr()> params;  // the parameters a checkpoint holds now (called before capture)
  // An evaluation of given parameters, stamped with the clock time and the
  // samples counted when they were published (the real clock's every-N-updates
  // evaluations; without it those sample the latest parameters).
  std::function<EvalResult(const SnapshotPtr& s, double now, int64_t samples)> evaluate_at;
};

// The supervisor's checkpoint state: when the next evaluation and checkpoint are due.
struct SupervisorState {
  double next_eval_time = 0, next_ckpt_time = 0;
  int64_t next_eval_update = 0, next_ckpt_update = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SupervisorState, next_eval_time, next_eval_update, next_ckpt_time, next_ckpt_update)

class Supervisor : public DriverHooks, public UpdateObserver {
 public:
  Supervisor(const TrainConfig& cfg, Reporter& rep, int64_t max_samples, SupervisorActions act);
  // Where the run starts (resume): the version and the gradients counted.
  void start_at(int64_t version, int64_t counted, double now);

  // Stop rules.
  void request_stop();
  void fail(const std::string& error);  // stops; the run ends with exit code 1
  std::string error();
  std::string cause();  // a stop reason the supervisor itself decided ("" if none)
  double target_time();
  // Any stop rule met at `updates` updates, `counted` counted gradients, clock `now`?
  bool should_stop(int64_t updates, int64_t counted, double now);

  // Cadences for algorithms that count their own steps: evaluations (unless
  // a monitor thread does them) and checkpoints due now.
  void after_step(int64_t updates, double now, bool monitored = false);

  // DriverHooks
  bool on_time(double now) override;
  bool keep_going(double now) override;
  void at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) override;
  // UpdateObserver
  void on_push(const PushEvent& e) override;
  void on_update(const UpdateEvent& e) override;
  void on_worker_failed(int w, const std::string& what, int left, double now) override;

  // Threads: runs `engine` on its own thread while this one evaluates when
  // due (by `version()` or by wall time, plus `offset`: the clock at the
  // start). `snapshots`: the PS's snapshots are the parameters as they were,
  // so every N-th update's is queued and evaluated (evaluate_at), none
  // skipped; otherwise the monitor evaluates the parameters of the moment.
  double run_monitored(const std::function<double()>& engine, const std::function<int64_t()>& version,
                       double offset, bool snapshots);
  // The run's last checkpoint (`quiet_point`: the driver's last quiet point,
  // the state a run that stopped between updates can continue from exactly;
  // else the state at `end`, unless the last checkpoint holds its parameters).
  void final_checkpoint(double end, bool quiet_point);
  std::string last_checkpoint();
  void set_last_checkpoint(const std::string& path);

  SupervisorState state();
  void restore(const SupervisorState& s);

 private:
  struct Next {
    int64_t update = 0;
    double time = 0;
  };
  bool updates_due(Next& n, const Cadence& c, int64_t v);
  void evaluate(double now);
  void evaluate_due_snapshots();  // the monitor's: every queued one, in order
  void checkpoint(double now);  // unless the last one holds the same snapshot
  bool written(int64_t version);  // the last checkpoint written holds this version

  const TrainConfig& cfg_;
  Reporter& rep_;
  const SupervisorActions act_;
  const bool virtual_clock_;
  const int64_t max_samples_;
  std::mutex mu_;
  std::mutex ckpt_mu_;  // one checkpoint written at a time
  Next eval_, ckpt_;
  bool stop_ = false;
  std::string error_, cause_;
  double target_time_ = -1;
  int64_t version_ = 0, counted_ = 0;
  std::string last_checkpoint_;
  std::weak_ptr<const Snapshot> last_params_;  // what checkpoint() last wrote
  int64_t nonfinite_run_ = 0;  // non-finite gradients in a row
  double last_update_ = 0;     // clock time of the last update (the watchdog's reference in sync variants)
  std::vector<double> last_push_;
  std::vector<char> flagged_;
  // Real clock, --eval-every N updates: the parameters of every N-th update,
  // queued by the update thread (which waits while two are queued) and
  // evaluated by the monitor, so none is skipped however fast updates come.
  struct DueEval {
    SnapshotPtr params;
    double now;
    int64_t samples;
  };
  std::mutex due_mu_;
  std::condition_variable due_cv_;
  std::deque<DueEval> due_;
  std::atomic<bool> queue_evals_{false};
  bool monitor_done_ = false;
  // Virtual: the state at the last quiet point.
  Checkpoint quiet_;
  SnapshotPtr quiet_params_;
  std::vector<SnapshotPtr> quiet_in_flight_;
  double quiet_time_ = 0;
};

}  // namespace adasync
