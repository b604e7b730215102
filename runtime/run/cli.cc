// Command-line interface of the trainer (CLI11, GNU-style flags).
#include <CLI/CLI.hpp>

#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstdio>

#include <unistd.h>

#include <sstream>
#include <thread>

#include "models/model.h"
#include "runtime/config/cli_flags.h"
#include "runtime/run/model_io.h"
#include "runtime/output.h"
#include "runtime/run/supervisor.h"
#include "runtime/run/trace.h"
#include "runtime/run/trainer.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

int trainer_main(int argc, char** argv) {
  TrainConfig c;
  CLI::App app{
      "adasync trainer: asynchronous multi-worker SGD with a parameter server (sync, k-sync, k-batch-sync,\n"
      "async, k-async, k-batch-async), on CUDA GPUs or CPU workers, with a real or a virtual clock.\n"
      "With no flags it trains the cnn on Fashion-MNIST for one epoch."};
  CliText t;
  add_trainer_flags(app, c, t);
  // The text flags under their names, resolved below.
  std::string &time_budget = t.time_budget, &base_time = t.base_time, &variant = t.variant, &clock = t.clock,
              &schedule = t.schedule, &adasync_rule = t.adasync_rule, &sqrt_rounding = t.sqrt_rounding,
              &loss_estimate = t.loss_estimate, &lr_rule = t.lr_rule, &lr_schedule = t.lr_schedule,
              &lr_milestones = t.lr_milestones, &lr_distance = t.lr_distance, &graph = t.graph,
              &local_steps_dist = t.local_steps_dist, &swarm_mode = t.swarm_mode, &devices = t.devices,
              &aggregate = t.aggregate, &on_nonfinite = t.on_nonfinite, &progress = t.progress,
              &eval_every = t.eval_every, &checkpoint_every = t.checkpoint_every, &transport = t.transport,
              &ps_time = t.ps_time, &schedule_every = t.schedule_every, &schedule_points = t.schedule_points,
              &watchdog = t.watchdog, &inject = t.inject, &straggler = t.straggler, &slowdown = t.slowdown,
              &seed = t.seed;
  bool &no_bias_correction = t.no_bias_correction, &no_graphs = t.no_graphs, &print_config = t.print_config;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ConfigError& e) {
    std::string what = e.what();
    const std::string extra = "INI was not able to parse ";
    if (what.rfind(extra, 0) == 0) what = "unknown setting '" + what.substr(extra.size()) + "'";
    const CLI::Option* file = app.get_config_ptr();
    std::fprintf(stderr,
                 "trainer: --config %s: %s\n(keys are the flags' names without --; trainer --print-config writes "
                 "them all)\n",
                 file != nullptr && file->count() > 0 ? file->as<std::string>().c_str() : "", what.c_str());
    return 2;
  } catch (const CLI::Error& e) {
    std::fprintf(stderr, "trainer: %s\n(run trainer --help for the flags)\n", e.what());
    return 2;
  }

  if (print_config) {
    // CLI11's TOML of every option, less the ones without a value (their
    // defaults depend on other settings) and the two that handle the file.
    std::istringstream all(app.config_to_str(true, false));
    for (std::string line; std::getline(all, line);) {
      const size_t eq = line.find('=');
      const std::string key = line.substr(0, eq);
      if (eq == std::string::npos || line.substr(eq + 1) == "\"\"" || key == "print-config" || key == "config") continue;
      std::printf("%s\n", line.c_str());
    }
    return 0;
  }

  try {
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
      std::printf("%s\n", export_checkpoint(c.export_from, c.save_model).c_str());
      return 0;
    }
    // SIGINT / SIGTERM: stop at the next update, checkpoint, exit 0; a second
    // signal ends the process at once.
    struct sigaction sa {};
    sa.sa_handler = [](int sig) {
      if (stop_signal() != 0) _exit(128 + sig);
      request_stop(sig);
    };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    // A write past RLIMIT_FSIZE fails with EFBIG and is reported like a full
    // disk, instead of the signal ending the process.
    std::signal(SIGXFSZ, SIG_IGN);
    std::unique_ptr<MpiWorld> mpi;
    if (c.transport == TransportKind::Mpi) {
      mpi = start_mpi(c, argc, argv);
      if (mpi == nullptr) return 2;  // rank 0 said why
      if (mpi->rank() != 0) return run_worker_rank(c, *mpi);
    }
    // Worker ranks wait for rank 0's word whatever happens here.
    struct StopWorkers {
      MpiWorld* mpi;
      ~StopWorkers() {
        if (mpi == nullptr) return;
        try {
          mpi->stop_workers();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "trainer: could not stop the worker ranks: %s\n", e.what());
          mpi->unclean = true;  // MPI_Abort ends them
        }
      }
    } stop_workers{mpi.get()};
    Trainer trainer(c);
    trainer.set_mpi(mpi.get());
    const RunSummary s = trainer.run();
    if (c.progress != Progress::None || !c.replay.empty()) {
      if (!c.replay.empty()) {
        std::printf("replayed %lld updates: test accuracy %.2f%%, test loss %.4f\n", static_cast<long long>(s.updates),
                    100 * s.final_eval.accuracy, s.final_eval.loss);
      } else {
        const double stale = s.stats.counted ? s.stats.staleness_sum / double(s.stats.counted) : 0;
        std::printf("done: %lld updates, %lld samples in %.2f s %s(%.0f samples/s; %.0f after the first update; wall %.2f s)\n",
                    static_cast<long long>(s.updates), static_cast<long long>(s.samples), s.time,
                    c.clock == ClockKind::Virtual ? "virtual " : "", s.time > 0 ? double(s.samples) / s.time : 0.0,
                    s.steady_samples_per_s, s.wall);
        std::printf("test accuracy %.2f%%, test loss %.4f\n", 100 * s.final_eval.accuracy, s.final_eval.loss);
        if (c.target_accuracy > 0) {
          if (s.target_time >= 0)
            std::printf("reached %.2f%% test accuracy at %.2f s%s\n", 100 * c.target_accuracy, s.target_time,
                        c.clock == ClockKind::Virtual ? " (virtual)" : "");
          else
            std::printf("did not reach %.2f%% test accuracy\n", 100 * c.target_accuracy);
        }
        std::printf("staleness mean %.2f max %lld; dropped %lld (stale %lld, over bound %lld, non-finite %lld); cancelled %lld\n",
                    stale, static_cast<long long>(s.stats.staleness_max), static_cast<long long>(s.stats.dropped()),
                    static_cast<long long>(s.stats.dropped_stale), static_cast<long long>(s.stats.dropped_bound),
                    static_cast<long long>(s.stats.dropped_nonfinite), static_cast<long long>(s.stats.cancelled));
      }
      std::printf("params checksum %s\n", checksum_hex(s.checksum).c_str());
      if (!s.stop_reason.empty() && c.replay.empty()) std::printf("stop reason: %s\n", s.stop_reason.c_str());
      if (!s.failed_workers.empty()) {
        std::printf("failed workers:");
        for (int w : s.failed_workers) std::printf(" %d", w);
        std::printf("\n");
      }
      if (!s.lost_ranks.empty()) {
        std::printf("lost worker ranks:");
        for (int r : s.lost_ranks) std::printf(" %d", r);
        std::printf("\n");
      }
      if (s.watchdog_alarms > 0) std::printf("watchdog alarms: %lld\n", static_cast<long long>(s.watchdog_alarms));
      if (!s.last_checkpoint.empty()) std::printf("checkpoint: %s\n", s.last_checkpoint.c_str());
      if (!s.saved_model.empty()) std::printf("model: %s\n", s.saved_model.c_str());
    }
    if (s.interrupted)
      std::printf("stopped by %s after update %lld%s\n", stop_signal() == SIGTERM ? "SIGTERM" : "SIGINT",
                  static_cast<long long>(s.updates), s.last_checkpoint.empty() ? "" : "; resume with --resume");
    if (profiling_enabled()) {
      std::printf("\nhost time per range (ADASYNC_PROFILE=1):\n%-28s %10s %12s %10s\n", "range", "calls", "total s",
                  "mean ms");
      for (const auto& r : range_totals())
        std::printf("%-28s %10lld %12.3f %10.3f\n", r.name.c_str(), static_cast<long long>(r.calls), r.seconds,
                    1e3 * r.seconds / double(r.calls));
    }
    if (!s.error.empty()) {
      std::fprintf(stderr, "trainer: stopped: %s\n", s.error.c_str());
      return 1;
    }
    return 0;
  } catch (const Error& e) {  // each says its exit code
    std::fprintf(stderr, "trainer: %s%s\n", e.exit_code() == 1 ? "error: " : "", e.what());
    return e.exit_code();
  } catch (const DataError& e) {  // (datasets/ stands alone: its error is not an Error)
    std::fprintf(stderr, "trainer: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trainer: internal error: %s\n", e.what());
    return 1;
  }
}

}  // namespace adasync
