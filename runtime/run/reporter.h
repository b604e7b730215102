// The reporter: everything a run says about itself. It observes the update
// loop (read-only) and is told of evaluations, checkpoints and failures; it
// writes the progress line, the metrics (JSON Lines) and the trace. All its
// state is behind one lock: the update thread, the supervisor's monitor and
// worker threads all report.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/config/config.h"
#include "runtime/drivers/driver.h"
#include "runtime/engine/update_loop.h"
#include "runtime/output.h"

namespace adasync {

struct EvalResult;

// A K change as a checkpoint keeps it: [k_prev, k, time, F_0, F_t, reason, rule].
void to_json(nlohmann::json& j, const KChange& c);
void from_json(const nlohmann::json& j, KChange& c);

// The reporter's checkpoint state: the open windows of losses and
// staleness, the first update, the K changes so far.
struct ReporterState {
  Real win_loss_sum = 0, last_loss = 0;
  int64_t win_loss_n = 0;
  double win_stale_sum = 0;
  int64_t win_stale_n = 0, win_stale_max = 0;
  double first_update_time = -1;
  int64_t first_update_samples = 0;
  std::vector<KChange> k_changes;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(ReporterState, win_loss_sum, win_loss_n, win_stale_sum, win_stale_n, win_stale_max,
                                   last_loss, first_update_time, first_update_samples, k_changes)

class Reporter : public UpdateObserver {
 public:
  Reporter(const TrainConfig& cfg, const WallTimer* wall);

  // Files: the metrics' start object and the trace header.
  // `now`: the clock at the start (a resumed run's time); the estimate of the
  // time left counts progress from here. A resumed run (its start names
  // `resumed_version`) first copies the records of the run it continues (the
  // same `run_id`) up to that checkpoint's record, from the metrics file or a
  // killed run's temporary of it: the file holds the whole run.
  void open(const nlohmann::json& start, const nlohmann::json& trace_header, double now = 0);
  // The run's sample limit (epochs of the training set; 0: none), for the
  // fraction done beside --max-updates and --time-budget. Before open().
  void set_sample_limit(int64_t max_samples) { max_samples_ = max_samples; }
  // A failed write of the metrics or the trace (the file's message), once.
  void on_output_error(std::function<void(const std::string&)> f) { on_output_error_ = std::move(f); }
  // Renames the metrics and the trace (its end record with the final
  // parameters' checksum) into place; OutputError if either failed.
  void commit(int64_t trace_updates, uint64_t checksum);

  // UpdateObserver
  void on_push(const PushEvent& e) override;
  void on_update(const UpdateEvent& e) override;
  void on_worker_failed(int w, const std::string& what, int left, double now) override;
  void on_rank_lost(int rank, int first, int last, const std::string& what, double now) override;

  // Modes without a parameter server (device sync, swarm) count their own steps.
  void count_steps(int64_t updates, int64_t counted, int k, double now, bool first_at_now);
  void add_losses(const std::vector<float>& losses);
  void set_stats(const AggregatorStats& s, int k);

  // An evaluation of version `version` at clock time `now`: the metrics object
  // and the progress line. `extra` adds mode-specific keys.
  void evaluated(const EvalResult& ev, int64_t version, double now, bool final, const nlohmann::json& extra,
                 int64_t samples);
  int64_t counted_samples();  // counted gradients x batch, now
  void checkpoint_written(double now, int64_t version, const std::string& path);
  void watchdog(int w, double idle, double now);
  void progress(double now, bool force);
  void line(const nlohmann::json& j);  // a metrics object as is
  void k_change(const KChange& ch, int64_t version);
  void k_kept(const KChange& ch, int64_t version);  // a decision that kept K (metrics only)
  void summary(const nlohmann::json& j);

  std::vector<KChange> k_changes();
  std::vector<int> failed_workers();
  // Resume: the workers that failed before the checkpoint (their events are in the earlier metrics).
  void restore_failed(const std::vector<int>& workers);
  std::vector<int> lost_ranks();
  int64_t watchdog_alarms();
  double first_update_time();
  int64_t first_update_samples();
  bool tty() const { return tty_; }
  int64_t trace_entries();

  // Checkpoint state: the windows, the first update, the K changes.
  ReporterState state();
  void restore(const ReporterState& s);

 private:
  const TrainConfig& cfg_;
  const WallTimer* wall_;
  bool tty_ = false;
  std::mutex mu_;
  std::unique_ptr<AtomicLines> metrics_, trace_;
  std::string continued_temporary_;  // a killed run's metrics temporary this file continues: removed at commit
  int64_t continued_evals_to_ = -1;  // the last update the continued records evaluated: not written again
  std::function<void(const std::string&)> on_output_error_;
  int64_t trace_entries_ = 0;
  AggregatorStats stats_;
  int k_ = 1;
  double lr_ = 0;  // the last update's base rate (after --lr-schedule)
  double b_noise_ = NAN;  // the gradient noise scale (AdaSync runs; NaN: not measured)
  double win_loss_sum_ = 0;
  int64_t win_loss_n_ = 0;
  double win_stale_sum_ = 0;
  int64_t win_stale_n_ = 0, win_stale_max_ = 0;
  double last_loss_ = 0, last_acc_ = -1;
  double last_progress_wall_ = -1;
  double last_eval_time_ = 0;  // for the time per update between evaluations
  int64_t last_eval_updates_ = 0;
  double first_update_time_ = -1;  // clock time of the first update, and the samples counted by then
  int64_t first_update_samples_ = 0;
  std::vector<KChange> k_changes_;
  std::vector<int> failed_workers_;
  std::vector<int> lost_ranks_;
  int64_t watchdog_alarms_ = 0;
  // The fraction of the run done (the largest over its limits; -1 without
  // one) and the wall seconds left at the rate since the first look (-1
  // before any progress). Under mu_.
  struct Done {
    double fraction = -1, eta = -1;
  };
  Done done(int64_t updates, int64_t samples, double now);
  int64_t max_samples_ = 0;
  double start_fraction_ = -1, start_wall_ = 0;
};

}  // namespace adasync
