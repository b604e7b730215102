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
  std::string watchdog, inject, straggler = "none", slowdown;
  std::string k0 = "auto";
  std::string seed;  // the default: TrainConfig's, set by add_trainer_flags
  bool print_config = false;
};

// Adds every flag of `trainer` to `app`, in its help groups; CliText's
// fields hold the text flags until trainer_main resolves them.
void add_trainer_flags(CLI::App& app, TrainConfig& c, CliText& t);

}  // namespace adasync
