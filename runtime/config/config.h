// TrainConfig: every setting of a run, typed. Flags are parsed into it once,
// at the edge (cli.cc); everything below compares enums, never strings.
// validate() rejects out-of-range values and meaningless combinations before
// any data is loaded.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "kernels/context.h"  // UsageError
#include "runtime/config/settings.h"
#include "runtime/faults.h"
#include "runtime/straggler.h"

namespace adasync {

enum class ClockKind { Real, Virtual };
enum class Devices { Auto, Cpu, Cuda };
enum class Rounding { Ceil, Round };
enum class LossEstimate { Window, Sample };
enum class StepsDist { Fixed, Geometric };
enum class SwarmMode { Blocking, Nonblocking };
enum class Aggregate { Auto, Host, Device };
enum class TransportKind { Local, Mpi };
enum class Progress { Auto, Plain, None };
enum class OnNonfinite { Drop, Stop };

ADASYNC_ENUM_NAMES(ClockKind, {ClockKind::Real, "real"}, {ClockKind::Virtual, "virtual"})
ADASYNC_ENUM_NAMES(Devices, {Devices::Auto, "auto"}, {Devices::Cpu, "cpu"}, {Devices::Cuda, "cuda"})
ADASYNC_ENUM_NAMES(Rounding, {Rounding::Ceil, "ceil"}, {Rounding::Round, "round"})
ADASYNC_ENUM_NAMES(LossEstimate, {LossEstimate::Window, "window"}, {LossEstimate::Sample, "sample"})
ADASYNC_ENUM_NAMES(StepsDist, {StepsDist::Fixed, "fixed"}, {StepsDist::Geometric, "geometric"})
ADASYNC_ENUM_NAMES(SwarmMode, {SwarmMode::Blocking, "blocking"}, {SwarmMode::Nonblocking, "nonblocking"})
ADASYNC_ENUM_NAMES(Aggregate, {Aggregate::Auto, "auto"}, {Aggregate::Host, "host"}, {Aggregate::Device, "device"})
ADASYNC_ENUM_NAMES(TransportKind, {TransportKind::Local, "local"}, {TransportKind::Mpi, "mpi"})
ADASYNC_ENUM_NAMES(Progress, {Progress::Auto, "auto"}, {Progress::Plain, "plain"}, {Progress::None, "none"})
ADASYNC_ENUM_NAMES(OnNonfinite, {OnNonfinite::Drop, "drop"}, {OnNonfinite::Stop, "stop"})

// How often something happens: every N updates or every T clock seconds
// (never when both are 0). Parsed from "200", "5s", "500ms" or "0".
struct Cadence {
  int64_t updates = 0;
  double seconds = 0;
  Cadence() = default;
  Cadence(const char* text) : Cadence(parse(text, "cadence")) {}  // NOLINT: tests write "200" or "5s"
  static Cadence parse(const std::string& text, const std::string& flag);
  bool never() const { return updates == 0 && seconds == 0; }
  std::string str() const;
};

// Piecewise K over clock time, parsed from "0:1,30s:2,60s:4": (time, K)
// points, the first at time 0, times increasing.
struct SchedulePoints {
  std::vector<std::pair<double, int>> points;
  SchedulePoints() = default;
  SchedulePoints(const char* text) : SchedulePoints(parse(text, "schedule points")) {}  // NOLINT: tests write "0:1,20:2"
  static SchedulePoints parse(const std::string& text, const std::string& flag);
  bool empty() const { return points.empty(); }
};

// Injected faults, parsed from "nan@2:10,throw@1:5,hang@3:20:2s" (faults.h).
struct FaultList {
  std::vector<Fault> faults;
  FaultList() = default;
  FaultList(const char* text) : faults(parse_faults(text, "fault list")) {}  // NOLINT: tests write "throw@1:5"
  bool empty() const { return faults.empty(); }
};

// The compute-time model, parsed from "exp:mean=20ms" (straggler.h); its
// text is the run's identity (checkpoints, traces, metrics).
struct StragglerFlag {
  StragglerSpec spec;
  StragglerFlag() { spec.text = "none"; }
  explicit StragglerFlag(StragglerSpec s) : spec(std::move(s)) {}
  StragglerFlag(const char* text) : spec(parse_straggler(text, "straggler model")) {}  // NOLINT: tests write "exp:mean=1"
  StragglerFlag(const std::string& text) : spec(parse_straggler(text, "straggler model")) {}  // NOLINT
  const std::string& text() const { return spec.text; }
};

// Per-worker factors on the compute times, parsed from "1,1,2,4" (the last
// repeats); its text is part of the run's settings (checkpoints).
struct SlowdownFlag {
  std::vector<double> factors;  // empty: none
  std::string text;
  SlowdownFlag() = default;
  SlowdownFlag(std::vector<double> f, std::string t) : factors(std::move(f)), text(std::move(t)) {}
};

struct TrainConfig {
  // model and data
  std::string model = "cnn";
  std::string dataset = "fashion-mnist";
  std::string data_dir;  // "" = the dataset's default
  int batch = 64;
  bool shard = false;  // each worker samples only its own shard
  bool augment = false;  // padded random crop and horizontal flip of training images
  // optimization
  OptimizerConfig opt;
  // SGD momentum; < 0 means auto: 0.9 for the synchronous variants and 0 for
  // the asynchronous ones, where staleness already acts as momentum and the
  // two together make training diverge.
  double momentum = -1;
  double lr = 0.05;
  // The learning rate over the run, in epochs of counted samples (LrConfig).
  LrSchedule lr_schedule = LrSchedule::Const;
  std::vector<double> lr_milestones;  // step: epochs at which lr is multiplied by lr_gamma
  double lr_gamma = 0.1;
  double lr_warmup = 0;  // epochs of linear warm-up from 0
  // run length (0 = unlimited; with none set, one epoch)
  double epochs = 0;
  int64_t max_updates = 0;
  double time_budget = 0;  // clock seconds
  Cadence eval_every = "200";  // 0: only at the end
  double target_accuracy = 0;  // stop at the first evaluation that reaches it (0: never)
  size_t eval_samples = 2000;  // test samples per intermediate evaluation (0: all); the final one uses all
  // engine
  int workers = 1;
  Variant variant = Variant::Sync;
  bool swarm = false;  // --variant swarm: decentralised SwarmSGD, no parameter server
  int k = 1;
  ClockKind clock = ClockKind::Real;
  StragglerFlag straggler;
  SlowdownFlag slowdown;
  double base_time = 0;  // virtual: fixed part of each compute time (seconds)
  double ps_time = 0;    // virtual: the parameter server's service time per update (seconds)
  int64_t max_staleness = -1;
  // K over time (ALGORITHMS.md section 5) and the learning-rate rule (section 4)
  ScheduleKind schedule = ScheduleKind::Fixed;
  int k0 = 0;                      // adasync: K_0 (0: auto, measured)
  double schedule_every = 0;       // adasync: T_0 in clock seconds (0: default_decision_interval)
  AdaRule adasync_rule = AdaRule::Auto;
  Rounding sqrt_rounding = Rounding::Ceil;
  double plateau_z = 2.0;              // plateau rule: significance in standard errors
  double k0_theta = 3;                 // --k0 auto: the largest L eta E[tau_K0] (stale variants)
  int64_t plateau_updates = 100;       // plateau rule: updates a window spans at least
  double plateau_horizon = 3;          // plateau rule: the budget test's factor (0: off)
  SchedulePoints schedule_points;  // piecewise
  LossEstimate loss_estimate = LossEstimate::Window;
  int loss_sample = 1024;          // images in the fixed training sample
  LrKind lr_rule = LrKind::Const;
  double lr_c = 0;                 // C of the distance rule
  DistanceKind lr_distance = DistanceKind::Sketch;
  // SwarmSGD (--variant swarm)
  GraphKind graph = GraphKind::Complete;
  int degree = 4;                  // random r-regular graphs
  double local_steps = 4;          // H
  StepsDist local_steps_dist = StepsDist::Fixed;
  SwarmMode swarm_mode = SwarmMode::Blocking;
  int quantize = 0;                // bits: 0 (full precision), 8, 16
  double quant_step = 0;           // fixed lattice step e (0: adaptive per block)
  int quant_block = 1024;          // coordinates per quantised block (own step, check, fallback)
  double quant_margin = 0;         // adaptive: margin on the sender's guess (0: 2 blocking, 4 non-blocking)
  Devices devices = Devices::Auto;
  // Where a sync update runs: host (the parameter server), device (all-reduce
  // and update on the GPUs, sync with one worker per GPU only) or auto.
  Aggregate aggregate = Aggregate::Auto;
  // Where the workers run: local (threads of this process) or mpi (worker
  // groups on the other ranks of an mpirun job; the PS on rank 0).
  TransportKind transport = TransportKind::Local;
  bool deterministic = false;    // deterministic cuDNN algorithms only
  bool cuda_graphs = true;       // capture each worker's step as a CUDA graph
  bool shared_memory = true;     // MPI SwarmSGD: ranks on one host average in place (a shared-memory window)
  // reliability
  std::string checkpoint_dir;        // where checkpoints go ("" = none)
  Cadence checkpoint_every = "0";    // 0: only at the end
  int checkpoint_keep = 3;           // newest checkpoints kept
  bool resume = false;               // continue from the newest valid checkpoint of checkpoint_dir
  bool overwrite = false;            // a fresh run may delete another run's checkpoints in checkpoint_dir
  OnNonfinite on_nonfinite = OnNonfinite::Drop;
  int64_t nonfinite_limit = 100;     // drop: stop (exit 1) after this many non-finite gradients in a row
  double watchdog = 0;               // seconds without a push before a worker is flagged (0: off)
  FaultList inject;                  // fault injection (testing), see runtime/faults.h
  // models in and out (runtime/run/model_io.h)
  std::string save_model;  // write the final parameters here (safetensors)
  std::string init_from;   // start from this safetensors file's parameters
  std::string export_from; // trainer --export CKPT: convert a checkpoint, train nothing
  // misc
  uint64_t seed = 1;
  int threads = 0;  // 0: all hardware threads
  std::string metrics, trace, replay;
  Progress progress = Progress::Auto;

  // "swarm" or the variant's name.
  std::string variant_name() const { return swarm ? "swarm" : name_of(variant); }
  // --variant's value: one of the six rules or "swarm".
  void set_variant(const std::string& s);
};

// Throws UsageError for any out-of-range value or meaningless combination.
void validate(const TrainConfig& c);

}  // namespace adasync
