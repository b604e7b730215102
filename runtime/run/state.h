// A checkpoint's header: TrainState (the run's settings, its position and
// counters) and the entries of the state registry (each part of the run's
// own), every one a declaration that writes and reads itself (nlohmann's
// type macros), so the writer and the reader cannot drift apart.
// RunIdentity, the settings that shape a computation, is also the trace
// header and the metrics' start object.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "runtime/checkpoint.h"
#include "runtime/run/run.h"

namespace adasync {

constexpr int kStateFormat = 2;

struct RunIdentity {
  std::string model, dataset, data_dir;
  uint64_t seed = 1;
  int batch = 0, workers = 0;
  bool shard = false;
  std::string variant;
  int k = 1;
  ClockKind clock = ClockKind::Real;
  std::string straggler;
  double lr = 0;
  OptimizerConfig optimizer;
  std::string devices;  // cpu | cuda: the backend the run used
};

// The settings a resumed run must share with its checkpoint, beyond the identity.
struct RunSettings {
  RunIdentity identity;
  std::string slowdown;
  double base_time = 0, ps_time = 0;
  AdaRule adasync_rule = AdaRule::Auto;
  int64_t max_staleness = -1;
  ScheduleKind schedule = ScheduleKind::Fixed;
  int k0 = 1;
  LrKind lr_rule = LrKind::Const;
  double lr_c = 0;
  LossEstimate loss_estimate = LossEstimate::Window;
  // Written only when set (older checkpoints resume as runs without them).
  bool augment = false, no_decay_bn = false;
  LrSchedule lr_schedule = LrSchedule::Const;
  std::vector<double> lr_milestones;
  double lr_gamma = 0.1, lr_warmup = 0;
  // SwarmSGD
  GraphKind graph = GraphKind::Complete;
  int degree = 0;
  double local_steps = 0;
  StepsDist local_steps_dist = StepsDist::Fixed;
  SwarmMode swarm_mode = SwarmMode::Blocking;
  int quantize = 0;
  double quant_step = 0;
  int quant_block = 0;
  double quant_margin = 0;
};

struct TrainState {
  int state_format = kStateFormat;
  RunSettings config;
  int64_t version = 0;
  double time = 0;
  int k = 1;
  AggregatorStats stats;
  std::vector<int> dead;
  int64_t optimizer_steps = 0;
  std::vector<uint64_t> samplers;
};

NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(OptimizerConfig, name, momentum, nesterov, beta1, beta2, eps, bias_correction,
                                   weight_decay)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(RunIdentity, model, dataset, data_dir, seed, batch, workers, shard, variant, k,
                                   clock, straggler, lr, optimizer, devices)
// Flat: the identity's keys and the rest side by side (exported models read them).
void to_json(nlohmann::json& j, const RunSettings& x);
void from_json(const nlohmann::json& j, RunSettings& x);
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(AggregatorStats, pushes, counted, updates, dropped_stale, dropped_bound,
                                   dropped_nonfinite, cancelled, staleness_sum, staleness_max, pushes_by_worker,
                                   counted_by_worker)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(VirtualJob, active, tau, batch, gen, finish, seq, computations)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(VirtualState, now, seq, ps_free, jobs)
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(TrainState, state_format, config, version, time, k, stats, dead, optimizer_steps,
                                   samplers)

RunIdentity run_identity(const Run& r);
// Adds the run's parts to its state registry (r.registry): the run id, the
// policy, the supervisor, the reporter, the algorithm's own, the learning-rate
// rule's sketch. Once, at set-up, before any checkpoint or resume.
void register_state(Run& r);
RunSettings run_settings(const Run& r);

// Everything needed to continue: parameters (and, on the virtual clock, the
// versions computations in flight started on), optimizer state, counters,
// policy, samplers, straggler streams, the supervisor's cadences and the
// reporter's windows.
// `params`: the parameters it will hold (their version is the checkpoint's).
Checkpoint capture_state(Run& r, double now, const VirtualState* vs, const SnapshotPtr& params);
// Adds the large arrays to a captured state and writes it; returns the path.
std::string save_state(Run& r, Checkpoint c, const SnapshotPtr& params, const std::vector<SnapshotPtr>& in_flight,
                       double now);
// Loads the newest checkpoint of --checkpoint-dir that reads back whole (a
// damaged one is reported and the previous one used), checks that it was
// written by the same settings (UsageError naming the field and both values)
// and restores every part of the run.
void restore_state(Run& r);

}  // namespace adasync
