#include "runtime/config/cli_flags.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "models/model.h"
#include "runtime/output.h"

namespace adasync {

namespace {
std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

void add_trainer_flags(CLI::App& app, TrainConfig& c, CliText& t) {
  t.seed = std::to_string(c.seed);
  app.get_formatter()->column_width(34);

  auto* g_data = "Model and data";
  app.add_flag("--augment", c.augment,
               "Augment training images: a 4-pixel padded random crop and a horizontal flip, drawn from (seed, epoch, "
               "sample)")
      ->group(g_data);
  app.add_option("--model", c.model,
                 "Network: " + join(model_names()) +
                     ", a layer list such as conv5x5-32,relu,pool2,fc1024,relu,fc, or a .json file (see docs/models.md)")
      ->capture_default_str()->group(g_data);
  app.add_option("--dataset", c.dataset, "fashion-mnist, fashion-mnist32 (padded to 32x32), mnist, cifar10, gaussian or teacher")
      ->capture_default_str()->group(g_data);
  app.add_option("--data-dir", c.data_dir,
                 "Directory of the dataset files (default for fashion-mnist: /usr/share/datasets/fashion-mnist)")
      ->group(g_data);
  app.add_option("--batch", c.batch, "Mini-batch size per worker")->capture_default_str()->group(g_data);
  app.add_flag("--shard", c.shard, "Give each worker a disjoint shard of the training set")->group(g_data);

  app.add_option("--save-model", c.save_model,
                 "Write the final parameters to FILE.safetensors (PyTorch's names and shapes; with --export: a "
                 "checkpoint's)")
      ->group(g_data);
  app.add_option("--init-from", c.init_from,
                 "Start from the parameters in FILE.safetensors (names and shapes must match --model)")
      ->group(g_data);
  app.add_option("--export", c.export_from,
                 "Write checkpoint FILE's parameters to --save-model and exit (no training)")
      ->group(g_data);

  auto* g_opt = "Optimization";
  app.add_option("--optimizer", t.optimizer, "sgd (momentum via --momentum), momentum, adam or amsgrad")
      ->capture_default_str()->group(g_opt);
  app.add_option("--lr", c.lr, "Learning rate")->capture_default_str()->group(g_opt);
  app.add_option("--momentum", c.momentum,
                 "SGD momentum; default 0.9 for sync, k-sync and k-batch-sync, 0 for the asynchronous variants "
                 "(staleness already acts as momentum)")
      ->group(g_opt);
  app.add_flag("--nesterov", c.opt.nesterov, "Nesterov momentum")->group(g_opt);
  app.add_option("--weight-decay", c.opt.weight_decay, "L2 weight decay")->capture_default_str()->group(g_opt);
  app.add_flag("--no-decay-bn", c.opt.no_decay_bn,
               "No weight decay on biases and batch-norm scales and shifts (as CIFAR ResNet recipes do)")
      ->group(g_opt);
  app.add_option("--beta1", c.opt.beta1, "Adam/AMSGrad first-moment decay")->capture_default_str()->group(g_opt);
  app.add_option("--beta2", c.opt.beta2, "Adam/AMSGrad second-moment decay")->capture_default_str()->group(g_opt);
  app.add_option("--eps", c.opt.eps, "Adam/AMSGrad epsilon")->capture_default_str()->group(g_opt);
  app.add_flag("--no-bias-correction", t.no_bias_correction, "Adam/AMSGrad without bias correction")->group(g_opt);

  auto* g_len = "Run length and evaluation";
  app.add_option("--epochs", c.epochs, "Stop after this many epochs of counted samples (default 1 when no other limit)")
      ->group(g_len);
  app.add_option("--max-updates", c.max_updates, "Stop after this many parameter-server updates")->group(g_len);
  app.add_option("--time-budget", t.time_budget, "Stop after this much clock time, e.g. 60s, 5min (virtual seconds with --clock virtual)")
      ->group(g_len);
  app.add_option("--eval-every", t.eval_every, "Evaluate every N updates, or every duration such as 10s; 0: only at the end")
      ->capture_default_str()->group(g_len);
  app.add_option("--target-accuracy", c.target_accuracy,
                 "Stop at the first evaluation whose test accuracy reaches this fraction (time-to-accuracy runs)")
      ->group(g_len);
  app.add_option("--eval-samples", c.eval_samples, "Test samples per intermediate evaluation (0: all; the final one uses all)")
      ->capture_default_str()->group(g_len);

  auto* g_eng = "Asynchronous engine";
  app.add_option("--workers", c.workers, "Number of workers P")->capture_default_str()->group(g_eng);
  app.add_option("--variant", t.variant,
                 "sync, k-sync, k-batch-sync, async, k-async, k-batch-async, or swarm (decentralised SwarmSGD)")
      ->capture_default_str()->group(g_eng);
  app.add_option("--k", c.k, "Synchronicity K (gradients per update) for the k-variants")->capture_default_str()->group(g_eng);
  app.add_option("--clock", t.clock, "real (threads, wall time) or virtual (deterministic discrete-event simulation)")
      ->capture_default_str()->group(g_eng);
  app.add_option("--straggler", t.straggler,
                 "Compute-time model: none, const:value=T, exp:mean=T, shifted-exp:shift=T,mean=T, pareto:scale=T,shape=A, "
                 "uniform:min=T,max=T, trace:path=FILE (T: 20ms, 0.5, 2s)")
      ->capture_default_str()->group(g_eng);
  app.add_option("--slowdown", t.slowdown, "Per-worker slow-down factors, e.g. 1,1,2,4 (last repeats)")->group(g_eng);
  app.add_option("--base-time", t.base_time, "Virtual clock: fixed compute time added to every draw (default 1ms when the straggler model is none)")
      ->group(g_eng);
  app.add_option("--ps-time", t.ps_time,
                 "Virtual clock: the parameter server's service time per update (e.g. 0.05); pushes queue while it "
                 "is busy (default 0: updates take no time)")
      ->group(g_eng);
  app.add_option("--max-staleness", c.max_staleness, "Drop gradients more than this many versions old (async variants; -1: no bound)")
      ->capture_default_str()->group(g_eng);
  auto* g_sched = "Synchronicity schedule and learning-rate rules";
  app.add_option("--schedule", t.schedule,
                 "K over time: fixed, adasync (raise K as the loss falls) or piecewise (--schedule-points)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--k0", t.k0,
                 "AdaSync: starting K, or auto (k-async and k-batch-async: a warm-up at K = P - 1, then the fastest K "
                 "that the curvature measured there says stays stable; the sync variants: 1)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--schedule-every", t.schedule_every,
                 "AdaSync: decision interval T_0 in clock time (default: plateau rule budget / 100, else 1s; other rules budget / 20, else 10s)")
      ->group(g_sched);
  app.add_option("--adasync-rule", t.adasync_rule,
                 "auto (= runtime-plateau), sqrt (K0 sqrt(F0/Ft), rounded), order-stat "
                 "(K^2/(P-K) >= (F0/Ft) K0^2/(P-K0)), runtime (K E[T_K] >= (F0/Ft) K0 E[T_K0], E[T_K] from the "
                 "observed compute times), plateau (double K when the loss stops falling against its noise), "
                 "runtime-plateau (the larger of the two) or goodput (the K of the most predicted progress per "
                 "second, from the measured gradient noise scale and compute times)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--sqrt-rounding", t.sqrt_rounding, "sqrt rule: ceil or round")->capture_default_str()->group(g_sched);
  app.add_option("--k0-theta", c.k0_theta,
                 "--k0 auto: K0 is the fastest K with L eta E[tau_K] at most this (L the curvature measured in the "
                 "warm-up, eta the step, E[tau_K] = P/K - 1)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--plateau-z", c.plateau_z,
                 "plateau rule: K doubles when the window's loss fell by less than this many standard errors")
      ->capture_default_str()->group(g_sched);
  app.add_option("--plateau-updates", c.plateau_updates,
                 "plateau rule: updates a loss window spans at least (so a window is the same progress at any K)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--plateau-horizon", c.plateau_horizon,
                 "plateau rule, with a time budget: K doubles only if this many times the updates K took, at 2K's "
                 "time per update, fit in the time left (0: no budget test)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--schedule-points", t.schedule_points, "Piecewise K, e.g. 0:1,30s:2,60s:4")->group(g_sched);
  app.add_option("--loss-estimate", t.loss_estimate,
                 "AdaSync's loss F_t: window (mean mini-batch loss of the gradients counted since the last decision; "
                 "F_0 from those computed at the initial parameters) or sample (loss on a fixed training sample)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--loss-sample", c.loss_sample, "Images in the fixed training sample")->capture_default_str()->group(g_sched);
  app.add_option("--lr-rule", t.lr_rule,
                 "const, staleness (eta / max(1, staleness)) or distance (min(C / ||w_j - w_tau||^2, eta), eta = --lr)")
      ->capture_default_str()->group(g_sched);
  app.add_option("--lr-c", c.lr_c, "C of the distance rule")->group(g_sched);
  app.add_option("--lr-schedule", t.lr_schedule,
                 "lr over the run, in epochs of counted samples: const, step (times --lr-gamma at each of "
                 "--lr-milestones) or cosine (to 0 at --epochs)")
      ->capture_default_str()->group(g_opt);
  app.add_option("--lr-milestones", t.lr_milestones, "step schedule: epochs, comma-separated and increasing (e.g. 100,150)")
      ->group(g_opt);
  app.add_option("--lr-gamma", c.lr_gamma, "step schedule: the factor at each milestone")->capture_default_str()->group(g_opt);
  app.add_option("--lr-warmup", c.lr_warmup, "epochs of linear warm-up from 0 to the schedule's rate")
      ->capture_default_str()->group(g_opt);
  app.add_option("--lr-distance", t.lr_distance,
                 "distance rule: sketch (per-version count-sketches, no parameter copies) or exact")
      ->capture_default_str()->group(g_sched);

  auto* g_swarm = "SwarmSGD (--variant swarm)";
  app.add_option("--graph", t.graph, "Communication graph: complete, ring, torus (2-D) or regular (random r-regular)")
      ->capture_default_str()->group(g_swarm);
  app.add_option("--degree", c.degree, "r of a random r-regular graph")->capture_default_str()->group(g_swarm);
  app.add_option("--local-steps", c.local_steps, "Local SGD steps H between averagings")->capture_default_str()->group(g_swarm);
  app.add_option("--local-steps-dist", t.local_steps_dist, "fixed H, or geometric with mean H")
      ->capture_default_str()->group(g_swarm);
  app.add_option("--swarm-mode", t.swarm_mode,
                 "blocking (both nodes average) or nonblocking (the initiator averages with the partner's last published copy)")
      ->capture_default_str()->group(g_swarm);
  app.add_option("--quantize", c.quantize, "Bits per coordinate of exchanged models: 0 (full precision), 8 or 16")
      ->capture_default_str()->group(g_swarm);
  app.add_option("--quant-step", c.quant_step,
                 "Fixed lattice step e (default 0: adaptive, chosen per block); a block whose "
                 "models differ by more than 2^bits * e / 2 is sent again at full precision, never decoded wrongly")
      ->group(g_swarm);
  app.add_option("--quant-block", c.quant_block, "Coordinates per quantised block (each has its own step and check)")
      ->capture_default_str()->group(g_swarm);
  app.add_option("--quant-margin", c.quant_margin,
                 "Adaptive step: factor on the sender's guess of max |x - b| per block (0: 2 blocking, 4 non-blocking)")
      ->group(g_swarm);

  app.add_option("--devices", t.devices, "auto (GPU if usable), cpu or cuda")->capture_default_str()->group(g_eng);
  app.add_option("--aggregate", t.aggregate,
                 "Where a sync update runs: host (parameter server), device (NCCL all-reduce and SGD on the GPUs; "
                 "sync, one worker per GPU) or auto (device when it applies)")
      ->capture_default_str()->group(g_eng);
  app.add_option("--transport", t.transport,
                 "local (worker threads of this process) or mpi (under mpirun: the parameter server on rank 0, the "
                 "workers spread over the other ranks, each rank using its host's GPUs or CPU threads; --variant swarm: "
                 "the nodes on ranks 1.., rank 0 counting and evaluating)")
      ->capture_default_str()->group(g_eng);
  app.add_flag("--no-cuda-graphs", t.no_graphs, "CUDA: launch each step's kernels one by one instead of as a captured graph")
      ->group(g_eng);
  app.add_flag("--no-shared-memory", t.no_shared_memory,
               "MPI, --variant swarm: exchanges between ranks on one host travel as messages (as between hosts) "
               "instead of averaging the models in place in an MPI shared-memory window")
      ->group(g_eng);
  app.add_flag("--deterministic", c.deterministic, "CUDA: deterministic cuDNN algorithms only (bit-stable replays)")->group(g_eng);

  auto* g_rel = "Checkpoints and faults";
  app.add_option("--checkpoint-dir", c.checkpoint_dir,
                 "Write checkpoints here (atomically; the newest --checkpoint-keep are kept); one is always written at "
                 "the end, and on SIGINT or SIGTERM")
      ->group(g_rel);
  app.add_option("--checkpoint-every", t.checkpoint_every, "Also every N updates, or every duration such as 60s")
      ->capture_default_str()->group(g_rel);
  app.add_option("--checkpoint-keep", c.checkpoint_keep, "Checkpoints kept")->capture_default_str()->group(g_rel);
  app.add_flag("--overwrite", c.overwrite,
               "Start a fresh run in a --checkpoint-dir that holds another run's checkpoints, deleting them "
               "(without it such a run is refused)")
      ->group(g_rel);
  app.add_flag("--resume", c.resume,
               "Continue from the newest readable checkpoint in --checkpoint-dir (a damaged one is skipped); on the "
               "virtual clock the run continues exactly as if never stopped")
      ->group(g_rel);
  app.add_option("--on-nonfinite", t.on_nonfinite, "A NaN or infinite gradient is dropped and counted (drop) or stops the run (stop)")
      ->capture_default_str()->group(g_rel);
  app.add_option("--nonfinite-limit", c.nonfinite_limit,
                 "With --on-nonfinite drop: stop (exit 1) after this many non-finite gradients in a row")
      ->capture_default_str()->group(g_rel);
  app.add_option("--watchdog", t.watchdog, "Flag a worker that pushes nothing for this long, e.g. 30s")->group(g_rel);
  app.add_option("--inject", t.inject,
                 "Fault injection for testing: nan@W:N, throw@W:N, hang@W:N:T (worker W's N-th computation)")
      ->group(g_rel);

  auto* g_out = "Output and reproducibility";
  app.add_option("--seed", t.seed, "Seed of initialisation, sampling and straggler draws")->capture_default_str()->group(g_out);
  app.add_option("--threads", c.threads, "CPU threads (0: all)")->capture_default_str()->group(g_out);
  app.add_option("--metrics", c.metrics, "Write JSON Lines metrics to FILE (one object per evaluation)")->group(g_out);
  app.add_option("--trace", c.trace, "Record every applied gradient to FILE (JSON Lines)")->group(g_out);
  app.add_option("--replay", c.replay, "Re-apply a recorded trace and print the final parameters' checksum")->group(g_out);
  app.add_option("--progress", t.progress, "auto (live line on a terminal), plain or none")->capture_default_str()->group(g_out);
  // Settings in a file: CLI11's TOML reader; flags on the command line win.
  app.set_config("--config", "", "Read settings from a TOML FILE (key = value, keys the flags' names without --); "
                                 "flags given on the command line override it")
      ->group(g_out);
  app.allow_config_extras(CLI::config_extras_mode::error);  // a misspelt key is an error, not ignored
  app.add_flag("--print-config", t.print_config,
               "Print the complete effective settings as TOML (what --config reads) and exit")
      ->group(g_out);

}

void resolve_flags(const CLI::App& app, const CliText& t, TrainConfig& c) {
  // The text flags under their names.
  const std::string &time_budget = t.time_budget, &base_time = t.base_time, &variant = t.variant, &clock = t.clock,
                    &schedule = t.schedule, &adasync_rule = t.adasync_rule, &sqrt_rounding = t.sqrt_rounding,
                    &loss_estimate = t.loss_estimate, &lr_rule = t.lr_rule, &lr_schedule = t.lr_schedule,
                    &lr_milestones = t.lr_milestones, &lr_distance = t.lr_distance, &graph = t.graph,
                    &local_steps_dist = t.local_steps_dist, &swarm_mode = t.swarm_mode, &devices = t.devices,
                    &aggregate = t.aggregate, &on_nonfinite = t.on_nonfinite, &progress = t.progress,
                    &eval_every = t.eval_every, &checkpoint_every = t.checkpoint_every, &transport = t.transport,
                    &ps_time = t.ps_time, &schedule_every = t.schedule_every, &schedule_points = t.schedule_points,
                    &watchdog = t.watchdog, &inject = t.inject, &straggler = t.straggler, &slowdown = t.slowdown,
                    &seed = t.seed;
  const bool no_bias_correction = t.no_bias_correction, no_graphs = t.no_graphs, no_shm = t.no_shared_memory;
  // Given is given: an empty value is not "left out", and no number is infinite or NaN.
  for (const CLI::Option* o : app.get_options()) {
    if (o->count() == 0 || o->get_type_size_max() == 0) continue;
    for (const std::string& v : o->results()) {
      if (v.empty())
        throw UsageError(o->get_name() + ": expected a value, found '' (leave the flag out for its default)");
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (end != v.c_str() && *end == '\0' && !std::isfinite(d))
        throw UsageError(o->get_name() + ": expected a finite number, found '" + v + "'");
    }
  }
  for (const char* limit : {"--epochs", "--max-updates"})
    if (app.count(limit) > 0 && app[limit]->as<double>() == 0)
      throw UsageError(std::string(limit) + ": expected a positive limit, found 0 (leave the flag out for none; " +
                       "without any limit a run trains one epoch)");
  if (const CLI::Option* file = app.get_config_ptr(); file != nullptr && file->count() > 0)
    refuse_shared_paths({{"--metrics", c.metrics}, {"--trace", c.trace}, {"--save-model", c.save_model}},
                        {{"--config", file->as<std::string>()}});
  // Started by mpirun without --transport mpi, every process would run the
  // whole training and write the same outputs.
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const char* n = std::getenv(var);
    if (n != nullptr && std::atoi(n) > 1 && transport != "mpi")
      throw UsageError("--transport: this is one of " + std::string(n) + " processes started by mpirun (" + var +
                       "=" + n + "); without --transport mpi each would train the whole run and write the same " +
                       "outputs: add --transport mpi, or run the trainer without mpirun");
  }
  // CLI11 would read "-1" into an unsigned seed as 2^64 - 1.
  if (seed.empty() || seed.find_first_not_of("0123456789") != std::string::npos || seed.size() > 20)
    throw UsageError("--seed: expected a non-negative integer, found '" + seed + "'");
  try {
    c.seed = std::stoull(seed);
  } catch (const std::exception&) {
    throw UsageError("--seed: expected an integer below 2^64, found '" + seed + "'");
  }
  c.set_variant(variant);
  c.clock = parse_enum<ClockKind>(clock, "--clock");
  c.schedule = parse_enum<ScheduleKind>(schedule, "--schedule");
  c.adasync_rule = parse_enum<AdaRule>(adasync_rule, "--adasync-rule");
  if (t.k0 == "auto") {
    c.k0 = 0;
  } else {
    size_t used = 0;
    try {
      c.k0 = std::stoi(t.k0, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != t.k0.size()) throw UsageError("--k0: expected a start K or auto, found '" + t.k0 + "'");
  }
  c.sqrt_rounding = parse_enum<Rounding>(sqrt_rounding, "--sqrt-rounding");
  c.loss_estimate = parse_enum<LossEstimate>(loss_estimate, "--loss-estimate");
  c.lr_rule = parse_enum<LrKind>(lr_rule, "--lr-rule");
  c.lr_schedule = parse_enum<LrSchedule>(lr_schedule, "--lr-schedule");
  c.lr_milestones.clear();
  if (!lr_milestones.empty()) {
    size_t at = 0;
    while (at <= lr_milestones.size()) {
      const size_t comma = std::min(lr_milestones.find(',', at), lr_milestones.size());
      const std::string item = lr_milestones.substr(at, comma - at);
      size_t used = 0;
      double v = NAN;
      try {
        v = std::stod(item, &used);
      } catch (const std::exception&) {
      }
      if (item.empty() || used != item.size() || !std::isfinite(v))
        throw UsageError("--lr-milestones: expected epochs separated by commas (e.g. 100,150), found '" + item + "'");
      c.lr_milestones.push_back(v);
      at = comma + 1;
    }
  }
  c.lr_distance = parse_enum<DistanceKind>(lr_distance, "--lr-distance");
  c.graph = parse_enum<GraphKind>(graph, "--graph");
  c.local_steps_dist = parse_enum<StepsDist>(local_steps_dist, "--local-steps-dist");
  c.swarm_mode = parse_enum<SwarmMode>(swarm_mode, "--swarm-mode");
  c.devices = parse_enum<Devices>(devices, "--devices");
  c.aggregate = parse_enum<Aggregate>(aggregate, "--aggregate");
  c.transport = parse_enum<TransportKind>(transport, "--transport");
  c.on_nonfinite = parse_enum<OnNonfinite>(on_nonfinite, "--on-nonfinite");
  c.progress = parse_enum<Progress>(progress, "--progress");
  c.eval_every = Cadence::parse(eval_every, "--eval-every");
  c.checkpoint_every = Cadence::parse(checkpoint_every, "--checkpoint-every");
  c.opt.bias_correction = !no_bias_correction;
  c.cuda_graphs = !no_graphs;
  c.shared_memory = !no_shm;
  c.opt.name = parse_enum<OptimizerKind>(t.optimizer, "--optimizer");  // momentum: sgd
  if (!time_budget.empty()) c.time_budget = parse_seconds(time_budget, "--time-budget");
  if (!base_time.empty()) c.base_time = parse_seconds(base_time, "--base-time");
  if (!ps_time.empty()) c.ps_time = parse_seconds(ps_time, "--ps-time");
  if (!schedule_every.empty()) c.schedule_every = parse_seconds(schedule_every, "--schedule-every");
  if (!schedule_points.empty()) c.schedule_points = SchedulePoints::parse(schedule_points, "--schedule-points");
  c.inject.faults = parse_faults(inject, "--inject");
  c.straggler = StragglerFlag(parse_straggler(straggler, "--straggler"));
  if (!slowdown.empty()) c.slowdown = SlowdownFlag(parse_slowdown(slowdown, "--slowdown"), slowdown);
  if (!watchdog.empty()) {
    c.watchdog = parse_seconds(watchdog, "--watchdog");
    if (!(c.watchdog > 0))
      throw UsageError("--watchdog: expected a positive duration such as 30s (leave the flag out for none), found " +
                       watchdog);
  }
  // The flags given besides `allowed`, as "--a, --b".
  auto given_besides = [&app](std::initializer_list<const char*> allowed) {
    std::string given;
    for (const CLI::Option* o : app.get_options()) {
      if (o->count() == 0 || o->get_name() == "--config") continue;
      bool ok = false;
      for (const char* a : allowed) ok |= o->get_name() == a;
      if (!ok) given += (given.empty() ? "" : ", ") + o->get_name();
    }
    return given;
  };
  if (!c.replay.empty()) {
    // A replay takes every setting from the trace's header.
    const std::string given =
        given_besides({"--replay", "--progress", "--threads", "--devices", "--deterministic", "--no-cuda-graphs"});
    if (!given.empty())
      throw UsageError("--replay takes its settings from the trace's header; these would be ignored: " + given +
                       " (only --progress, --threads, --devices, --deterministic and --no-cuda-graphs apply)");
  }
  if (app.count("--k") > 0 && c.k != 1 && (c.swarm || !has_k(c.variant)))
    std::fprintf(stderr, "note: --k %d is ignored: %s\n", c.k,
                 c.swarm ? "--variant swarm has no K"
                 : c.variant == Variant::Sync ? "sync waits for every worker (K = P)"
                                              : "async applies each gradient (K = 1)");
  if (const unsigned hw = std::thread::hardware_concurrency(); hw > 0 && c.threads > int(2 * hw))
    std::fprintf(stderr, "note: --threads %d on %u hardware threads: the threads take turns, which is slower than %u\n",
                 c.threads, hw, hw);
  if (!c.export_from.empty()) {
    if (c.save_model.empty())
      throw UsageError("--export " + c.export_from + ": expected --save-model FILE.safetensors to write to");
    if (const std::string given = given_besides({"--export", "--save-model", "--progress"}); !given.empty())
      throw UsageError("--export takes the model, the dataset and the settings from the checkpoint; these would be "
                       "ignored: " + given + " (only --save-model and --progress apply)");
    check_output(c.save_model, "--save-model");
    refuse_shared_paths({{"--save-model", c.save_model}}, {{"--export", c.export_from}});
  }
}

}  // namespace adasync
