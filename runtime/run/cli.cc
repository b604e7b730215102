// Command-line interface of the trainer (CLI11, GNU-style flags).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "models/model.h"
#include "runtime/config/cli_flags.h"
#include "runtime/output.h"
#include "runtime/run/model_io.h"
#include "runtime/run/supervisor.h"
#include "runtime/run/trace.h"
#include "runtime/run/trainer.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

namespace {
// The end of a run as the terminal shows it (the metrics hold the same).
void print_summary(const TrainConfig& c, const RunSummary& s) {
  if (!c.replay.empty()) {
    std::printf("replayed %lld updates: test accuracy %.2f%%, test loss %.4f\n", static_cast<long long>(s.updates),
                100 * s.final_eval.accuracy, s.final_eval.loss);
  } else {
    const double stale = s.stats.counted ? s.stats.staleness_sum / double(s.stats.counted) : 0;
    std::printf(
        "done: %lld updates, %lld samples in %.2f s %s(%.0f samples/s; %.0f after the first update; wall %.2f s)\n",
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
    std::printf(
        "staleness mean %.2f max %lld; dropped %lld (stale %lld, over bound %lld, non-finite %lld); cancelled %lld\n",
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

// SIGINT / SIGTERM: stop at the next update, checkpoint, exit 0; a second
// signal ends the process at once. A write past RLIMIT_FSIZE fails with EFBIG
// and is reported like a full disk, instead of the signal ending the process.
void install_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = [](int sig) {
    if (stop_signal() != 0) _exit(128 + sig);
    request_stop(sig);
  };
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::signal(SIGXFSZ, SIG_IGN);
}
}  // namespace

int trainer_main(int argc, char** argv) {
  TrainConfig c;
  CLI::App app{
      "adasync trainer: asynchronous multi-worker SGD with a parameter server (sync, k-sync, k-batch-sync,\n"
      "async, k-async, k-batch-async), on CUDA GPUs or CPU workers, with a real or a virtual clock.\n"
      "With no flags it trains the cnn on Fashion-MNIST for one epoch."};
  CliText t;
  add_trainer_flags(app, c, t);
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

  if (t.print_config) {
    // CLI11's TOML of every option, less the ones without a value (their
    // defaults depend on other settings) and the two that handle the file.
    std::istringstream all(app.config_to_str(true, false));
    for (std::string line; std::getline(all, line);) {
      const size_t eq = line.find('=');
      const std::string key = line.substr(0, eq);
      if (eq == std::string::npos || line.substr(eq + 1) == "\"\"" || key == "print-config" || key == "config")
        continue;
      std::printf("%s\n", line.c_str());
    }
    return 0;
  }

  try {
    resolve_flags(app, t, c);
    if (!c.export_from.empty()) {
      std::printf("%s\n", export_checkpoint(c.export_from, c.save_model).c_str());
      return 0;
    }
    install_signal_handlers();
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
    if (c.progress != Progress::None || !c.replay.empty()) print_summary(c, s);
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
