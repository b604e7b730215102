#include "runtime/run/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "kernels/cpu/ops_cpu.h"
#include "kernels/cpu/simd.h"
#include "runtime/run/model_io.h"
#include "runtime/run/state.h"
#include "runtime/run/trace.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

namespace {
// What decides the bits of a computation: the backend and, on the CPU, its kernel path.
std::string kernels_description(const Run& r) {
  return r.use_cuda ? std::string("cuda")
                    : std::string("cpu ") + cpu::cpu_path_name(cpu::cpu_path()) + ", OpenBLAS " + cpu::blas_core();
}

// A fresh run's checkpoint directory: refused (naming the newest checkpoint
// and the choices) when it holds checkpoints, unless --overwrite, which
// deletes them (valid ones only: foreign files stay).
void take_over_checkpoints(const std::string& dir, bool overwrite, bool say) {
  const auto valid = list_valid_checkpoints(dir);
  if (valid.empty()) return;
  if (!overwrite)
    throw UsageError("--checkpoint-dir " + dir + ": holds " + std::to_string(valid.size()) +
                     " checkpoint(s) of another run (the newest " + valid.front().second +
                     "); continue it with --resume, delete them with --overwrite, or choose another directory");
  for (const auto& [v, f] : valid) {
    std::error_code ec;
    if (!std::filesystem::remove(f, ec) || ec)
      throw UsageError("--overwrite: cannot delete " + f + ": " + (ec ? ec.message() : std::string("not removed")));
  }
  if (say) std::printf("note: --overwrite: deleted %zu checkpoint(s) of another run from %s\n", valid.size(), dir.c_str());
}

// CPU threads: several concurrent real-time workers each compute serially;
// otherwise the one computing replica gets every thread.
bool parallel_cpu_workers(const Run& r) {
  return !r.use_cuda && !r.virtual_clock && r.cfg.workers > 1 && r.mpi == nullptr;
}

// The checkpoint directory is this run's alone, before anything is read or
// written there.
void claim_checkpoint_dir(Run& r) {
  const TrainConfig& c = r.cfg;
  if (!c.checkpoint_dir.empty()) {
    r.dir_lock = DirLock::acquire(c.checkpoint_dir, "--checkpoint-dir");
    // A run killed mid-write leaves its temporary; nobody else writes here now.
    if (const int n = remove_stale_temporaries(c.checkpoint_dir, "--checkpoint-dir"); n > 0 && c.progress != Progress::None)
      std::printf("note: removed %d unfinished checkpoint file(s) from %s\n", n, c.checkpoint_dir.c_str());
    // A fresh run owns its directory: another run's checkpoints would be
    // pruned by it, and a later --resume would continue the wrong run.
    if (!c.resume) take_over_checkpoints(c.checkpoint_dir, c.overwrite, c.progress != Progress::None);
  }
}

// CPU or GPUs, the threads and pools, and whether the GPUs apply the update
// themselves (device sync).
void choose_devices(Run& r) {
  TrainConfig& c = r.cfg;
  cpu::cpu_path();  // a bad ADASYNC_CPU_PATH is a usage error now, not a failed worker later
  r.virtual_clock = c.clock == ClockKind::Virtual;
  r.threads = c.threads > 0 ? c.threads : int(std::max(1u, std::thread::hardware_concurrency()));
  const int gpus = cuda_device_count();
  if (c.devices == Devices::Cuda) {
    if (gpus == 0) throw UsageError("--devices cuda: no usable GPU: " + cuda_unavailable_reason());
    r.use_cuda = true;
  } else if (c.devices == Devices::Auto) {
    r.use_cuda = gpus > 0;
    if (!r.use_cuda && c.progress != Progress::None)
      std::printf("note: no GPU (%s); training on CPU workers\n", cuda_unavailable_reason().c_str());
  }
  const int P = c.workers;
  if (c.aggregate == Aggregate::Device && r.use_cuda && P > gpus)
    throw UsageError("--aggregate device needs one GPU per worker: " + std::to_string(P) + " workers, " +
                     std::to_string(gpus) + " GPU(s)");
  if (c.swarm) c.shard = true;  // each SwarmSGD node samples its own shard
  r.device_sync = !c.swarm && r.use_cuda && !r.virtual_clock && r.mpi == nullptr && c.variant == Variant::Sync &&
                  P <= gpus &&
                  (c.aggregate == Aggregate::Device ||
                   (c.aggregate == Aggregate::Auto && c.opt.name == OptimizerKind::Sgd &&
                    c.trace.empty() && c.inject.empty() && !(c.watchdog > 0)));  // faults: the host PS
  const bool parallel_workers = parallel_cpu_workers(r);
  // More CPU workers than threads take turns: arrival order, and so staleness,
  // then follows the OS scheduler (round-robin gives every gradient staleness
  // P - 1) rather than the workers' compute times.
  if (parallel_workers && P > r.threads)
    std::fprintf(stderr,
                 "warning: %d CPU workers on %d thread(s) with the real clock: workers take turns, so staleness "
                 "follows the OS scheduler (up to %d); use --clock virtual, fewer --workers, or --straggler delays "
                 "well above a gradient's compute time\n",
                 P, r.threads, P - 1);
  r.compute_pool = std::make_unique<ThreadPool>(parallel_workers ? 1 : r.threads);
  r.apply_pool = std::make_unique<ThreadPool>(r.threads);
}

// The virtual clock computes every gradient on one replica; over MPI the
// replicas live on the worker ranks (rank 0's one gives the initial parameters).
void build_replicas(Run& r) {
  const TrainConfig& c = r.cfg;
  const DataSplit& d = *r.data;
  const int P = c.workers;
  const bool parallel_workers = parallel_cpu_workers(r);
  const int gpus = r.use_cuda ? cuda_device_count() : 0;
  const int replicas = r.virtual_clock || r.mpi != nullptr ? 1 : P;
  for (int w = 0; w < replicas; ++w) {
    if (r.use_cuda) {
      r.contexts.push_back(Context::cuda(w % gpus, "w" + std::to_string(w)));
      r.contexts.back()->deterministic = c.deterministic;
      r.contexts.back()->use_graphs = c.cuda_graphs;
    } else {
      r.contexts.push_back(Context::cpu(parallel_workers ? nullptr : r.compute_pool.get()));
    }
    r.replicas.push_back(std::make_unique<ModelWorker>(w, *r.contexts.back(), c.model, d.train, c.batch));
    r.replicas.back()->set_augmentation(make_augmentation(c, d));
  }
  r.eval_ctx = r.use_cuda ? Context::cuda(0, "eval") : Context::cpu(r.compute_pool.get());
  r.evaluator = std::make_unique<Evaluator>(*r.eval_ctx, c.model, d.test);
}

// The policy's settings: K's schedule, the learning-rate rule, the noise
// measurements and the guard; with a sampled loss estimate, its evaluator.
PolicyConfig policy_config(Run& r) {
  const TrainConfig& c = r.cfg;
  const DataSplit& d = *r.data;
  const int P = c.workers;
  PolicyConfig pc;
  ScheduleConfig& sc = pc.schedule;
  sc.kind = c.swarm ? ScheduleKind::Fixed : c.schedule;
  sc.workers = P;
  sc.k = c.schedule == ScheduleKind::AdaSync ? c.k0 : r.agg->k();
  sc.rule = c.adasync_rule != AdaRule::Auto ? c.adasync_rule : default_ada_rule(c.variant);
  sc.interval = c.schedule_every > 0 ? c.schedule_every : default_decision_interval(sc.rule, c.time_budget);
  sc.round_nearest = c.sqrt_rounding == Rounding::Round;
  sc.plateau_z = c.plateau_z;
  sc.stable_theta = c.k0_theta;
  sc.plateau_updates = c.plateau_updates;
  sc.budget = c.time_budget;
  sc.plateau_horizon = c.plateau_horizon;
  sc.points = c.schedule_points.points;
  sc.batch = c.batch;
  sc.stale = !is_synchronous(c.variant);
  pc.lr.rule = c.lr_rule;
  pc.lr.lr = c.lr;
  pc.lr.c = c.lr_c;
  pc.lr.distance = c.lr_distance;
  pc.lr.schedule = c.lr_schedule;
  pc.lr.milestones = c.lr_milestones;
  pc.lr.gamma = c.lr_gamma;
  pc.lr.total_epochs = c.epochs;
  pc.lr.warmup = c.lr_warmup;
  pc.lr.grads_per_epoch = double(d.train.size()) / double(c.batch);
  pc.workers = P;
  pc.measure_noise = c.schedule == ScheduleKind::AdaSync && !c.swarm;
  pc.guard = c.schedule == ScheduleKind::AdaSync && !c.swarm && !is_synchronous(c.variant);
  pc.batch = c.batch;
  pc.pool = r.apply_pool.get();
  pc.momentum = c.opt.momentum;
  pc.window_estimate = !(c.schedule == ScheduleKind::AdaSync && c.loss_estimate == LossEstimate::Sample);
  if (!pc.window_estimate) {
    // A fixed sample of the training set, evaluated on its own context.
    r.loss_sample_set = training_sample(d.train, c.loss_sample, c.seed ^ 0x5a5a);
    r.sample_ctx = r.use_cuda ? Context::cuda(0, "schedule") : Context::cpu(r.compute_pool.get());
    r.sample_eval = std::make_unique<Evaluator>(*r.sample_ctx, c.model, *r.loss_sample_set);
    pc.sample_loss = [&r](const Snapshot& s) { return r.sample_eval->evaluate(s.data).loss; };
  }
  return pc;
}

// The supervisor's actions go through the algorithm, whichever it is.
SupervisorActions supervisor_actions(Run& r) {
  SupervisorActions act;
  act.evaluate = [&r](double now) {
    nlohmann::json extra = nlohmann::json::object();
    const SnapshotPtr p = r.algorithm->publish(&extra);
    return r.evaluate(p, now, false, extra);
  };
  act.evaluate_at = [&r](const SnapshotPtr& s, double now, int64_t samples) { return r.evaluate_at(s, now, samples); };
  act.capture = [&r](double now, const VirtualState* vs, const SnapshotPtr& p) { return capture_state(r, now, vs, p); };
  act.save = [&r](Checkpoint ck, const SnapshotPtr& p, const std::vector<SnapshotPtr>& f, double now) {
    return save_state(r, std::move(ck), p, f, now);
  };
  act.params = [&r] { return r.algorithm->publish(nullptr); };
  return act;
}

// The metrics' start record and the trace's header.
void open_outputs(Run& r, size_t n) {
  const TrainConfig& c = r.cfg;
  nlohmann::json start = run_identity(r);
  start["event"] = "start";
  start["run_id"] = r.run_id;
  start["params"] = n;
  if (c.resume) start["resumed_from"] = r.supervisor->last_checkpoint(), start["resumed_version"] = r.ps->version();
  nlohmann::json trace_header = run_identity(r);
  trace_header["trace"] = kTraceFormat;
  if (!c.init_from.empty()) trace_header["init_from"] = c.init_from;  // the replay starts there too
  if (c.augment) trace_header["augment"] = true;                     // the replay crops and flips again
  if (c.opt.no_decay_bn) trace_header["no_decay_bn"] = true;
  trace_header["kernels"] = kernels_description(r);  // a replay reproduces the bits on the same kernels
  r.reporter->open(start, trace_header, r.resume_time);
}

}  // namespace

Trainer::Trainer(TrainConfig cfg, std::shared_ptr<const DataSplit> data) {
  validate(cfg);
  run_.cfg = std::move(cfg);
  run_.data = std::move(data);
  TrainConfig& c = run_.cfg;
  c.opt.momentum = c.momentum >= 0 ? c.momentum : (!c.swarm && is_synchronous(c.variant) ? 0.9 : 0.0);
}

Trainer::~Trainer() = default;

std::string Trainer::device_description() const {
  if (run_.mpi != nullptr && run_.cfg.swarm)
    return "MPI: SwarmSGD nodes on " + std::to_string(run_.mpi->worker_ranks()) + " rank(s), rank 0 (" +
           run_.mpi->host() + ") counting and evaluating";
  if (run_.mpi != nullptr)
    return "MPI: parameter server on rank 0 (" + run_.mpi->host() + "), workers on " +
           std::to_string(run_.mpi->worker_ranks()) + " rank(s)";
  if (!run_.use_cuda) return "cpu (" + std::to_string(run_.threads) + " threads, " + cpu::cpu_kernel_path_summary() + ")";
  return "cuda (" + std::to_string(cuda_device_count()) + " device(s), " +
         (run_.device_sync ? "update on the GPUs" : "host parameter server") + ")";
}

void Trainer::setup() {
  Run& r = run_;
  TrainConfig& c = r.cfg;
  if (!r.data) r.data = std::make_shared<const DataSplit>(load_dataset(c.dataset, c.data_dir, c.seed));
  const DataSplit& d = *r.data;
  EXPECTS(d.train.size() > 0 && d.test.size() > 0, "empty dataset");
  if (size_t(c.batch) > d.train.size() / size_t(c.shard ? c.workers : 1))
    throw UsageError("--batch: " + std::to_string(c.batch) + " is larger than a worker's share of the " +
                     std::to_string(d.train.size()) + " training samples");
  claim_checkpoint_dir(r);
  r.run_id = new_run_id();  // a resume adopts its checkpoint's
  choose_devices(r);
  const int P = c.workers;
  build_replicas(r);
  const size_t n = r.replicas[0]->num_params();
  std::vector<float> init(n);
  r.replicas[0]->model().init_params(init.data(), c.seed);
  if (!c.init_from.empty()) init = load_model_file(c.init_from, c.model, d);
  r.ps = std::make_unique<ParamServer>(n, init.data(), std::make_unique<HostOptimizer>(c.opt, n, r.apply_pool.get()),
                                       2 * P);
  r.ps->optimizer().set_layout(r.replicas[0]->model().layout());
  AggregatorConfig ac;
  ac.variant = c.variant;
  ac.workers = P;
  ac.k = c.k;
  ac.max_staleness = c.max_staleness;
  r.agg = std::make_unique<Aggregator>(ac, *r.ps);

  const PolicyConfig pc = policy_config(r);
  r.policy = std::make_unique<Policy>(pc, n, c.seed, *r.ps->latest());
  if (c.schedule != ScheduleKind::Fixed && !c.swarm) r.agg->set_k(r.policy->schedule().initial_k());
  r.loop = std::make_unique<UpdateLoop>(*r.ps, *r.agg, *r.policy);

  r.straggler = std::make_unique<Straggler>(c.straggler.spec, c.slowdown.factors, P, c.seed);
  if (c.swarm && r.virtual_clock && r.straggler->spec().mean() == 0) {
    // SwarmSGD's virtual clock needs positive times: each step takes --base-time (1 ms by default).
    StragglerSpec fixed;
    fixed.kind = StragglerSpec::Kind::Const;
    fixed.a = c.base_time > 0 ? c.base_time : 1e-3;
    r.straggler = std::make_unique<Straggler>(fixed, std::vector<double>{}, P, c.seed);
  }
  for (int w = 0; w < P; ++w) r.samplers.push_back(make_sampler(c, d.train.size(), w));
  double epochs = c.epochs;
  if (epochs == 0 && c.max_updates == 0 && c.time_budget == 0) epochs = 1;
  r.max_samples = epochs > 0 ? int64_t(std::ceil(epochs * double(d.train.size()))) : 0;
  r.faults = FaultPlan(c.inject.faults);
  r.positions = std::make_unique<std::vector<std::atomic<uint64_t>>>(size_t(P));

  r.reporter = std::make_unique<Reporter>(c, &r.wall);
  r.reporter->set_sample_limit(r.max_samples);
  SupervisorActions act = supervisor_actions(r);
  r.supervisor = std::make_unique<Supervisor>(c, *r.reporter, r.max_samples, std::move(act));
  r.reporter->on_output_error([&r](const std::string& e) { r.supervisor->fail(e); });
  r.loop->observe(r.reporter.get());
  r.loop->observe(r.supervisor.get());
  r.reporter->set_stats(r.agg->stats(), r.agg->k());
  register_state(r);
  if (c.resume) restore_state(r);
  // Set up on the restored state (parameters, counters, SwarmSGD's nodes).
  r.algorithm = r.device_sync ? make_device_sync(r) : c.swarm ? make_swarm(r) : make_ps(r);
  r.supervisor->start_at(r.ps->version(), r.agg->stats().counted, r.resume_time);

  open_outputs(r, n);
}

RunSummary Trainer::run() {
  RunSummary s = train();
  if (!run_.cfg.save_model.empty()) {
    const TrainConfig& c = run_.cfg;
    save_model_file(c.save_model, c.model, c.dataset, *run_.data, s.params, run_settings(run_), s.updates);
    s.saved_model = c.save_model;
  }
  if (!run_.output_error.empty()) throw OutputError(run_.output_error);
  return s;
}

RunSummary Trainer::train() {
  Run& r = run_;
  TrainConfig& c = r.cfg;
  if (!c.replay.empty()) {
    const Trace t = read_trace(c.replay);
    replay_config(t, c.replay, &c);
    validate(c);  // the header's settings get the flags' checks
    setup();
    RunSummary sum;
    sum.updates = replay_trace(r, t);
    SnapshotPtr last = r.ps->latest();
    sum.final_eval = r.evaluator->evaluate(last->data, 0);
    sum.params.assign(last->data, last->data + last->size);
    sum.checksum = checksum(last->data, last->size);
    sum.wall = r.wall.seconds();
    sum.k = 1;
    // The trace's end record holds the recorded run's final checksum.
    const bool same_kernels = t.header.value("kernels", std::string()) == kernels_description(r);
    if (!t.checksum.empty() && t.checksum != checksum_hex(sum.checksum)) {
      const std::string what = "the replay of " + c.replay + " ends at parameters of checksum " +
                               checksum_hex(sum.checksum) + " after " + std::to_string(sum.updates) +
                               " updates; the recorded run ended at " + t.checksum;
      if (same_kernels)
        sum.error = what + ": the trace was edited or damaged (its every line checks out, so the edit is consistent)";
      else
        std::printf("note: %s (recorded on %s, replayed on %s: bits match only on the same kernels)\n", what.c_str(),
                    t.header.value("kernels", std::string("unrecorded kernels")).c_str(),
                    kernels_description(r).c_str());
    } else if (t.checksum.empty() && c.progress != Progress::None) {
      std::printf("note: %s is a format-2 trace without the final checksum; the replay is not verified\n",
                  c.replay.c_str());
    }
    return sum;
  }
  if (r.mpi != nullptr) {
    // Every rank sets up, then all go on or none does.
    try {
      setup();
    } catch (...) {
      r.mpi->agree(false);
      r.mpi->workers_stopped = true;
      throw;
    }
    if (!r.mpi->agree(true)) {
      r.mpi->workers_stopped = true;
      throw UsageError("--transport mpi: another rank failed to set up (its error is above)");
    }
  } else {
    setup();
  }
  if (c.progress != Progress::None) {
    std::printf("adasync: %s on %s (%zu train / %zu test), %s, %d worker(s), %s, %s clock, batch %d, %zu params\n",
                c.model.c_str(), c.dataset.c_str(), r.data->train.size(), r.data->test.size(),
                device_description().c_str(), c.workers,
                (c.variant_name() + (!c.swarm && has_k(c.variant) ? " K=" + std::to_string(r.agg->k()) : "")).c_str(),
                name_of(c.clock), c.batch, r.ps->size());
    std::fflush(stdout);
  }
  r.wall = WallTimer();  // clock time starts with training, after set-up
  double end;
  if (c.resume && r.supervisor->should_stop(r.ps->version(), r.agg->stats().counted, r.resume_time)) {
    // Resumed at or past a limit: nothing to do, nothing new to checkpoint.
    if (c.progress != Progress::None) std::printf("note: the checkpoint is already at the run's limit; nothing to train\n");
    r.nothing_ran = true;
    end = r.resume_time;
  } else {
    end = r.algorithm->train();
  }
  return finish(end);
}

RunSummary Trainer::finish(double end) {
  Run& r = run_;
  const TrainConfig& c = r.cfg;
  if (c.time_budget > 0) end = std::min(end, c.time_budget);
  // Checkpoint first: a signalled run is safe before its final evaluation.
  if (!r.nothing_ran && r.algorithm->whole())
    r.supervisor->final_checkpoint(end, r.algorithm->resumes_from_quiet_point());
  nlohmann::json extra = nlohmann::json::object();
  const SnapshotPtr last = r.nothing_ran ? r.ps->latest() : r.algorithm->finish(&extra);
  RunSummary sum;
  sum.error = r.supervisor->error();
  sum.interrupted = stop_signal() != 0;
  sum.last_checkpoint = r.supervisor->last_checkpoint();
  sum.failed_workers = r.reporter->failed_workers();
  sum.lost_ranks = r.reporter->lost_ranks();
  sum.watchdog_alarms = r.reporter->watchdog_alarms();
  AggregatorStats stats = r.stats();
  stats.cancelled = r.loop->cancelled_count();
  r.reporter->set_stats(stats, r.agg->k());
  sum.final_eval = r.evaluate(last, end, true, extra);
  sum.time = end;
  sum.wall = r.wall.seconds();
  sum.updates = last->version;
  sum.stats = stats;
  sum.samples = sum.stats.counted * c.batch;
  const double first = r.reporter->first_update_time();
  sum.first_update_time = std::max(0.0, first);
  sum.target_time = r.supervisor->target_time();
  if (first >= 0 && end > first)
    sum.steady_samples_per_s = double(sum.samples - r.reporter->first_update_samples()) / (end - first);
  sum.params.assign(last->data, last->data + last->size);
  sum.checksum = checksum(last->data, last->size);
  sum.k = r.agg->k();
  sum.k_changes = r.reporter->k_changes();
  const nlohmann::json& x = extra;
  if (c.swarm) {
    sum.bytes_sent = x.value("bytes_total", int64_t(0));
    sum.bytes_per_worker_max = x.value("bytes_per_worker_max", int64_t(0));
    sum.out_of_range = x.value("out_of_range", int64_t(0));
    sum.fallback_blocks = x.value("fallback_blocks", int64_t(0));
    sum.fallback_bytes = x.value("fallback_bytes", int64_t(0));
    sum.interactions = x.value("interactions", int64_t(0));
    sum.consensus = x.value("consensus_distance", 0.0);
  }
  sum.device_update = r.device_sync;
  if (sum.interrupted) sum.stop_reason = "signal";
  else if (!r.supervisor->cause().empty()) sum.stop_reason = r.supervisor->cause();
  else if (!sum.error.empty()) sum.stop_reason = "error";
  else if (sum.target_time >= 0) sum.stop_reason = "target accuracy";
  else if (c.max_updates > 0 && sum.updates >= c.max_updates) sum.stop_reason = "updates";
  else if (r.max_samples > 0 && sum.samples >= r.max_samples) sum.stop_reason = "epochs";
  else if (c.time_budget > 0 && end >= c.time_budget) sum.stop_reason = "time budget";
  else sum.stop_reason = "no event left";
  r.reporter->summary(nlohmann::json{
      {"event", "summary"},
      {"time", sum.time},
      {"wall", sum.wall},
      {"updates", sum.updates},
      {"samples", sum.samples},
      {"steady_samples_per_s", sum.steady_samples_per_s},
      {"target_time", sum.target_time},
      {"test_accuracy", sum.final_eval.accuracy},
      {"test_loss", sum.final_eval.loss},
      {"staleness_mean", sum.stats.counted ? sum.stats.staleness_sum / double(sum.stats.counted) : 0.0},
      {"staleness_max", sum.stats.staleness_max},
      {"dropped", sum.stats.dropped()},
      {"cancelled", sum.stats.cancelled},
      {"stop_reason", sum.stop_reason},
      {"failed_workers", sum.failed_workers},
      {"lost_ranks", sum.lost_ranks},
      {"checksum", checksum_hex(sum.checksum)}});
  try {
    r.reporter->commit(sum.updates, sum.checksum);
  } catch (const OutputError& e) {
    r.output_error = e.what();  // run() saves the model first, then reports it
  }
  return sum;
}

}  // namespace adasync
