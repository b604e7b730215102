// Trainer: wires data, models, workers, parameter server, variant, clock,
// evaluation, metrics and trace into one run. main.cc maps flags onto
// TrainConfig; tests construct it directly.
#pragma once

#include <cstdint>
#include <atomic>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "datasets/dataset.h"
#include "datasets/sampler.h"
#include "runtime/clock.h"
#include "runtime/checkpoint.h"
#include "runtime/device_sync.h"
#include "runtime/faults.h"
#include "runtime/optimizer.h"
#include "runtime/output.h"
#include "runtime/schedule.h"
#include "runtime/straggler.h"
#include "runtime/trace.h"
#include "runtime/variant.h"
#include "runtime/worker.h"

namespace adasync {

struct TrainConfig {
  // model and data
  std::string model = "cnn";
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // "" = the dataset's default
  int batch = 64;
  bool shard = false;  // each worker samples only its own shard
  // optimization
  OptimizerConfig opt;
  // SGD momentum; < 0 means auto: 0.9 for the synchronous variants and 0 for
  // the asynchronous ones, where staleness already acts as momentum and the
  // two together make training diverge.
  double momentum = -1;
  double lr = 0.05;
  // run length (0 = unlimited; with none set, one epoch)
  double epochs = 0;
  int64_t max_updates = 0;
  double time_budget = 0;  // clock seconds
  // evaluation: "N" updates, "Ts" clock seconds, "0" only at the end
  std::string eval_every = "200";
  double target_accuracy = 0;  // stop at the first evaluation that reaches it (0: never)
  size_t eval_samples = 2000;  // test samples per intermediate evaluation (0: all); the final one uses all
  // engine
  int workers = 1;
  std::string variant = "sync";
  int k = 1;
  std::string clock = "real";  // real | virtual
  std::string straggler = "none";
  std::string slowdown;  // "1,1,2,4"
  double base_time = 0;  // virtual: fixed part of each compute time (seconds)
  double ps_time = 0;    // virtual: the parameter server's service time per update (seconds)
  int64_t max_staleness = -1;
  // K over time (ALGORITHMS.md section 5) and the learning-rate rule (section 4)
  std::string schedule = "fixed";  // fixed | adasync | piecewise
  int k0 = 1;                      // adasync: K_0
  double schedule_every = 0;       // adasync: T_0 in clock seconds (0: default_decision_interval)
  std::string adasync_rule = "auto";  // auto | sqrt | order-stat | runtime | plateau
  std::string sqrt_rounding = "ceil";  // sqrt rule: ceil | round
  double plateau_z = 2.0;              // plateau rule: significance in standard errors
  int64_t plateau_updates = 100;       // plateau rule: updates a window spans at least
  double plateau_horizon = 3;          // plateau rule: the budget test's factor (0: off)
  std::string schedule_points;     // piecewise: "0:1,30s:2,60s:4"
  std::string loss_estimate = "window";  // window (mini-batch losses) | sample (fixed training sample)
  int loss_sample = 1024;          // images in the fixed training sample
  std::string lr_rule = "const";   // const | staleness | distance
  double lr_c = 0;                 // C of the distance rule
  std::string lr_distance = "sketch";  // exact | sketch
  // SwarmSGD (--variant swarm)
  std::string graph = "complete";  // complete | ring | torus | regular
  int degree = 4;                  // random r-regular graphs
  double local_steps = 4;          // H
  std::string local_steps_dist = "fixed";  // fixed | geometric
  std::string swarm_mode = "blocking";     // blocking | nonblocking
  int quantize = 0;                // bits: 0 (full precision), 8, 16
  double quant_step = 0;           // fixed lattice step e (0: adaptive per block)
  int quant_block = 1024;          // coordinates per quantised block (own step, check, fallback)
  double quant_margin = 0;         // adaptive: margin on the sender's guess (0: 2 blocking, 4 non-blocking)
  std::string devices = "auto";  // auto | cpu | cuda
  // Where a sync update runs: host (the parameter server), device (all-reduce
  // and update on the GPUs, sync with one worker per GPU only) or auto.
  std::string aggregate = "auto";
  bool deterministic = false;    // deterministic cuDNN algorithms only
  bool cuda_graphs = true;       // capture each worker's step as a CUDA graph
  // reliability
  std::string checkpoint_dir;        // where checkpoints go ("" = none)
  std::string checkpoint_every = "0";  // "N" updates or a duration such as 60s; 0: only at the end
  int checkpoint_keep = 3;           // newest checkpoints kept
  bool resume = false;               // continue from the newest valid checkpoint of checkpoint_dir
  std::string on_nonfinite = "drop";  // drop (and count) | stop
  double watchdog = 0;               // seconds without a push before a worker is flagged (0: off)
  std::string inject;                // fault injection (testing), see runtime/faults.h
  // models in and out (runtime/model_io.h)
  std::string save_model;  // write the final parameters here (safetensors)
  std::string init_from;   // start from this safetensors file's parameters
  std::string export_from; // trainer --export CKPT: convert a checkpoint, train nothing
  // misc
  uint64_t seed = 1;
  int threads = 0;  // 0: all hardware threads
  std::string metrics, trace, replay;
  std::string progress = "auto";  // auto | plain | none
};

// Throws UsageError for any out-of-range value or meaningless combination.
void validate(const TrainConfig& c);

struct RunSummary {
  double time = 0;       // clock seconds
  double wall = 0;       // wall seconds
  int64_t updates = 0;
  int64_t samples = 0;   // counted gradients x batch
  double steady_samples_per_s = 0;  // after the first update (excludes start-up and warm-up)
  double first_update_time = 0;     // clock time of the first update
  double target_time = -1;          // clock time of the evaluation that reached --target-accuracy
  EvalResult final_eval;
  AggregatorStats stats;
  uint64_t checksum = 0;  // of the final parameters
  int k = 0;
  bool device_update = false;  // sync steps ran on the GPUs (NCCL + device optimizer), not through the PS
  std::vector<float> params;  // final parameters
  std::vector<KChange> k_changes;
  std::string error;          // why the run stopped early ("" = it did not); exit code 1
  bool interrupted = false;   // stopped by SIGINT or SIGTERM
  std::string last_checkpoint;
  std::string saved_model;    // --save-model's file, once written
  std::vector<int> failed_workers;
  int64_t watchdog_alarms = 0;
  // SwarmSGD
  int64_t bytes_sent = 0, bytes_per_worker_max = 0, out_of_range = 0, interactions = 0;
  int64_t fallback_blocks = 0, fallback_bytes = 0;  // SwarmSGD: blocks sent again at full precision, with their NACKs
  double consensus = 0;
};

class Trainer : public EngineListener {
 public:
  // `data` may be given (tests); otherwise it is loaded from the config.
  explicit Trainer(TrainConfig cfg, std::shared_ptr<const DataSplit> data = nullptr);
  ~Trainer() override;

  RunSummary run();
  const TrainConfig& config() const { return cfg_; }
  std::string device_description() const;

  // EngineListener
  UpdateRates rates(const Aggregator& agg, double now) override;
  void on_push(const Push& p, const Aggregator::PushResult& r, double now) override;
  void on_update(Aggregator& agg, const Aggregator::UpdateResult& u, double now) override;
  void on_cancelled(int n) override;
  void on_draw(int w, double x) override;
  bool on_time(double now) override;
  bool keep_going(const Aggregator& agg, double now) override;
  void at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) override;
  void on_worker_failed(int w, const std::string& what, double now) override;

 private:
  void setup();
  RunSummary train();
  RunSummary run_replay();
  RunSummary run_device_sync();
  RunSummary run_swarm();
  RunSummary finish(double end);
  // Runs `engine` on its own thread; this thread evaluates whenever an
  // evaluation falls due, by `version()` or by wall time (real clock).
  double run_monitored(const std::function<double()>& engine, const std::function<int64_t()>& version,
                       const std::function<void(double)>& evaluate);
  bool checkpoint_due(double now, int64_t version);
  std::string write_checkpoint(double now, const VirtualState* state, const std::vector<SnapshotPtr>& in_flight);
  Checkpoint capture_state(double now, const VirtualState* state);
  std::string save_state(Checkpoint c, const SnapshotPtr& params, const std::vector<SnapshotPtr>& in_flight, double now);
  void restore_checkpoint();
  nlohmann::json config_json() const;
  EvalResult evaluate_and_report(const SnapshotPtr& s, double now, bool final,
                                 const nlohmann::json& extra = nlohmann::json::object());
  void progress_tick(double now, bool force);
  nlohmann::json header_json() const;
  void report_k_change(const KChange& ch, int64_t version);

  TrainConfig cfg_;
  std::shared_ptr<const DataSplit> data_;
  bool use_cuda_ = false;
  bool device_sync_ = false;
  bool swarm_ = false;
  bool virtual_clock_ = false;
  int threads_ = 1;
  std::unique_ptr<ThreadPool> compute_pool_, apply_pool_;
  std::vector<std::unique_ptr<Context>> contexts_;
  std::vector<std::unique_ptr<ModelWorker>> replicas_;
  std::unique_ptr<Context> eval_ctx_;
  std::unique_ptr<Evaluator> evaluator_;
  std::unique_ptr<ParamServer> ps_;
  std::unique_ptr<Aggregator> agg_;
  std::unique_ptr<Straggler> straggler_;
  std::vector<Sampler> samplers_;
  std::unique_ptr<AtomicLines> metrics_, trace_;
  std::unique_ptr<KSchedule> schedule_;
  std::unique_ptr<LrRule> lr_rule_;
  UpdateRates last_rates_;
  std::unique_ptr<Context> sample_ctx_;
  std::unique_ptr<Dataset> loss_sample_set_;
  std::unique_ptr<Evaluator> sample_eval_;
  LossWindow training_loss_estimate(const SnapshotPtr& s);
  DecisionInputs decision_inputs(const SnapshotPtr& s);

  // Listener state; guarded by mu_ (PS thread vs monitor thread in real time).
  std::mutex mu_;
  WallTimer wall_;
  int64_t eval_every_updates_ = 0;
  double eval_every_seconds_ = 0;
  double next_eval_time_ = 0;
  int64_t next_eval_update_ = 0;
  int64_t max_samples_ = 0;
  double win_loss_sum_ = 0;
  int64_t win_loss_n_ = 0;
  double win_stale_sum_ = 0;
  int64_t win_stale_n_ = 0, win_stale_max_ = 0;
  int64_t cancelled_ = 0;
  // Loss estimates for the schedule: losses of gradients computed at version
  // 0 (F_0) and of those counted since the last decision (F_t), window mode.
  double start_loss_sum_ = 0, sched_loss_sum_ = 0, sched_loss_sq_ = 0;
  int64_t start_loss_n_ = 0, sched_loss_n_ = 0, sched_updates_ = 0;
  // Compute times drawn by the clock (the runtime rule's sample; newest kept).
  std::deque<double> observed_times_;
  static constexpr size_t kObservedTimes = 4096;
  std::vector<KChange> k_changes_;
  double first_update_time_ = -1;  // clock time of the first update, and the samples counted by then
  int64_t first_update_samples_ = 0;
  AggregatorStats stats_;  // the Aggregator's, copied by the PS thread for the monitor
  int k_ = 1;
  double last_loss_ = 0;
  double last_acc_ = -1;
  double last_progress_wall_ = -1;
  double last_eval_time_ = 0;       // for the time per update between evaluations
  int64_t last_eval_updates_ = 0;
  double now_ = 0;
  bool tty_ = false;
  bool stop_requested_ = false;
  double target_time_ = -1;
  nlohmann::json final_extra_ = nlohmann::json::object();  // mode-specific keys of the final evaluation
  // Reliability
  FaultPlan faults_;
  int64_t ckpt_every_updates_ = 0;
  double ckpt_every_seconds_ = 0;
  int64_t next_ckpt_update_ = 0;
  double next_ckpt_time_ = 0;
  std::string last_checkpoint_;
  std::unique_ptr<VirtualState> resume_state_;
  std::map<int64_t, SnapshotPtr> resume_snapshots_;
  double resume_time_ = 0;
  std::unique_ptr<std::vector<std::atomic<uint64_t>>> positions_;
  std::vector<double> last_push_time_;
  std::vector<char> watchdog_flagged_;
  int64_t watchdog_alarms_ = 0;
  std::vector<int> failed_workers_;
  std::string error_;
  Checkpoint quiet_capture_;  // virtual clock: the state at the last quiet point
  SnapshotPtr quiet_params_;
  std::vector<SnapshotPtr> quiet_in_flight_;
  double quiet_time_ = 0;
};

// SIGINT / SIGTERM: the trainer stops at its next update, writes a final
// checkpoint (with --checkpoint-dir) and exits 0. request_stop is
// async-signal-safe; stop_signal() is 0 until a stop was requested.
void request_stop(int signal);
int stop_signal();
void clear_stop_request();

// The trainer binary's main: parses flags (CLI11), runs, prints the summary.
// Returns the process exit code (2 for bad flags or input).
int trainer_main(int argc, char** argv);

}  // namespace adasync
