// Trainer: sets a run up (data, replicas, parameter server, update loop,
// supervisor, reporter), picks its mode (ps, device sync, swarm, replay),
// runs it and sums it up. cli.cc maps flags onto TrainConfig; tests construct
// it directly.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "runtime/run/run.h"

namespace adasync {

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
  std::string stop_reason;    // budget, updates, epochs, target, signal, error, end
  bool interrupted = false;   // stopped by SIGINT or SIGTERM
  std::string last_checkpoint;
  std::string saved_model;    // --save-model's file, once written
  std::vector<int> failed_workers;
  std::vector<int> lost_ranks;  // --transport mpi: worker ranks that never confirmed the stop
  int64_t watchdog_alarms = 0;
  // SwarmSGD
  int64_t bytes_sent = 0, bytes_per_worker_max = 0, out_of_range = 0, interactions = 0;
  int64_t fallback_blocks = 0, fallback_bytes = 0;  // SwarmSGD: blocks sent again at full precision, with their NACKs
  double consensus = 0;
};

class Trainer {
 public:
  // `data` may be given (tests); otherwise it is loaded from the config.
  explicit Trainer(TrainConfig cfg, std::shared_ptr<const DataSplit> data = nullptr);
  ~Trainer();

  RunSummary run();
  const TrainConfig& config() const { return run_.cfg; }
  std::string device_description() const;
  // --transport mpi on rank 0 (the world outlives the trainer).
  void set_mpi(MpiWorld* mpi) { run_.mpi = mpi; }

 private:
  void setup();
  RunSummary train();
  RunSummary finish(double end);

  Run run_;
};

// The trainer binary's main: parses flags (CLI11), runs, prints the summary.
// Returns the process exit code (2 for bad flags or input).
int trainer_main(int argc, char** argv);

}  // namespace adasync
