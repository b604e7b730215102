#include "runtime/config/config.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "models/model.h"
#include "runtime/faults.h"
#include "runtime/output.h"
#include "runtime/straggler.h"

namespace adasync {

Cadence Cadence::parse(const std::string& text, const std::string& flag) {
  Cadence c;
  if (text.empty()) throw UsageError(flag + ": expected N updates or a duration such as 5s, found ''");
  if (text.find_first_not_of("0123456789") != std::string::npos) {
    c.seconds = parse_seconds(text, flag);
    return c;
  }
  try {
    c.updates = std::stoll(text);
  } catch (const std::exception&) {
    throw UsageError(flag + ": expected N updates (at most 2^63 - 1) or a duration such as 5s, found '" + text + "'");
  }
  return c;
}

SchedulePoints SchedulePoints::parse(const std::string& text, const std::string& flag) {
  SchedulePoints sp;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const auto colon = item.find(':');
    if (colon == std::string::npos)
      throw UsageError(flag + ": expected TIME:K items such as 0:1,30s:2, found '" + item + "'");
    const double t = parse_seconds(item.substr(0, colon), flag);
    int k = 0;
    try {
      size_t used = 0;
      k = std::stoi(item.substr(colon + 1), &used);
      if (used != item.size() - colon - 1) k = 0;
    } catch (const std::exception&) {
      k = 0;
    }
    if (k < 1) throw UsageError(flag + ": K must be a positive integer, found '" + item + "'");
    if (!sp.points.empty() && t <= sp.points.back().first)
      throw UsageError(flag + ": times must increase, found '" + item + "' after " +
                       std::to_string(sp.points.back().first) + " s");
    sp.points.emplace_back(t, k);
  }
  if (sp.points.empty() || sp.points.front().first != 0)
    throw UsageError(flag + ": the list must start at time 0 (e.g. 0:1,30s:2), found '" + text + "'");
  return sp;
}

std::string Cadence::str() const {
  if (seconds > 0) {
    char b[48];
    std::snprintf(b, sizeof b, "%gs", seconds);
    return b;
  }
  return std::to_string(updates);
}

void TrainConfig::set_variant(const std::string& s) {
  swarm = s == "swarm";
  variant = swarm ? Variant::Async : parse_variant(s);
}

void validate(const TrainConfig& c) {
  auto bad = [](const std::string& flag, const std::string& expected, const std::string& found) {
    throw UsageError(flag + ": expected " + expected + ", found " + found);
  };
  if (c.batch < 1) bad("--batch", "a positive batch size", std::to_string(c.batch));
  if (c.augment && (c.dataset == "gaussian" || c.dataset == "teacher"))
    bad("--augment", "an image dataset (fashion-mnist, mnist, cifar10)", "--dataset " + c.dataset);
  if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("--lr", "a positive learning rate", std::to_string(c.lr));
  if (!(c.epochs >= 0) || !std::isfinite(c.epochs)) bad("--epochs", "a finite non-negative number", std::to_string(c.epochs));
  if (!std::isfinite(c.time_budget)) bad("--time-budget", "a finite duration", std::to_string(c.time_budget));
  if (c.max_updates < 0) bad("--max-updates", "a non-negative count", std::to_string(c.max_updates));
  if (c.time_budget < 0) bad("--time-budget", "a non-negative duration", std::to_string(c.time_budget));
  if (c.workers < 1 || c.workers > 1024) bad("--workers", "a count in [1, 1024]", std::to_string(c.workers));
  const bool swarm = c.swarm;
  const Variant v = c.variant;
  const std::string vname = c.variant_name();
  if (swarm) {
    if (c.workers < 2) bad("--workers", "at least 2 nodes for --variant swarm", std::to_string(c.workers));
    if (!(c.local_steps >= 1)) bad("--local-steps", "at least 1", std::to_string(c.local_steps));
    if (c.quantize != 0 && c.quantize != 8 && c.quantize != 16)
      bad("--quantize", "0 (full precision), 8 or 16 bits", std::to_string(c.quantize));
    if (c.quant_step < 0) bad("--quant-step", "a positive step (0: adaptive)", std::to_string(c.quant_step));
    if (c.quant_block < 1) bad("--quant-block", "at least 1 coordinate", std::to_string(c.quant_block));
    if (c.quant_margin != 0 && !(c.quant_margin >= 1))
      bad("--quant-margin", "at least 1 (0: automatic)", std::to_string(c.quant_margin));
    const int P = c.workers;
    if (c.graph == GraphKind::Torus && torus_rows(P) == 0)
      bad("--workers", "rows x cols with both >= 2 for --graph torus", std::to_string(P));
    if (c.graph == GraphKind::Regular && (c.degree < 1 || c.degree >= P || (P * c.degree) % 2 != 0))
      bad("--degree", "1 <= r < --workers = " + std::to_string(P) + " with --workers x r even for --graph regular",
          std::to_string(c.degree));
    if (c.opt.name != OptimizerKind::Sgd)
      throw UsageError(std::string("--optimizer ") + name_of(c.opt.name) + ": SwarmSGD nodes take plain SGD local steps");
    if (c.momentum > 0 || c.opt.nesterov)
      bad("--momentum", "0 for --variant swarm (its nodes take plain SGD local steps)", std::to_string(c.momentum));
    if (c.opt.weight_decay != 0)
      bad("--weight-decay", "0 for --variant swarm (its nodes take plain SGD local steps)",
          std::to_string(c.opt.weight_decay));
    if (c.schedule != ScheduleKind::Fixed || c.lr_rule != LrKind::Const || c.max_staleness >= 0 || !c.trace.empty() ||
        c.aggregate == Aggregate::Device)
      throw UsageError("--variant swarm has no parameter server: --schedule, --lr-rule, --max-staleness, --trace and "
                       "--aggregate device do not apply");
  } else if (c.quantize != 0 || c.graph != GraphKind::Complete || c.swarm_mode != SwarmMode::Blocking) {
    throw UsageError("--graph, --quantize and --swarm-mode apply to --variant swarm only");
  }
  if (has_k(v) && (c.k < 1 || c.k > c.workers))
    bad("--k", "a value in [1, --workers = " + std::to_string(c.workers) + "]", std::to_string(c.k));
  if (c.threads < 0) bad("--threads", "a non-negative count (0: all)", std::to_string(c.threads));
  if (c.base_time < 0) bad("--base-time", "a non-negative duration", std::to_string(c.base_time));
  if (c.max_staleness < -1) bad("--max-staleness", "a non-negative bound (or -1: none)", std::to_string(c.max_staleness));
  if (c.max_staleness >= 0 && is_synchronous(v))
    throw UsageError("--max-staleness: " + vname + " applies only fresh gradients; a staleness bound needs async, k-async or k-batch-async");
  if (c.schedule != ScheduleKind::Fixed && !has_k(v))
    throw UsageError(std::string("--schedule ") + name_of(c.schedule) + ": " + vname +
                     " has no K to schedule (use k-sync, k-batch-sync, k-async or k-batch-async)");
  if (!(c.k0_theta > 0) || !std::isfinite(c.k0_theta))
    bad("--k0-theta", "a positive bound on L eta E[tau]", std::to_string(c.k0_theta));
  if (!(c.plateau_z > 0) || !std::isfinite(c.plateau_z))
    bad("--plateau-z", "a positive number of standard errors", std::to_string(c.plateau_z));
  if (!(c.plateau_horizon >= 0) || !std::isfinite(c.plateau_horizon))
    bad("--plateau-horizon", "a non-negative factor (0: no budget test)", std::to_string(c.plateau_horizon));
  if (c.plateau_updates < 1) bad("--plateau-updates", "at least 1 update per window", std::to_string(c.plateau_updates));
  if (!(c.ps_time >= 0) || !std::isfinite(c.ps_time))
    bad("--ps-time", "a non-negative duration", std::to_string(c.ps_time));
  if (c.ps_time > 0 && (c.clock != ClockKind::Virtual || swarm))
    throw UsageError("--ps-time models the parameter server's service time on the virtual clock; this run uses " +
                     (swarm ? std::string("--variant swarm (no parameter server)") : std::string("--clock ") + name_of(c.clock)));
  if (c.schedule == ScheduleKind::AdaSync && (c.k0 < 0 || c.k0 > c.workers))
    bad("--k0", "a start K in [1, --workers = " + std::to_string(c.workers) + "] or auto", std::to_string(c.k0));
  if (c.schedule_every < 0) bad("--schedule-every", "a positive duration", std::to_string(c.schedule_every));
  if (c.schedule == ScheduleKind::Piecewise && c.schedule_points.empty())
    throw UsageError("--schedule piecewise needs --schedule-points, e.g. 0:1,30s:2,60s:4");
  for (const auto& [t, k] : c.schedule_points.points)
    if (k > c.workers)
      bad("--schedule-points", "K in [1, --workers = " + std::to_string(c.workers) + "]",
          std::to_string(k) + " at " + std::to_string(t) + " s");
  if (c.loss_sample < 1) bad("--loss-sample", "a positive number of images", std::to_string(c.loss_sample));
  if (c.schedule != ScheduleKind::Fixed && c.aggregate == Aggregate::Device)
    throw UsageError("--aggregate device runs plain sync; a schedule needs the parameter server (--aggregate host)");
  if (c.lr_schedule == LrSchedule::Step && c.lr_milestones.empty())
    bad("--lr-milestones", "at least one epoch for --lr-schedule step", "none");
  if (c.lr_schedule != LrSchedule::Step && !c.lr_milestones.empty())
    bad("--lr-milestones", "--lr-schedule step", std::string("--lr-schedule ") + name_of(c.lr_schedule));
  for (size_t i = 0; i < c.lr_milestones.size(); ++i)
    if (!(c.lr_milestones[i] > 0) || (i > 0 && !(c.lr_milestones[i] > c.lr_milestones[i - 1])))
      bad("--lr-milestones", "positive epochs in increasing order", std::to_string(c.lr_milestones[i]));
  if (!(c.lr_gamma > 0 && c.lr_gamma <= 1)) bad("--lr-gamma", "a factor in (0, 1]", std::to_string(c.lr_gamma));
  if (!(c.lr_warmup >= 0) || !std::isfinite(c.lr_warmup)) bad("--lr-warmup", "epochs >= 0", std::to_string(c.lr_warmup));
  if (c.lr_schedule == LrSchedule::Cosine && !(c.epochs > 0))
    bad("--lr-schedule cosine", "--epochs (the schedule anneals to 0 there)", "no --epochs");
  if (swarm && (c.lr_schedule != LrSchedule::Const || c.lr_warmup > 0))
    bad("--lr-schedule", "const with --variant swarm (its nodes keep --lr)", std::string(name_of(c.lr_schedule)));
  {
    LrConfig lc;
    lc.rule = c.lr_rule;
    lc.c = c.lr_c;
    lc.distance = c.lr_distance;
    validate(lc);
    if (c.lr_rule != LrKind::Const && is_synchronous(v) && !swarm)
      throw UsageError(std::string("--lr-rule ") + name_of(c.lr_rule) + ": " + vname + " applies only fresh gradients (staleness 0); "
                       "the staleness rules need async, k-async or k-batch-async");
  }
  if (!(c.watchdog >= 0) || !std::isfinite(c.watchdog))
    bad("--watchdog", "a positive duration (or no --watchdog: off)", std::to_string(c.watchdog));
  if (c.nonfinite_limit < 1) bad("--nonfinite-limit", "at least 1 gradient", std::to_string(c.nonfinite_limit));
  // A cadence in clock time below these would evaluate or checkpoint at
  // nearly every event (or forever at one instant): use N updates for that.
  if (c.eval_every.seconds != 0 && !(c.eval_every.seconds >= 1e-3))
    bad("--eval-every", "N updates or a duration of at least 1ms", c.eval_every.str());
  if (c.checkpoint_every.seconds != 0 && !(c.checkpoint_every.seconds >= 1))
    bad("--checkpoint-every", "N updates or a duration of at least 1s", c.checkpoint_every.str());
  for (const auto& [path, flag] : {std::pair<std::string, const char*>{c.metrics, "--metrics"}, {c.trace, "--trace"}})
    if (!path.empty()) check_output(path, flag);
  if (c.checkpoint_keep < 1) bad("--checkpoint-keep", "at least 1", std::to_string(c.checkpoint_keep));
  if (c.overwrite && c.resume)
    throw UsageError("--overwrite with --resume: a resumed run continues the checkpoints it would delete");
  if (c.overwrite && c.checkpoint_dir.empty()) throw UsageError("--overwrite needs --checkpoint-dir (the directory to take over)");
  if (c.resume && c.checkpoint_dir.empty())
    throw UsageError("--resume needs --checkpoint-dir (the directory holding the checkpoints to continue from)");
  if (!c.checkpoint_every.never() && c.checkpoint_dir.empty())
    throw UsageError("--checkpoint-every needs --checkpoint-dir");
  if (c.resume && !c.trace.empty())
    throw UsageError("--trace with --resume: a trace must start at version 0 to be replayed");
  if (!c.replay.empty() && (c.resume || !c.checkpoint_dir.empty()))
    throw UsageError("--replay re-applies a whole trace; it takes no --checkpoint-dir or --resume");
  for (const Fault& f : c.inject.faults)
    if (f.worker >= c.workers)
      throw UsageError("--inject: worker " + std::to_string(f.worker) + " outside [0, " + std::to_string(c.workers) +
                       ") in '" + to_string(f) + "' (" + kFaultSyntax + ")");
  if (!(c.momentum < 1) || !(c.momentum >= 0 || c.momentum == -1))
    bad("--momentum", "a value in [0, 1) (or -1: auto)", std::to_string(c.momentum));
  if (c.target_accuracy < 0 || c.target_accuracy > 1)
    bad("--target-accuracy", "a fraction in (0, 1], e.g. 0.88", std::to_string(c.target_accuracy));
  if (c.aggregate == Aggregate::Device) {
    // The GPUs step together (one all-reduce a step): no run goes on without
    // a failed worker, and no worker owes a push on its own.
    if (!c.inject.empty())
      throw UsageError("--inject with --aggregate device: the GPUs step together, so no worker can fail alone; "
                       "use --aggregate host to inject faults");
    if (c.watchdog > 0)
      throw UsageError("--watchdog with --aggregate device: the GPUs step together, so no worker can stall alone; "
                       "use --aggregate host");
    if (v != Variant::Sync || swarm)
      throw UsageError("--aggregate device: only the sync variant can update on the devices, not " + vname);
    if (c.devices == Devices::Cpu) throw UsageError("--aggregate device needs GPUs; --devices cpu was given");
    if (c.clock != ClockKind::Real) throw UsageError("--aggregate device runs on the real clock only");
    if (c.opt.name != OptimizerKind::Sgd)
      throw UsageError(std::string("--aggregate device supports sgd (with momentum), not ") + name_of(c.opt.name));
    if (!c.trace.empty()) throw UsageError("--trace records parameter-server updates: use --aggregate host");
  }
  if (c.transport == TransportKind::Mpi) {
    if (c.clock == ClockKind::Virtual)
      throw UsageError("--transport mpi: the virtual clock simulates every worker in one process; use --clock real "
                       "over MPI, or --clock virtual without --transport mpi");
    if (c.aggregate == Aggregate::Device)
      throw UsageError("--transport mpi: --aggregate device (NCCL across ranks) is not built yet; use --aggregate host");
    if (!c.replay.empty()) throw UsageError("--transport mpi: --replay runs in one process");
  }
  validate(c.opt);
  if (const StragglerSpec& sp = c.straggler.spec;
      sp.kind == StragglerSpec::Kind::Trace && int(sp.trace.size()) < c.workers)
    throw UsageError("--straggler " + c.straggler.text() + ": expected a line of times for each of the " +
                     std::to_string(c.workers) + " workers, found " + std::to_string(sp.trace.size()) + " line(s)");
  // Models in and out: a malformed --model fails before any data is loaded.
  parse_model(c.model);
  if (!c.save_model.empty()) check_output(c.save_model, "--save-model");
  // No output may be another output, an input, or a checkpoint's file.
  refuse_shared_paths({{"--metrics", c.metrics}, {"--trace", c.trace}, {"--save-model", c.save_model},
                       {"--checkpoint-dir", c.checkpoint_dir, true}},
                      {{"--init-from", c.init_from}, {"--replay", c.replay}, {"--export", c.export_from}});
  if (!c.init_from.empty() && c.resume)
    throw UsageError("--init-from with --resume: a resumed run continues from its checkpoint's parameters");
  if (!c.init_from.empty() && !c.replay.empty())
    throw UsageError("--init-from with --replay: the trace's header names the file its run started from");
}

}  // namespace adasync
