// The trainer's flags (CLI11), defined once: each is bound to its
// TrainConfig field or, where it is read as text and resolved after parsing
// (names of enums, durations such as 30s, the seed), to a CliText field.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "runtime/config/config.h"

namespace adasync {

struct CliText {
  std::string time_budget, base_time;
  std::string variant = "sync", clock = "real", schedule = "fixed", adasync_rule = "auto", sqrt_rounding = "ceil",
              loss_estimate = "window", lr_rule = "const", lr_schedule = "const", lr_milestones, lr_distance = "sketch", graph = "complete",
              local_steps_dist = "fixed", swarm_mode = "blocking", devices = "auto", aggregate = "auto",
              on_nonfinite = "drop", progress = "auto", eval_every = "200", checkpoint_every = "0",
              transport = "local", optimizer = "sgd";
  bool no_bias_correction = false;
  std::string ps_time;
  std::string schedule_every, schedule_points;
  bool no_graphs = false;
  bool no_shared_memory = false;
  std::string watchdog, inject, straggler = "none", slowdown;
  std::string k0 = "auto";
  std::string seed;  // the default: TrainConfig's, set by add_trainer_flags
  bool print_config = false;
};

// Adds every flag of `trainer` to `app`, in its help groups; CliText's
// fields hold the text flags until resolve_flags.
void add_trainer_flags(CLI::App& app, TrainConfig& c, CliText& t);

// After app.parse: the text flags into `c` (enums, durations, the seed, the
// faults, the straggler model), and what only the command line can check (a
// value given empty, a non-finite number, a zero limit, --config beside an
// output, mpirun without --transport mpi, flags --replay or --export would
// ignore): UsageError naming the flag. Notes (an ignored --k, more threads
// than cores) go to stderr.
void resolve_flags(const CLI::App& app, const CliText& t, TrainConfig& c);

}  // namespace adasync
