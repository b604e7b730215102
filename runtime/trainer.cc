#include "runtime/trainer.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <thread>

#include "runtime/model_io.h"
#include "runtime/swarm.h"
#include "runtime/theory.h"


namespace adasync {

namespace {
std::atomic<int> g_stop_signal{0};
}  // namespace

void request_stop(int signal) { g_stop_signal.store(signal == 0 ? -1 : signal, std::memory_order_relaxed); }
int stop_signal() { return g_stop_signal.load(std::memory_order_relaxed); }
void clear_stop_request() { g_stop_signal.store(0); }

void validate(const TrainConfig& c) {
  auto bad = [](const std::string& flag, const std::string& expected, const std::string& found) {
    throw UsageError(flag + ": expected " + expected + ", found " + found);
  };
  if (c.batch < 1) bad("--batch", "a positive batch size", std::to_string(c.batch));
  if (!(c.lr > 0) || !std::isfinite(c.lr)) bad("--lr", "a positive learning rate", std::to_string(c.lr));
  if (c.epochs < 0) bad("--epochs", "a non-negative number", std::to_string(c.epochs));
  if (c.max_updates < 0) bad("--max-updates", "a non-negative count", std::to_string(c.max_updates));
  if (c.time_budget < 0) bad("--time-budget", "a non-negative duration", std::to_string(c.time_budget));
  if (c.workers < 1 || c.workers > 1024) bad("--workers", "a count in [1, 1024]", std::to_string(c.workers));
  const bool swarm = c.variant == "swarm";
  const Variant v = swarm ? Variant::Async : parse_variant(c.variant);
  if (swarm) {
    if (c.workers < 2) bad("--workers", "at least 2 nodes for --variant swarm", std::to_string(c.workers));
    if (c.graph != "complete" && c.graph != "ring" && c.graph != "torus" && c.graph != "regular")
      bad("--graph", "complete, ring, torus or regular", "'" + c.graph + "'");
    if (!(c.local_steps >= 1)) bad("--local-steps", "at least 1", std::to_string(c.local_steps));
    if (c.local_steps_dist != "fixed" && c.local_steps_dist != "geometric")
      bad("--local-steps-dist", "fixed or geometric", "'" + c.local_steps_dist + "'");
    if (c.swarm_mode != "blocking" && c.swarm_mode != "nonblocking")
      bad("--swarm-mode", "blocking or nonblocking", "'" + c.swarm_mode + "'");
    if (c.quantize != 0 && c.quantize != 8 && c.quantize != 16)
      bad("--quantize", "0 (full precision), 8 or 16 bits", std::to_string(c.quantize));
    if (c.quant_step < 0) bad("--quant-step", "a positive step (0: adaptive)", std::to_string(c.quant_step));
    if (c.quant_block < 1) bad("--quant-block", "at least 1 coordinate", std::to_string(c.quant_block));
    if (c.quant_margin != 0 && !(c.quant_margin >= 1))
      bad("--quant-margin", "at least 1 (0: automatic)", std::to_string(c.quant_margin));
    if (c.opt.name != "sgd" && c.opt.name != "momentum")
      throw UsageError("--optimizer " + c.opt.name + ": SwarmSGD nodes take plain SGD local steps");
    if (c.schedule != "fixed" || c.lr_rule != "const" || c.max_staleness >= 0 || !c.trace.empty() || c.aggregate == "device")
      throw UsageError("--variant swarm has no parameter server: --schedule, --lr-rule, --max-staleness, --trace and "
                       "--aggregate device do not apply");
  } else if (c.quantize != 0 || c.graph != "complete" || c.swarm_mode != "blocking") {
    throw UsageError("--graph, --quantize and --swarm-mode apply to --variant swarm only");
  }
  if (has_k(v) && (c.k < 1 || c.k > c.workers))
    bad("--k", "a value in [1, --workers = " + std::to_string(c.workers) + "]", std::to_string(c.k));
  if (c.clock != "real" && c.clock != "virtual") bad("--clock", "real or virtual", "'" + c.clock + "'");
  if (c.devices != "auto" && c.devices != "cpu" && c.devices != "cuda")
    bad("--devices", "auto, cpu or cuda", "'" + c.devices + "'");
  if (c.progress != "auto" && c.progress != "plain" && c.progress != "none")
    bad("--progress", "auto, plain or none", "'" + c.progress + "'");
  if (c.threads < 0) bad("--threads", "a non-negative count (0: all)", std::to_string(c.threads));
  if (c.base_time < 0) bad("--base-time", "a non-negative duration", std::to_string(c.base_time));
  if (c.max_staleness < -1) bad("--max-staleness", "a non-negative bound (or -1: none)", std::to_string(c.max_staleness));
  if (c.max_staleness >= 0 && is_synchronous(v))
    throw UsageError("--max-staleness: " + c.variant + " applies only fresh gradients; a staleness bound needs async, k-async or k-batch-async");
  if (c.schedule != "fixed" && !has_k(v))
    throw UsageError("--schedule " + c.schedule + ": " + c.variant +
                     " has no K to schedule (use k-sync, k-batch-sync, k-async or k-batch-async)");
  if (c.schedule != "fixed" && c.schedule != "adasync" && c.schedule != "piecewise")
    bad("--schedule", "fixed, adasync or piecewise", "'" + c.schedule + "'");
  if (c.adasync_rule != "auto") parse_ada_rule(c.adasync_rule);
  if (c.sqrt_rounding != "ceil" && c.sqrt_rounding != "round")
    bad("--sqrt-rounding", "ceil or round", "'" + c.sqrt_rounding + "'");
  if (!(c.plateau_z > 0) || !std::isfinite(c.plateau_z))
    bad("--plateau-z", "a positive number of standard errors", std::to_string(c.plateau_z));
  if (!(c.plateau_horizon >= 0) || !std::isfinite(c.plateau_horizon))
    bad("--plateau-horizon", "a non-negative factor (0: no budget test)", std::to_string(c.plateau_horizon));
  if (c.plateau_updates < 1) bad("--plateau-updates", "at least 1 update per window", std::to_string(c.plateau_updates));
  if (!(c.ps_time >= 0) || !std::isfinite(c.ps_time))
    bad("--ps-time", "a non-negative duration", std::to_string(c.ps_time));
  if (c.ps_time > 0 && (c.clock != "virtual" || swarm))
    throw UsageError("--ps-time models the parameter server's service time on the virtual clock; this run uses " +
                     (swarm ? std::string("--variant swarm (no parameter server)") : "--clock " + c.clock));
  if (c.schedule == "adasync" && (c.k0 < 1 || c.k0 > c.workers))
    bad("--k0", "a start K in [1, --workers = " + std::to_string(c.workers) + "]", std::to_string(c.k0));
  if (c.schedule_every < 0) bad("--schedule-every", "a positive duration", std::to_string(c.schedule_every));
  if (c.schedule == "piecewise" && c.schedule_points.empty())
    throw UsageError("--schedule piecewise needs --schedule-points, e.g. 0:1,30s:2,60s:4");
  if (c.loss_estimate != "window" && c.loss_estimate != "sample")
    bad("--loss-estimate", "window or sample", "'" + c.loss_estimate + "'");
  if (c.loss_sample < 1) bad("--loss-sample", "a positive number of images", std::to_string(c.loss_sample));
  if (c.schedule != "fixed" && c.aggregate == "device")
    throw UsageError("--aggregate device runs plain sync; a schedule needs the parameter server (--aggregate host)");
  {
    LrConfig lc;
    lc.rule = c.lr_rule;
    lc.c = c.lr_c;
    lc.distance = c.lr_distance;
    validate(lc);
    if (c.lr_rule != "const" && is_synchronous(v))
      throw UsageError("--lr-rule " + c.lr_rule + ": " + c.variant + " applies only fresh gradients (staleness 0); "
                       "the staleness rules need async, k-async or k-batch-async");
  }
  if (c.on_nonfinite != "drop" && c.on_nonfinite != "stop")
    bad("--on-nonfinite", "drop or stop", "'" + c.on_nonfinite + "'");
  if (c.watchdog < 0) bad("--watchdog", "a non-negative duration", std::to_string(c.watchdog));
  if (c.checkpoint_keep < 1) bad("--checkpoint-keep", "at least 1", std::to_string(c.checkpoint_keep));
  if (c.resume && c.checkpoint_dir.empty())
    throw UsageError("--resume needs --checkpoint-dir (the directory holding the checkpoints to continue from)");
  if (c.checkpoint_every != "0" && c.checkpoint_dir.empty())
    throw UsageError("--checkpoint-every needs --checkpoint-dir");
  if (!c.checkpoint_dir.empty() && swarm)
    throw UsageError("--checkpoint-dir: SwarmSGD runs cannot be checkpointed yet");
  if (c.resume && !c.trace.empty())
    throw UsageError("--trace with --resume: a trace must start at version 0 to be replayed");
  if (!c.replay.empty() && (c.resume || !c.checkpoint_dir.empty()))
    throw UsageError("--replay re-applies a whole trace; it takes no --checkpoint-dir or --resume");
  {
    int64_t u = 0;
    double t = 0;
    const std::string& e = c.checkpoint_every;
    const bool has_unit = e.find_first_not_of("0123456789") != std::string::npos;
    if (e.empty()) bad("--checkpoint-every", "N updates or a duration such as 60s", "''");
    if (has_unit) t = parse_seconds(e, "--checkpoint-every");
    else u = std::stoll(e);
    (void)u;
    (void)t;
  }
  FaultPlan(c.inject, c.workers);  // validates the spec
  if (c.momentum >= 1) bad("--momentum", "a value in [0, 1) (or -1: auto)", std::to_string(c.momentum));
  if (c.target_accuracy < 0 || c.target_accuracy > 1)
    bad("--target-accuracy", "a fraction in (0, 1], e.g. 0.88", std::to_string(c.target_accuracy));
  if (c.eval_every.empty()) bad("--eval-every", "N updates or a duration such as 5s", "''");
  if (c.aggregate != "auto" && c.aggregate != "host" && c.aggregate != "device")
    bad("--aggregate", "auto, host or device", "'" + c.aggregate + "'");
  if (c.aggregate == "device") {
    if (v != Variant::Sync) throw UsageError("--aggregate device: only the sync variant can update on the devices, not " + c.variant);
    if (c.devices == "cpu") throw UsageError("--aggregate device needs GPUs; --devices cpu was given");
    if (c.clock != "real") throw UsageError("--aggregate device runs on the real clock only");
    if (c.opt.name != "sgd" && c.opt.name != "momentum") throw UsageError("--aggregate device supports sgd (with momentum), not " + c.opt.name);
    if (!c.trace.empty()) throw UsageError("--trace records parameter-server updates: use --aggregate host");
  }
  validate(c.opt);
  parse_straggler(c.straggler);
  if (!c.slowdown.empty()) parse_slowdown(c.slowdown);
  // Models in and out: a malformed --model fails before any data is loaded.
  parse_model(c.model);
  if (!c.save_model.empty()) check_output_path(c.save_model, "--save-model");
  if (!c.init_from.empty() && c.resume)
    throw UsageError("--init-from with --resume: a resumed run continues from its checkpoint's parameters");
  if (!c.init_from.empty() && !c.replay.empty())
    throw UsageError("--init-from with --replay: the trace's header names the file its run started from");
}

namespace {
// "200" -> 200 updates; "5s", "500ms" -> seconds.
void parse_eval_every(const std::string& s, int64_t* updates, double* seconds) {
  *updates = 0;
  *seconds = 0;
  const bool has_unit = s.find_first_not_of("0123456789") != std::string::npos;
  if (!has_unit) {
    *updates = std::stoll(s);
    return;
  }
  *seconds = parse_seconds(s, "--eval-every");
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}
}  // namespace

Trainer::Trainer(TrainConfig cfg, std::shared_ptr<const DataSplit> data) : cfg_(std::move(cfg)), data_(std::move(data)) {
  validate(cfg_);
  swarm_ = cfg_.variant == "swarm";
  cfg_.opt.momentum = cfg_.momentum >= 0 ? cfg_.momentum
                                         : (!swarm_ && is_synchronous(parse_variant(cfg_.variant)) ? 0.9 : 0.0);
}

Trainer::~Trainer() = default;

std::string Trainer::device_description() const {
  if (!use_cuda_) return "cpu (" + std::to_string(threads_) + " threads)";
  return "cuda (" + std::to_string(cuda_device_count()) + " device(s), " +
         (device_sync_ ? "update on the GPUs" : "host parameter server") + ")";
}

nlohmann::json Trainer::header_json() const {
  return nlohmann::json{{"model", cfg_.model},
                        {"dataset", cfg_.dataset},
                        {"data_dir", cfg_.data_dir},
                        {"seed", cfg_.seed},
                        {"batch", cfg_.batch},
                        {"workers", cfg_.workers},
                        {"shard", cfg_.shard},
                        {"variant", cfg_.variant},
                        {"k", cfg_.k},
                        {"clock", cfg_.clock},
                        {"straggler", cfg_.straggler},
                        {"lr", cfg_.lr},
                        {"optimizer",
                         {{"name", cfg_.opt.name},
                          {"momentum", cfg_.opt.momentum},
                          {"nesterov", cfg_.opt.nesterov},
                          {"beta1", cfg_.opt.beta1},
                          {"beta2", cfg_.opt.beta2},
                          {"eps", cfg_.opt.eps},
                          {"bias_correction", cfg_.opt.bias_correction},
                          {"weight_decay", cfg_.opt.weight_decay}}},
                        {"devices", use_cuda_ ? "cuda" : "cpu"}};
}

void Trainer::setup() {
  if (!data_) data_ = std::make_shared<const DataSplit>(load_dataset(cfg_.dataset, cfg_.data_dir, cfg_.seed));
  const DataSplit& d = *data_;
  EXPECTS(d.train.size() > 0 && d.test.size() > 0, "empty dataset");
  if (size_t(cfg_.batch) > d.train.size() / size_t(cfg_.shard ? cfg_.workers : 1))
    throw UsageError("--batch: " + std::to_string(cfg_.batch) + " is larger than a worker's share of the " +
                     std::to_string(d.train.size()) + " training samples");

  virtual_clock_ = cfg_.clock == "virtual";
  threads_ = cfg_.threads > 0 ? cfg_.threads : std::max(1u, std::thread::hardware_concurrency());
  const int gpus = cuda_device_count();
  if (cfg_.devices == "cuda") {
    if (gpus == 0) throw UsageError("--devices cuda: no usable GPU: " + cuda_unavailable_reason());
    use_cuda_ = true;
  } else if (cfg_.devices == "auto") {
    use_cuda_ = gpus > 0;
    if (!use_cuda_ && cfg_.progress != "none")
      std::printf("note: no GPU (%s); training on CPU workers\n", cuda_unavailable_reason().c_str());
  }

  const int P = cfg_.workers;
  if (cfg_.aggregate == "device" && use_cuda_ && P > gpus)
    throw UsageError("--aggregate device needs one GPU per worker: " + std::to_string(P) + " workers, " +
                     std::to_string(gpus) + " GPU(s)");
  if (swarm_) cfg_.shard = true;  // each SwarmSGD node samples its own shard
  device_sync_ = !swarm_ && use_cuda_ && !virtual_clock_ && parse_variant(cfg_.variant) == Variant::Sync && P <= gpus &&
                 (cfg_.aggregate == "device" ||
                  (cfg_.aggregate == "auto" && (cfg_.opt.name == "sgd" || cfg_.opt.name == "momentum") &&
                   cfg_.trace.empty()));
  // CPU threads: several concurrent real-time workers each compute serially;
  // otherwise the one computing replica gets every thread.
  const bool parallel_workers = !use_cuda_ && !virtual_clock_ && P > 1;
  // More CPU workers than threads take turns: arrival order, and so staleness,
  // then follows the OS scheduler (round-robin gives every gradient staleness
  // P - 1) rather than the workers' compute times.
  if (parallel_workers && P > threads_)
    std::fprintf(stderr,
                 "warning: %d CPU workers on %d thread(s) with the real clock: workers take turns, so staleness "
                 "follows the OS scheduler (up to %d); use --clock virtual, fewer --workers, or --straggler delays "
                 "well above a gradient's compute time\n",
                 P, threads_, P - 1);
  compute_pool_ = std::make_unique<ThreadPool>(parallel_workers ? 1 : threads_);
  apply_pool_ = std::make_unique<ThreadPool>(threads_);

  const int replicas = virtual_clock_ ? 1 : P;
  for (int w = 0; w < replicas; ++w) {
    if (use_cuda_) {
      contexts_.push_back(Context::cuda(w % gpus, "w" + std::to_string(w)));
      contexts_.back()->deterministic = cfg_.deterministic;
      contexts_.back()->use_graphs = cfg_.cuda_graphs;
    } else {
      contexts_.push_back(Context::cpu(parallel_workers ? nullptr : compute_pool_.get()));
    }
    replicas_.push_back(std::make_unique<ModelWorker>(w, *contexts_.back(), cfg_.model, d.train, cfg_.batch));
  }
  eval_ctx_ = use_cuda_ ? Context::cuda(0, "eval") : Context::cpu(compute_pool_.get());
  evaluator_ = std::make_unique<Evaluator>(*eval_ctx_, cfg_.model, d.test);

  const size_t n = replicas_[0]->num_params();
  std::vector<float> init(n);
  replicas_[0]->model().init_params(init.data(), cfg_.seed);
  if (!cfg_.init_from.empty()) init = load_model_file(cfg_.init_from, cfg_.model, d);
  ps_ = std::make_unique<ParamServer>(n, init.data(), std::make_unique<HostOptimizer>(cfg_.opt, n, apply_pool_.get()),
                                      2 * P);
  AggregatorConfig ac;
  ac.variant = swarm_ ? Variant::Async : parse_variant(cfg_.variant);
  ac.workers = P;
  ac.k = cfg_.k;
  ac.max_staleness = cfg_.max_staleness;
  agg_ = std::make_unique<Aggregator>(ac, *ps_);
  ScheduleConfig sc;
  sc.kind = swarm_ ? "fixed" : cfg_.schedule;
  sc.workers = P;
  sc.k = cfg_.schedule == "adasync" ? cfg_.k0 : agg_->k();
  sc.rule = parse_ada_rule(cfg_.adasync_rule != "auto" ? cfg_.adasync_rule : default_ada_rule(ac.variant));
  sc.interval = cfg_.schedule_every > 0 ? cfg_.schedule_every : default_decision_interval(sc.rule, cfg_.time_budget);
  sc.round_nearest = cfg_.sqrt_rounding == "round";
  sc.plateau_z = cfg_.plateau_z;
  sc.plateau_updates = cfg_.plateau_updates;
  sc.budget = cfg_.time_budget;
  sc.plateau_horizon = cfg_.plateau_horizon;
  sc.points = cfg_.schedule_points;
  schedule_ = make_schedule(sc);
  if (cfg_.schedule != "fixed") agg_->set_k(schedule_->initial_k());
  LrConfig lc;
  lc.rule = cfg_.lr_rule;
  lc.lr = cfg_.lr;
  lc.c = cfg_.lr_c;
  lc.distance = cfg_.lr_distance;
  lr_rule_ = std::make_unique<LrRule>(lc, n, cfg_.seed);
  lr_rule_->on_publish(*ps_->latest());
  if (cfg_.schedule == "adasync" && cfg_.loss_estimate == "sample") {
    // A fixed sample of the training set, evaluated on its own context.
    const size_t m = std::min(size_t(cfg_.loss_sample), d.train.size());
    loss_sample_set_ = std::make_unique<Dataset>();
    Dataset& ls = *loss_sample_set_;
    ls.name = d.train.name + "-sample";
    ls.c = d.train.c, ls.h = d.train.h, ls.w = d.train.w, ls.classes = d.train.classes;
    Sampler pick(d.train.size(), int(m), cfg_.seed ^ 0x5a5a, 0, 1, true);
    std::vector<int32_t> idx;
    pick.next(&idx);
    for (int32_t i : idx) {
      ls.x.insert(ls.x.end(), d.train.row(size_t(i)), d.train.row(size_t(i)) + d.train.dim());
      ls.y.push_back(d.train.y[size_t(i)]);
    }
    sample_ctx_ = use_cuda_ ? Context::cuda(0, "schedule") : Context::cpu(compute_pool_.get());
    sample_eval_ = std::make_unique<Evaluator>(*sample_ctx_, cfg_.model, ls);
    schedule_->set_start_loss(sample_eval_->evaluate(ps_->latest()->data).loss);
  }
  k_ = agg_->k();
  stats_ = agg_->stats();
  straggler_ = std::make_unique<Straggler>(parse_straggler(cfg_.straggler),
                                           cfg_.slowdown.empty() ? std::vector<double>{} : parse_slowdown(cfg_.slowdown),
                                           P, cfg_.seed);
  for (int w = 0; w < P; ++w)
    samplers_.emplace_back(d.train.size(), cfg_.batch, cfg_.seed * 1000003ULL + 17 * uint64_t(w) + 1,
                           cfg_.shard ? w : 0, cfg_.shard ? P : 1);

  parse_eval_every(cfg_.eval_every, &eval_every_updates_, &eval_every_seconds_);
  next_eval_update_ = eval_every_updates_;
  next_eval_time_ = eval_every_seconds_;
  double epochs = cfg_.epochs;
  if (epochs == 0 && cfg_.max_updates == 0 && cfg_.time_budget == 0) epochs = 1;
  max_samples_ = epochs > 0 ? int64_t(std::ceil(epochs * double(d.train.size()))) : 0;
  tty_ = cfg_.progress == "auto" && isatty(fileno(stdout));

  if (!cfg_.metrics.empty()) metrics_ = std::make_unique<AtomicLines>(cfg_.metrics);
  if (!cfg_.trace.empty()) {
    trace_ = std::make_unique<AtomicLines>(cfg_.trace);
    nlohmann::json h = header_json();
    h["trace"] = 1;
    if (!cfg_.init_from.empty()) h["init_from"] = cfg_.init_from;  // the replay starts there too
    trace_->write(h);
  }
  faults_ = FaultPlan(cfg_.inject, P);
  parse_eval_every(cfg_.checkpoint_every, &ckpt_every_updates_, &ckpt_every_seconds_);
  next_ckpt_update_ = ckpt_every_updates_;
  next_ckpt_time_ = ckpt_every_seconds_;
  positions_ = std::make_unique<std::vector<std::atomic<uint64_t>>>(size_t(P));
  last_push_time_.assign(size_t(P), 0.0);
  watchdog_flagged_.assign(size_t(P), 0);
  if (cfg_.resume) restore_checkpoint();
  if (metrics_) {
    nlohmann::json h = header_json();
    h["event"] = "start";
    h["params"] = n;
    if (cfg_.resume) h["resumed_from"] = last_checkpoint_, h["resumed_version"] = ps_->version();
    metrics_->write(h);
  }
}

nlohmann::json Trainer::config_json() const {
  nlohmann::json j = header_json();
  j["slowdown"] = cfg_.slowdown;
  j["base_time"] = cfg_.base_time;
  j["ps_time"] = cfg_.ps_time;
  j["adasync_rule"] = cfg_.adasync_rule;
  j["max_staleness"] = cfg_.max_staleness;
  j["schedule"] = cfg_.schedule;
  j["k0"] = cfg_.k0;
  j["lr_rule"] = cfg_.lr_rule;
  j["lr_c"] = cfg_.lr_c;
  j["loss_estimate"] = cfg_.loss_estimate;
  return j;
}

bool Trainer::checkpoint_due(double now, int64_t version) {
  if (cfg_.checkpoint_dir.empty()) return false;
  bool due = false;
  if (ckpt_every_updates_ > 0 && version >= next_ckpt_update_) {
    next_ckpt_update_ = (version / ckpt_every_updates_ + 1) * ckpt_every_updates_;
    due = true;
  }
  if (ckpt_every_seconds_ > 0 && now >= next_ckpt_time_) {
    while (next_ckpt_time_ <= now) next_ckpt_time_ += ckpt_every_seconds_;
    due = true;
  }
  return due;
}

// Everything needed to continue: parameters (and, on the virtual clock, the
// versions computations in flight started on), optimizer state, counters,
// schedule, samplers, straggler streams and the trainer's own windows.
Checkpoint Trainer::capture_state(double now, const VirtualState* vs) {
  Checkpoint c;
  SnapshotPtr cur = ps_->latest();
  nlohmann::json h;
  h["config"] = config_json();
  h["version"] = cur->version;
  h["time"] = now;
  h["k"] = agg_->k();
  const AggregatorStats& st = agg_->stats();
  h["stats"] = {{"pushes", st.pushes},
                {"counted", st.counted},
                {"updates", st.updates},
                {"dropped_stale", st.dropped_stale},
                {"dropped_bound", st.dropped_bound},
                {"dropped_nonfinite", st.dropped_nonfinite},
                {"cancelled", cancelled_},
                {"staleness_sum", st.staleness_sum},
                {"staleness_max", st.staleness_max},
                {"pushes_by_worker", st.pushes_by_worker},
                {"counted_by_worker", st.counted_by_worker}};
  std::vector<int> dead;
  for (int w = 0; w < cfg_.workers; ++w)
    if (!agg_->is_alive(w)) dead.push_back(w);
  h["dead"] = dead;
  h["optimizer_steps"] = ps_->optimizer().steps();
  h["schedule_state"] = schedule_->state();
  std::vector<uint64_t> pos;
  for (int w = 0; w < cfg_.workers; ++w)
    pos.push_back(virtual_clock_ || device_sync_ ? samplers_[size_t(w)].position()
                                                 : (*positions_)[size_t(w)].load(std::memory_order_relaxed));
  h["samplers"] = pos;
  {
    std::lock_guard<std::mutex> lk(mu_);
    nlohmann::json kc = nlohmann::json::array();
    for (const auto& ch : k_changes_)
      kc.push_back({ch.k_prev, ch.k, ch.time, ch.loss_start, ch.loss_now, ch.reason, ch.rule});
    h["trainer"] = {{"next_eval_time", next_eval_time_},     {"next_eval_update", next_eval_update_},
                    {"next_ckpt_time", next_ckpt_time_},     {"next_ckpt_update", next_ckpt_update_},
                    {"win_loss_sum", win_loss_sum_},         {"win_loss_n", win_loss_n_},
                    {"win_stale_sum", win_stale_sum_},       {"win_stale_n", win_stale_n_},
                    {"win_stale_max", win_stale_max_},       {"start_loss_sum", start_loss_sum_},
                    {"start_loss_n", start_loss_n_},         {"sched_loss_sum", sched_loss_sum_},
                    {"sched_loss_n", sched_loss_n_},         {"sched_loss_sq", sched_loss_sq_},
                    {"sched_updates", sched_updates_},
                    {"observed_times", observed_times_},     {"last_loss", last_loss_},
                    {"first_update_time", first_update_time_}, {"first_update_samples", first_update_samples_},
                    {"k_changes", kc}};
  }
  if (vs != nullptr) {
    c.put_u64s("straggler", straggler_->state());
    nlohmann::json jobs = nlohmann::json::array();
    for (const auto& j : vs->jobs)
      jobs.push_back({j.active, j.tau, j.batch, j.gen, j.finish, j.seq, j.computations});
    h["virtual"] = {{"now", vs->now}, {"seq", vs->seq}, {"ps_free", vs->ps_free}, {"jobs", jobs}};
  }
  c.header = h;
  return c;
}

// Adds the large arrays to a captured state and writes it. Parameters come
// from `params` (the version captured); the optimizer state and the sketches
// have not changed since, as no update happens between capture and save.
std::string Trainer::save_state(Checkpoint c, const SnapshotPtr& params, const std::vector<SnapshotPtr>& in_flight,
                                double now) {
  ADASYNC_RANGE("checkpoint");
  c.put_floats("params", params->data, params->size);
  for (auto& [name, arr] : ps_->optimizer().state()) c.put_floats("opt:" + name, arr->data(), arr->size());
  if (DistanceSketch* sk = lr_rule_->sketch()) {
    c.header["sketch_versions"] = sk->versions();
    const auto vals = sk->values();
    c.put_floats("sketch", vals.data(), vals.size());
  }
  std::set<int64_t> saved;
  for (const auto& sp : in_flight)
    if (sp->version != params->version && saved.insert(sp->version).second)
      c.put_floats("snap:" + std::to_string(sp->version), sp->data, sp->size);
  last_checkpoint_ = save_checkpoint(cfg_.checkpoint_dir, params->version, c, cfg_.checkpoint_keep);
  if (metrics_)
    metrics_->write(
        nlohmann::json{{"event", "checkpoint"}, {"time", now}, {"updates", params->version}, {"path", last_checkpoint_}});
  return last_checkpoint_;
}

std::string Trainer::write_checkpoint(double now, const VirtualState* vs, const std::vector<SnapshotPtr>& in_flight) {
  return save_state(capture_state(now, vs), ps_->latest(), in_flight, now);
}

// Loads the newest checkpoint that reads back whole; a damaged one is
// reported and the previous one used.
void Trainer::restore_checkpoint() {
  const auto files = list_checkpoints(cfg_.checkpoint_dir);
  if (files.empty())
    throw UsageError("--resume: no checkpoint in '" + cfg_.checkpoint_dir + "' (expected files ckpt-*.bin)");
  Checkpoint c;
  bool ok = false;
  for (const auto& f : files) {
    try {
      c = load_checkpoint(f);
      last_checkpoint_ = f;
      ok = true;
      break;
    } catch (const CheckpointError& e) {
      std::fprintf(stderr, "trainer: skipping %s\n", e.what());
    }
  }
  if (!ok) throw UsageError("--resume: no readable checkpoint in '" + cfg_.checkpoint_dir + "' (all damaged)");
  const auto& h = c.header;
  // The settings that shape the computation must match.
  const nlohmann::json want = config_json();
  for (const char* key : {"model", "dataset", "seed", "batch", "workers", "shard", "variant", "clock", "straggler",
                          "optimizer", "slowdown", "base_time", "max_staleness", "schedule", "k0", "lr_rule",
                          "loss_estimate", "devices"}) {
    if (!h["config"].contains(key) || h["config"][key] != want[key])
      throw UsageError(std::string("--resume: ") + last_checkpoint_ + " was written with " + key + " = " +
                       (h["config"].contains(key) ? h["config"][key].dump() : "?") + ", this run has " +
                       want[key].dump());
  }
  if (h["config"].contains("adasync_rule") && h["config"]["adasync_rule"] != cfg_.adasync_rule)
    throw UsageError("--resume: " + last_checkpoint_ + " was written with adasync_rule = " +
                     h["config"]["adasync_rule"].dump() + ", this run has \"" + cfg_.adasync_rule + "\"");
  if (h["config"].value("ps_time", 0.0) != cfg_.ps_time)
    throw UsageError("--resume: " + last_checkpoint_ + " was written with ps_time = " +
                     std::to_string(h["config"].value("ps_time", 0.0)) + ", this run has " + std::to_string(cfg_.ps_time));
  try {
    const std::vector<float> params = c.floats("params");
    if (params.size() != ps_->size())
      throw CheckpointError("parameters: expected " + std::to_string(ps_->size()) + " values, found " +
                            std::to_string(params.size()));
    const int64_t version = h.at("version").get<int64_t>();
    ps_->reset(params.data(), version);
    agg_->set_version(version);
    for (auto& [name, arr] : ps_->optimizer().state()) {
      const std::vector<float> v = c.floats("opt:" + name);
      if (v.size() != arr->size()) throw CheckpointError("optimizer state '" + name + "' has the wrong size");
      *arr = v;
    }
    ps_->optimizer().set_steps(h.at("optimizer_steps").get<int64_t>());
    const auto& st = h.at("stats");
    AggregatorStats& as = agg_->stats();
    as.pushes = st.at("pushes");
    as.counted = st.at("counted");
    as.updates = st.at("updates");
    as.dropped_stale = st.at("dropped_stale");
    as.dropped_bound = st.at("dropped_bound");
    as.dropped_nonfinite = st.at("dropped_nonfinite");
    as.staleness_sum = st.at("staleness_sum");
    as.staleness_max = st.at("staleness_max");
    as.pushes_by_worker = st.at("pushes_by_worker").get<std::vector<int64_t>>();
    as.counted_by_worker = st.at("counted_by_worker").get<std::vector<int64_t>>();
    cancelled_ = st.at("cancelled");
    for (int w : h.at("dead").get<std::vector<int>>()) agg_->worker_failed(w);
    {
      std::vector<double> st;  // JSON writes NaN (a value not known yet) as null
      for (const auto& x : h.at("schedule_state")) st.push_back(x.is_null() ? NAN : x.get<double>());
      schedule_->set_state(st);
    }
    agg_->set_k(h.at("k").get<int>());
    const auto pos = h.at("samplers").get<std::vector<uint64_t>>();
    for (size_t w = 0; w < pos.size() && w < samplers_.size(); ++w) samplers_[w].set_position(pos[w]);
    const auto& t = h.at("trainer");
    next_eval_time_ = t.at("next_eval_time");
    next_eval_update_ = t.at("next_eval_update");
    next_ckpt_time_ = t.at("next_ckpt_time");
    next_ckpt_update_ = t.at("next_ckpt_update");
    win_loss_sum_ = t.at("win_loss_sum");
    win_loss_n_ = t.at("win_loss_n");
    win_stale_sum_ = t.at("win_stale_sum");
    win_stale_n_ = t.at("win_stale_n");
    win_stale_max_ = t.at("win_stale_max");
    start_loss_sum_ = t.at("start_loss_sum");
    start_loss_n_ = t.at("start_loss_n");
    sched_loss_sum_ = t.at("sched_loss_sum");
    sched_loss_n_ = t.at("sched_loss_n");
    sched_loss_sq_ = t.value("sched_loss_sq", 0.0);
    sched_updates_ = t.value("sched_updates", int64_t(0));
    const auto obs = t.value("observed_times", std::vector<double>{});
    observed_times_.assign(obs.begin(), obs.end());
    last_loss_ = t.at("last_loss");
    first_update_time_ = t.at("first_update_time");
    first_update_samples_ = t.at("first_update_samples");
    auto num = [](const nlohmann::json& x) { return x.is_null() ? NAN : x.get<double>(); };  // NaN is written as null
    for (const auto& kc : t.at("k_changes"))
      k_changes_.push_back(KChange{kc[0], kc[1], kc[2], num(kc[3]), num(kc[4]), kc[5],
                                   kc.size() > 6 ? kc[6].get<std::string>() : std::string()});
    if (DistanceSketch* sk = lr_rule_->sketch(); sk && h.contains("sketch_versions"))
      sk->restore(h.at("sketch_versions").get<std::vector<int64_t>>(), c.floats("sketch"));
    resume_time_ = h.at("time");
    if (virtual_clock_) {
      if (!h.contains("virtual")) throw CheckpointError("written by a real-clock run; this run uses the virtual clock");
      straggler_->set_state(c.u64s("straggler"));
      const auto& v = h.at("virtual");
      resume_state_ = std::make_unique<VirtualState>();
      resume_state_->now = v.at("now");
      resume_state_->seq = v.at("seq");
      resume_state_->ps_free = v.value("ps_free", 0.0);
      for (const auto& j : v.at("jobs"))
        resume_state_->jobs.push_back(VirtualJob{j[0], j[1], j[2], j[3], j[4], j[5], j[6]});
      resume_snapshots_[version] = ps_->latest();
      for (const auto& jb : resume_state_->jobs) {
        if (!jb.active || resume_snapshots_.count(jb.tau)) continue;
        const std::vector<float> snap = c.floats("snap:" + std::to_string(jb.tau));
        resume_snapshots_[jb.tau] = ps_->make_snapshot(snap.data(), jb.tau);
      }
    }
    {
      std::lock_guard<std::mutex> lk(mu_);
      stats_ = agg_->stats();
      k_ = agg_->k();
    }
    lr_rule_->on_publish(*ps_->latest());
  } catch (const CheckpointError& e) {
    throw UsageError("--resume: " + last_checkpoint_ + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw UsageError("--resume: " + last_checkpoint_ + ": malformed checkpoint header: " + e.what());
  }
  if (cfg_.progress != "none")
    std::printf("resuming from %s (update %lld, time %.2f s)\n", last_checkpoint_.c_str(),
                static_cast<long long>(ps_->version()), resume_time_);
}

UpdateRates Trainer::rates(const Aggregator& agg, double) {
  last_rates_ = lr_rule_->rates(agg, *ps_->latest());
  return last_rates_;
}

LossWindow Trainer::training_loss_estimate(const SnapshotPtr& s) {
  std::lock_guard<std::mutex> lk(mu_);
  LossWindow w;
  w.updates = sched_updates_;
  sched_updates_ = 0;
  if (sample_eval_) {
    // The fixed sample's loss has no sampling noise of its own: variance 0.
    w.mean = sample_eval_->evaluate(s->data).loss;
    w.n = 1;
    return w;
  }
  w.n = sched_loss_n_;
  if (w.n > 0) {
    w.mean = sched_loss_sum_ / double(w.n);
    w.var = w.n > 1 ? std::max(0.0, (sched_loss_sq_ - double(w.n) * w.mean * w.mean) / double(w.n - 1)) : 0;
  }
  sched_loss_sum_ = sched_loss_sq_ = 0;
  sched_loss_n_ = 0;
  return w;
}

DecisionInputs Trainer::decision_inputs(const SnapshotPtr& s) {
  DecisionInputs in;
  in.loss = [this, s] { return training_loss_estimate(s); };
  in.start_loss = [this] {
    std::lock_guard<std::mutex> lk(mu_);
    return start_loss_n_ > 0 ? start_loss_sum_ / double(start_loss_n_) : NAN;
  };
  // E[T_K] for every K from one pass over the observed times, computed at
  // most once per decision and only if the rule asks.
  auto table = std::make_shared<std::vector<double>>();
  in.update_time = [this, table](int k) {
    if (table->empty()) {
      std::vector<double> xs;
      {
        std::lock_guard<std::mutex> lk(mu_);
        xs.assign(observed_times_.begin(), observed_times_.end());
      }
      *table = theory::expected_times_observed(agg_->variant(), cfg_.workers, std::move(xs));
    }
    return (*table)[size_t(k)];
  };
  return in;
}

void Trainer::on_draw(int w, double x) {
  std::lock_guard<std::mutex> lk(mu_);
  observed_times_.push_back(x);
  if (observed_times_.size() > kObservedTimes) observed_times_.pop_front();
}

void Trainer::on_push(const Push& p, const Aggregator::PushResult& r, double now) {
  last_push_time_[size_t(p.worker)] = now;
  watchdog_flagged_[size_t(p.worker)] = 0;
  if (!p.finite && cfg_.on_nonfinite == "stop" && error_.empty()) {
    error_ = "worker " + std::to_string(p.worker) + " produced a non-finite gradient at version " +
             std::to_string(p.tau) + " (--on-nonfinite stop)";
    std::lock_guard<std::mutex> lk(mu_);
    stop_requested_ = true;
  }
  if (!r.counted) return;
  std::lock_guard<std::mutex> lk(mu_);
  win_loss_sum_ += p.loss;
  ++win_loss_n_;
  sched_loss_sum_ += p.loss;
  sched_loss_sq_ += double(p.loss) * double(p.loss);
  ++sched_loss_n_;
  if (p.tau == 0) {
    start_loss_sum_ += p.loss;
    ++start_loss_n_;
  }
}

void Trainer::on_update(Aggregator& agg, const Aggregator::UpdateResult& u, double now) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    now_ = now;
    stats_ = agg.stats();
    k_ = agg.k();
    ++sched_updates_;
    if (first_update_time_ < 0) {
      first_update_time_ = now;
      first_update_samples_ = stats_.counted * cfg_.batch;
    }
    for (const Applied& a : u.applied) {
      win_stale_sum_ += double(a.staleness);
      ++win_stale_n_;
      win_stale_max_ = std::max(win_stale_max_, a.staleness);
    }
  }
  if (trace_) {
    for (const Applied& a : u.applied) {
      TraceEntry e{a.time, a.worker, a.tau, u.snapshot->version, a.staleness, a.batch, a.weight, last_rates_.lr};
      trace_->write(to_json(e));
    }
  }
  lr_rule_->on_publish(*u.snapshot);
  if (!virtual_clock_ && checkpoint_due(now, u.snapshot->version)) write_checkpoint(now, nullptr, {});
  if (schedule_->needs_start_loss() && cfg_.loss_estimate == "window") {
    std::lock_guard<std::mutex> lk(mu_);
    // F_0: the mean loss of the gradients computed at the initial parameters,
    // once all P workers' first ones are in; the schedule asks for what there
    // is at its first decision otherwise (k-sync counts only K of them).
    if (start_loss_n_ >= cfg_.workers) schedule_->set_start_loss(start_loss_sum_ / double(start_loss_n_));
  }
  if (auto ch = schedule_->after_update(now, agg.k(), decision_inputs(u.snapshot))) {
    agg.set_k(ch->k);
    report_k_change(*ch, agg.version());
  }
  if (virtual_clock_ && eval_every_updates_ > 0 && agg.version() >= next_eval_update_) {
    next_eval_update_ += eval_every_updates_;
    evaluate_and_report(u.snapshot, now, false);
  }
  progress_tick(now, false);
}

void Trainer::report_k_change(const KChange& ch, int64_t version) {
  std::lock_guard<std::mutex> lk(mu_);
  k_changes_.push_back(ch);
  k_ = ch.k;
  if (metrics_)
    metrics_->write(nlohmann::json{{"event", "k_change"},
                                   {"time", ch.time},
                                   {"wall", wall_.seconds()},
                                   {"updates", version},
                                   {"rule", ch.rule},
                                   {"k_prev", ch.k_prev},
                                   {"k", ch.k},
                                   {"loss_start", ch.loss_start},
                                   {"loss_now", ch.loss_now},
                                   {"loss_ratio", ch.loss_start / ch.loss_now},
                                   {"reason", ch.reason}});
  if (cfg_.progress != "none") {
    std::printf("%s[%8.2fs] K %d -> %d (%s", tty_ ? "\r" : "", ch.time, ch.k_prev, ch.k, ch.reason.c_str());
    if (std::isfinite(ch.loss_start)) std::printf(": loss %.4f -> %.4f", ch.loss_start, ch.loss_now);
    std::printf(")\n");
    std::fflush(stdout);
  }
}

void Trainer::on_cancelled(int n) {
  std::lock_guard<std::mutex> lk(mu_);
  cancelled_ += n;
}

void Trainer::at_quiet_point(const VirtualState& state, const std::vector<SnapshotPtr>& in_flight, double now) {
  if (cfg_.checkpoint_dir.empty()) return;
  // Captured at every quiet point, so a run that ends between updates still
  // writes the last state it can continue from exactly.
  quiet_capture_ = capture_state(now, &state);
  quiet_params_ = ps_->latest();
  quiet_in_flight_ = in_flight;
  quiet_time_ = now;
  if (checkpoint_due(now, ps_->version())) save_state(quiet_capture_, quiet_params_, quiet_in_flight_, now);
}

void Trainer::on_worker_failed(int w, const std::string& what, double now) {
  failed_workers_.push_back(w);
  const int left = agg_->alive() - 1;
  if (metrics_) metrics_->write(nlohmann::json{{"event", "worker_failed"}, {"time", now}, {"worker", w}, {"error", what}});
  std::fprintf(stderr, "%strainer: worker %d failed: %s; %s\n", tty_ ? "\n" : "", w, what.c_str(),
               left > 0 ? ("continuing with " + std::to_string(left) + " worker(s)").c_str() : "no worker left, stopping");
  if (left <= 0 && error_.empty()) error_ = "every worker failed (the last: worker " + std::to_string(w) + ": " + what + ")";
}

bool Trainer::on_time(double now) {
  if (stop_signal() != 0) return false;
  if (cfg_.watchdog > 0)
    for (int w = 0; w < cfg_.workers; ++w) {
      if (!agg_->is_alive(w) || watchdog_flagged_[size_t(w)]) continue;
      const double idle = now - last_push_time_[size_t(w)];
      if (idle > cfg_.watchdog) {
        watchdog_flagged_[size_t(w)] = 1;
        ++watchdog_alarms_;
        std::fprintf(stderr, "%strainer: watchdog: worker %d has pushed nothing for %.1f s (limit %.1f s)\n",
                     tty_ ? "\n" : "", w, idle, cfg_.watchdog);
        if (metrics_)
          metrics_->write(nlohmann::json{{"event", "watchdog"}, {"time", now}, {"worker", w}, {"idle", idle}});
      }
    }
  if (cfg_.time_budget > 0 && now >= cfg_.time_budget) return false;
  if (virtual_clock_) {
    while (eval_every_seconds_ > 0 && now >= next_eval_time_) {
      const double t = next_eval_time_;
      next_eval_time_ += eval_every_seconds_;
      evaluate_and_report(ps_->latest(), t, false);
    }
  } else {
    progress_tick(now, false);
  }
  std::lock_guard<std::mutex> lk(mu_);
  return !stop_requested_;
}

bool Trainer::keep_going(const Aggregator& agg, double) {
  if (stop_signal() != 0) return false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_requested_) return false;
  }
  if (cfg_.max_updates > 0 && agg.version() >= cfg_.max_updates) return false;
  if (max_samples_ > 0 && agg.stats().counted * cfg_.batch >= max_samples_) return false;
  return true;
}

void Trainer::progress_tick(double now, bool force) {
  if (!tty_) return;
  const double wall = wall_.seconds();
  if (!force && wall - last_progress_wall_ < 0.25) return;
  last_progress_wall_ = wall;
  std::lock_guard<std::mutex> lk(mu_);
  const int64_t updates = stats_.updates;
  const int64_t samples = stats_.counted * cfg_.batch;
  const double loss = win_loss_n_ ? win_loss_sum_ / double(win_loss_n_) : last_loss_;
  std::printf("\r[%8.2fs] upd %7lld  %8.0f samp/s  K %d  loss %.4f  acc %s  stale %.2f   ", now,
              static_cast<long long>(updates), now > 0 ? double(samples) / now : 0.0, k_, loss,
              last_acc_ < 0 ? "  -   " : fmt("%5.2f%%", 100 * last_acc_).c_str(),
              win_stale_n_ ? win_stale_sum_ / double(win_stale_n_) : 0.0);
  std::fflush(stdout);
}

EvalResult Trainer::evaluate_and_report(const SnapshotPtr& s, double now, bool final, const nlohmann::json& extra) {
  // Counted before the evaluation: training goes on while it runs, and the
  // samples must match the snapshot's update count.
  int64_t samples;
  {
    std::lock_guard<std::mutex> lk(mu_);
    samples = stats_.counted * cfg_.batch;
  }
  const EvalResult ev = evaluator_->evaluate(s->data, final ? 0 : cfg_.eval_samples);
  std::lock_guard<std::mutex> lk(mu_);
  const AggregatorStats& st = stats_;
  const double loss = win_loss_n_ ? win_loss_sum_ / double(win_loss_n_) : last_loss_;
  last_loss_ = loss;
  last_acc_ = ev.accuracy;
  const double stale_mean = win_stale_n_ ? win_stale_sum_ / double(win_stale_n_) : 0.0;
  nlohmann::json j{{"event", final ? "final" : "eval"},
                   {"time", now},
                   {"wall", wall_.seconds()},
                   {"updates", s->version},
                   {"samples", samples},
                   {"loss", loss},
                   {"test_loss", ev.loss},
                   {"test_accuracy", ev.accuracy},
                   {"test_samples", ev.samples},
                   {"samples_per_s", now > 0 ? double(samples) / now : 0.0},
                   {"k", k_},
                   {"staleness_mean", stale_mean},
                   {"staleness_max", win_stale_max_},
                   {"dropped", st.dropped()},
                   {"dropped_stale", st.dropped_stale},
                   {"dropped_bound", st.dropped_bound},
                   {"dropped_nonfinite", st.dropped_nonfinite},
                   {"cancelled", cancelled_}};
  if (s->version > last_eval_updates_ && now > last_eval_time_) {
    j["time_per_update"] = (now - last_eval_time_) / double(s->version - last_eval_updates_);
    last_eval_time_ = now;
    last_eval_updates_ = s->version;
  }
  for (auto it = extra.begin(); it != extra.end(); ++it) j[it.key()] = it.value();
  if (metrics_) metrics_->write(j);
  if (cfg_.progress != "none") {
    std::printf("%s[%8.2fs] upd %7lld  samples %9lld  %8.0f samp/s  K %d  loss %.4f  test acc %6.2f%%  stale %.2f/%lld\n",
                tty_ ? "\r" : "", now, static_cast<long long>(s->version), static_cast<long long>(samples),
                now > 0 ? double(samples) / now : 0.0, k_, loss, 100 * ev.accuracy, stale_mean,
                static_cast<long long>(win_stale_max_));
    std::fflush(stdout);
  }
  win_loss_sum_ = 0;
  win_loss_n_ = 0;
  win_stale_sum_ = 0;
  win_stale_n_ = 0;
  win_stale_max_ = 0;
  if (!final && cfg_.target_accuracy > 0 && ev.accuracy >= cfg_.target_accuracy && target_time_ < 0) {
    target_time_ = now;
    stop_requested_ = true;
  }
  return ev;
}

RunSummary Trainer::run() {
  RunSummary s = train();
  if (!cfg_.save_model.empty()) {
    save_model_file(cfg_.save_model, cfg_.model, cfg_.dataset, *data_, s.params, config_json(), s.updates);
    s.saved_model = cfg_.save_model;
  }
  return s;
}

RunSummary Trainer::train() {
  if (!cfg_.replay.empty()) return run_replay();
  setup();
  if (cfg_.progress != "none") {
    std::printf("adasync: %s on %s (%zu train / %zu test), %s, %d worker(s), %s, %s clock, batch %d, %zu params\n",
                cfg_.model.c_str(), cfg_.dataset.c_str(), data_->train.size(), data_->test.size(),
                device_description().c_str(), cfg_.workers,
                (swarm_ ? "swarm" : cfg_.variant + (has_k(parse_variant(cfg_.variant)) ? " K=" + std::to_string(agg_->k()) : ""))
                    .c_str(),
                cfg_.clock.c_str(), cfg_.batch, ps_->size());
    std::fflush(stdout);
  }
  wall_ = WallTimer();  // clock time starts with training, after set-up
  for (auto& t : last_push_time_) t = resume_time_;
  if (device_sync_) return run_device_sync();
  if (swarm_) return run_swarm();
  EngineSetup es;
  es.ps = ps_.get();
  es.agg = agg_.get();
  es.straggler = straggler_.get();
  es.samplers = &samplers_;
  for (auto& r : replicas_) es.workers.push_back(r.get());
  es.listener = this;
  es.base_time = cfg_.base_time;
  es.ps_time = cfg_.ps_time;
  es.faults = faults_.empty() ? nullptr : &faults_;
  es.positions = positions_.get();
  es.time_offset = resume_time_;
  if (resume_state_) {
    es.resume = resume_state_.get();
    es.snapshot_of = [this](int64_t v) {
      auto it = resume_snapshots_.find(v);
      EXPECTS(it != resume_snapshots_.end(), "checkpoint lacks the parameters of version " << v);
      return it->second;
    };
  }
  if (virtual_clock_ && es.base_time == 0 && straggler_->spec().mean() == 0) es.base_time = 1e-3;

  double end = 0;
  if (virtual_clock_) {
    end = run_virtual(es);
  } else {
    end = run_monitored([&] { return run_real(es); }, [&] { return ps_->latest()->version; },
                        [&](double now) { evaluate_and_report(ps_->latest(), now, false); });
  }
  return finish(end);
}

double Trainer::run_monitored(const std::function<double()>& engine, const std::function<int64_t()>& version,
                              const std::function<void(double)>& evaluate) {
  std::atomic<bool> done{false};
  std::exception_ptr error;
  double end = 0;
  std::thread runner([&] {
    try {
      end = engine();
    } catch (...) {
      error = std::current_exception();
    }
    done = true;
  });
  while (!done) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const double now = wall_.seconds();
    const int64_t v = version();
    bool due = false;
    if (eval_every_updates_ > 0 && v >= next_eval_update_) {
      next_eval_update_ = (v / eval_every_updates_ + 1) * eval_every_updates_;
      due = true;
    }
    if (eval_every_seconds_ > 0 && now >= next_eval_time_) {
      next_eval_time_ += eval_every_seconds_;
      due = true;
    }
    if (due && !done) evaluate(now);
  }
  runner.join();
  if (error) std::rethrow_exception(error);
  return end;
}

RunSummary Trainer::finish(double end) {
  if (cfg_.time_budget > 0) end = std::min(end, cfg_.time_budget);
  RunSummary sum;
  if (!cfg_.checkpoint_dir.empty() && !device_sync_) {
    // Virtual clock: the last quiet point (the run may have stopped between
    // updates); real clock: the state now.
    if (virtual_clock_ && quiet_params_) {
      if (!last_checkpoint_.empty() && last_checkpoint_.find(checkpoint_name(quiet_params_->version)) != std::string::npos) {
        // already written at that quiet point
      } else {
        save_state(quiet_capture_, quiet_params_, quiet_in_flight_, quiet_time_);
      }
    } else if (!virtual_clock_) {
      write_checkpoint(end, nullptr, {});
    }
  }
  sum.error = error_;
  sum.interrupted = stop_signal() != 0;
  sum.last_checkpoint = last_checkpoint_;
  sum.failed_workers = failed_workers_;
  sum.watchdog_alarms = watchdog_alarms_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = agg_->stats();
    k_ = agg_->k();
  }
  SnapshotPtr last = ps_->latest();
  sum.final_eval = evaluate_and_report(last, end, true, final_extra_);
  sum.time = end;
  sum.wall = wall_.seconds();
  sum.updates = last->version;
  sum.stats = agg_->stats();
  sum.stats.cancelled = cancelled_;
  sum.samples = sum.stats.counted * cfg_.batch;
  sum.first_update_time = std::max(0.0, first_update_time_);
  sum.target_time = target_time_;
  if (first_update_time_ >= 0 && end > first_update_time_)
    sum.steady_samples_per_s = double(sum.samples - first_update_samples_) / (end - first_update_time_);
  sum.params.assign(last->data, last->data + last->size);
  sum.checksum = checksum(last->data, last->size);
  sum.k = agg_->k();
  sum.k_changes = k_changes_;
  if (metrics_) {
    metrics_->write(nlohmann::json{{"event", "summary"},
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
                                   {"checksum", checksum_hex(sum.checksum)}});
    metrics_->commit();
  }
  if (trace_) trace_->commit();
  return sum;
}

// Sync on the GPUs: no parameter server in the loop. The PS holds a copy that
// is refreshed for each evaluation and at the end, and the Aggregator's
// counters are advanced as if each step were a sync update of P gradients.
RunSummary Trainer::run_device_sync() {
  const int P = cfg_.workers;
  std::vector<ModelWorker*> ws;
  for (auto& r : replicas_) ws.push_back(r.get());
  DeviceSync sync(ws, cfg_.opt, ps_->latest()->data);
  auto host_velocity = [&]() -> std::vector<float>* {
    auto st = ps_->optimizer().state();
    return st.empty() ? nullptr : st[0].second;
  };
  if (cfg_.resume && host_velocity() != nullptr) sync.velocity_from_host(*host_velocity());
  std::vector<std::vector<int32_t>> batches(static_cast<size_t>(P));
  std::vector<uint64_t> batch_ids(static_cast<size_t>(P));
  std::vector<double> delays(static_cast<size_t>(P));
  std::vector<float> host(ps_->size());
  int64_t version = ps_->version();
  auto absorb = [&](const std::vector<float>& losses) {
    std::lock_guard<std::mutex> lk(mu_);
    for (float l : losses) {
      win_loss_sum_ += l;
      ++win_loss_n_;
    }
  };
  auto publish = [&] {
    sync.params_to_host(host.data());
    ps_->reset(host.data(), version);
  };
  auto checkpoint = [&](double now) {
    publish();
    if (std::vector<float>* v = host_velocity()) *v = sync.velocity_to_host();
    ps_->optimizer().set_steps(version);
    AggregatorStats& st = agg_->stats();
    st.updates = version;
    st.counted = st.pushes = version * P;
    agg_->set_version(version);
    write_checkpoint(now, nullptr, {});
  };
  double now = 0;
  for (;;) {
    now = wall_.seconds();
    if (cfg_.time_budget > 0 && now >= cfg_.time_budget) break;
    if (cfg_.max_updates > 0 && version >= cfg_.max_updates) break;
    if (stop_signal() != 0) break;
    if (max_samples_ > 0 && version * P * cfg_.batch >= max_samples_) break;
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_requested_) break;
    }
    for (int w = 0; w < P; ++w) {
      batch_ids[size_t(w)] = samplers_[size_t(w)].next(&batches[size_t(w)]);
      delays[size_t(w)] = straggler_->draw(w);
    }
    sync.step(batches, delays, float(cfg_.lr));
    ++version;
    if (version == 3) {  // steady state: after the two eager warm-up steps and the graph capture
      std::lock_guard<std::mutex> lk(mu_);
      first_update_time_ = wall_.seconds();
      first_update_samples_ = version * P * cfg_.batch;
    }
    absorb(sync.completed());
    {
      std::lock_guard<std::mutex> lk(mu_);
      stats_.updates = version;
      stats_.counted = version * P;
      stats_.pushes = version * P;
      k_ = P;
    }
    const bool eval_due = (eval_every_updates_ > 0 && version >= next_eval_update_) ||
                          (eval_every_seconds_ > 0 && now >= next_eval_time_);
    if (eval_due) {
      if (eval_every_updates_ > 0) next_eval_update_ += eval_every_updates_;
      if (eval_every_seconds_ > 0) next_eval_time_ += eval_every_seconds_;
      absorb(sync.drain());
      publish();
      evaluate_and_report(ps_->latest(), wall_.seconds(), false);
    }
    if (checkpoint_due(now, version)) checkpoint(now);
    progress_tick(now, false);
  }
  absorb(sync.drain());
  now = wall_.seconds();
  publish();
  if (!cfg_.checkpoint_dir.empty()) checkpoint(now);
  // Count the steps in the Aggregator too, so the summary reads like a PS run.
  AggregatorStats& st = agg_->stats();
  st.updates = version;
  st.counted = st.pushes = version * P;
  for (int w = 0; w < P; ++w) st.counted_by_worker[size_t(w)] = st.pushes_by_worker[size_t(w)] = version;
  agg_->set_version(version);
  RunSummary sum = finish(now);
  sum.device_update = true;
  return sum;
}

// SwarmSGD: no parameter server in the loop. The PS holds the average model
// x_bar, refreshed for every evaluation and at the end; "updates" count local
// steps over all nodes.
RunSummary Trainer::run_swarm() {
  const int P = cfg_.workers;
  SwarmConfig sc;
  sc.graph = cfg_.graph;
  sc.degree = cfg_.degree;
  sc.local_steps = cfg_.local_steps;
  sc.geometric = cfg_.local_steps_dist == "geometric";
  sc.blocking = cfg_.swarm_mode == "blocking";
  sc.bits = cfg_.quantize;
  sc.quant_step = cfg_.quant_step;  // 0: adaptive per block
  sc.quant_block = size_t(cfg_.quant_block);
  sc.quant_margin = cfg_.quant_margin;  // 0: the engine's choice per mode
  sc.lr = float(cfg_.lr);
  sc.seed = cfg_.seed;
  std::vector<GradientWorker*> ws;
  for (auto& r : replicas_) ws.push_back(r.get());
  Straggler* straggler = straggler_.get();
  // The virtual clock needs positive compute times.
  std::unique_ptr<Straggler> with_base;
  if (virtual_clock_ && straggler_->spec().mean() == 0) {
    with_base = std::make_unique<Straggler>(
        parse_straggler("const:value=" + std::to_string(cfg_.base_time > 0 ? cfg_.base_time : 1e-3)),
        std::vector<double>{}, P, cfg_.seed);
    straggler = with_base.get();
  }
  SwarmEngine eng(sc, ws, &samplers_, straggler, ps_->latest()->data, ps_->size(), P);
  if (cfg_.progress != "none") {
    std::string q = "full precision";
    if (cfg_.quantize != 0) {
      q = std::to_string(cfg_.quantize) + "-bit lattice quantisation in blocks of " + std::to_string(sc.quant_block) + ", ";
      if (eng.codec().adaptive()) {
        q += "adaptive step";
      } else {
        char buf[96];
        std::snprintf(buf, sizeof buf, "e = %g (safe radius %g)", sc.quant_step,
                      LatticeQuantizer(cfg_.quantize, sc.quant_step).safe_radius());
        q += buf;
      }
    }
    std::printf("swarm: %s, H = %g (%s), %s averaging, %s\n", eng.graph().describe().c_str(), cfg_.local_steps,
                cfg_.local_steps_dist.c_str(), cfg_.swarm_mode.c_str(), q.c_str());
    std::fflush(stdout);
  }
  std::vector<float> avg(ps_->size());
  std::mutex eval_mu;  // one evaluation at a time (monitor vs listener)
  int64_t steps = 0;
  auto swarm_extra = [&](double consensus) {
    const SwarmStats st = eng.stats();
    int64_t worst = 0;
    for (int64_t b : st.bytes_sent) worst = std::max(worst, b);
    return nlohmann::json{{"consensus_distance", consensus},
                          {"bytes_total", st.bytes_total()},
                          {"bytes_per_worker", double(st.bytes_total()) / P},
                          {"bytes_per_worker_max", worst},
                          {"interactions", st.interactions},
                          {"out_of_range", st.out_of_range},
                          {"out_of_range_fraction",
                           st.coordinates_sent ? double(st.out_of_range) / double(st.coordinates_sent) : 0.0},
                          {"fallback_blocks", st.fallback_blocks},
                          {"fallback_fraction", st.blocks_sent ? double(st.fallback_blocks) / double(st.blocks_sent) : 0.0},
                          {"fallback_bytes", st.fallback_bytes}};
  };
  auto evaluate_now = [&](double now, bool final) {
    std::lock_guard<std::mutex> ek(eval_mu);
    double consensus = 0;
    eng.average(avg.data(), &consensus);
    int64_t v;
    {
      std::lock_guard<std::mutex> lk(mu_);
      v = steps;
    }
    ps_->reset(avg.data(), v);
    return evaluate_and_report(ps_->latest(), now, final, swarm_extra(consensus));
  };

  struct Listener : SwarmListener {
    Trainer& t;
    std::function<void(double)> eval;
    int64_t& steps;
    Listener(Trainer& tr, std::function<void(double)> e, int64_t& s) : t(tr), eval(std::move(e)), steps(s) {}
    bool on_time(double now) override {
      if (stop_signal() != 0) return false;
      if (t.cfg_.time_budget > 0 && now >= t.cfg_.time_budget) return false;
      if (t.virtual_clock_)
        while (t.eval_every_seconds_ > 0 && now >= t.next_eval_time_) {
          const double at = t.next_eval_time_;
          t.next_eval_time_ += t.eval_every_seconds_;
          eval(at);
        }
      std::lock_guard<std::mutex> lk(t.mu_);
      return !t.stop_requested_;
    }
    bool after_step(int, float loss, double now) override {
      bool due = false;
      {
        std::lock_guard<std::mutex> lk(t.mu_);
        ++steps;
        t.win_loss_sum_ += loss;
        ++t.win_loss_n_;
        t.stats_.updates = steps;
        t.stats_.counted = steps;
        if (t.first_update_time_ < 0) t.first_update_time_ = now, t.first_update_samples_ = 0;
        if (t.virtual_clock_ && t.eval_every_updates_ > 0 && steps >= t.next_eval_update_) {
          t.next_eval_update_ += t.eval_every_updates_;
          due = true;
        }
        if (t.cfg_.max_updates > 0 && steps >= t.cfg_.max_updates) return false;
        if (t.max_samples_ > 0 && steps * t.cfg_.batch >= t.max_samples_) return false;
        if (t.stop_requested_) return false;
      }
      if (due) eval(now);
      if (!t.virtual_clock_) t.progress_tick(now, false);
      return true;
    }
  } listener(*this, [&](double now) { evaluate_now(now, false); }, steps);

  double end = 0;
  if (virtual_clock_) {
    end = eng.run_virtual(listener);
  } else {
    end = run_monitored([&] { return eng.run_real(listener); },
                        [&] {
                          std::lock_guard<std::mutex> lk(mu_);
                          return steps;
                        },
                        [&](double now) { evaluate_now(now, false); });
  }
  if (cfg_.time_budget > 0) end = std::min(end, cfg_.time_budget);
  double consensus = 0;
  eng.average(avg.data(), &consensus);
  ps_->reset(avg.data(), steps);
  agg_->stats().updates = agg_->stats().counted = agg_->stats().pushes = steps;
  agg_->set_version(steps);
  const SwarmStats st = eng.stats();
  RunSummary sum;
  {
    // finish() evaluates and writes the summary; the swarm numbers ride along.
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = agg_->stats();
  }
  final_extra_ = swarm_extra(consensus);
  sum = finish(end);
  sum.bytes_sent = st.bytes_total();
  for (int64_t b : st.bytes_sent) sum.bytes_per_worker_max = std::max(sum.bytes_per_worker_max, b);
  sum.out_of_range = st.out_of_range;
  sum.fallback_blocks = st.fallback_blocks;
  sum.fallback_bytes = st.fallback_bytes;
  sum.interactions = st.interactions;
  sum.consensus = consensus;
  if (cfg_.progress != "none")
    std::printf("swarm: %lld interactions, %.1f MB sent per worker (mean), consensus distance %.3g, %lld of %lld "
                "blocks sent again at full precision, %lld decoded values outside the safe range\n",
                static_cast<long long>(st.interactions), double(st.bytes_total()) / P / 1e6, consensus,
                static_cast<long long>(st.fallback_blocks), static_cast<long long>(st.blocks_sent),
                static_cast<long long>(st.out_of_range));
  return sum;
}

RunSummary Trainer::run_replay() {
  const Trace t = read_trace(cfg_.replay);
  const auto& h = t.header;
  try {
    cfg_.model = h.at("model");
    cfg_.dataset = h.at("dataset");
    cfg_.data_dir = h.at("data_dir");
    cfg_.seed = h.at("seed");
    cfg_.batch = h.at("batch");
    cfg_.workers = h.at("workers");
    cfg_.shard = h.at("shard");
    cfg_.lr = h.at("lr");
    const auto& o = h.at("optimizer");
    cfg_.opt.name = o.at("name");
    cfg_.opt.momentum = o.at("momentum");
    cfg_.opt.nesterov = o.at("nesterov");
    cfg_.opt.beta1 = o.at("beta1");
    cfg_.opt.beta2 = o.at("beta2");
    cfg_.opt.eps = o.at("eps");
    cfg_.opt.bias_correction = o.at("bias_correction");
    cfg_.opt.weight_decay = o.at("weight_decay");
    cfg_.init_from = h.value("init_from", std::string());
  } catch (const std::exception& e) {
    throw UsageError("--replay: " + cfg_.replay + ": header is missing a setting: " + e.what());
  }
  cfg_.clock = "virtual";
  cfg_.variant = "async";
  cfg_.k = 1;
  cfg_.max_staleness = -1;
  cfg_.trace.clear();
  const std::string recorded_devices = h.value("devices", "cpu");
  setup();
  if (recorded_devices != (use_cuda_ ? "cuda" : "cpu"))
    std::printf("note: the trace was recorded on %s and is replayed on %s: results match only on the same backend\n",
                recorded_devices.c_str(), use_cuda_ ? "cuda" : "cpu");

  // The last update that reads each version, so snapshots are dropped once unneeded.
  std::map<int64_t, int64_t> last_use;
  for (const auto& e : t.entries) last_use[e.tau] = std::max(last_use[e.tau], e.version);
  std::map<int64_t, SnapshotPtr> keep{{0, ps_->latest()}};
  ModelWorker& worker = *replicas_[0];
  std::vector<int32_t> idx;
  size_t i = 0;
  int64_t version = 0;
  while (i < t.entries.size()) {
    const int64_t v = t.entries[i].version;
    if (v != version + 1)
      throw UsageError("--replay: " + cfg_.replay + ": expected an update producing version " +
                       std::to_string(version + 1) + ", found version " + std::to_string(v));
    std::vector<Slot> slots;
    std::vector<const float*> grads;
    std::vector<float> weights;
    const float lr = t.entries[i].lr;
    for (; i < t.entries.size() && t.entries[i].version == v; ++i) {
      const TraceEntry& e = t.entries[i];
      auto it = keep.find(e.tau);
      if (it == keep.end() || e.worker < 0 || e.worker >= cfg_.workers)
        throw UsageError("--replay: " + cfg_.replay + ": entry for version " + std::to_string(v) + " reads version " +
                         std::to_string(e.tau) + " of worker " + std::to_string(e.worker) + ", which the trace never made");
      worker.pull(it->second);
      samplers_[size_t(e.worker)].at(e.batch, &idx);
      slots.push_back(ps_->acquire_slot());
      GradResult res;
      worker.compute(idx, slots.back().data, 0, nullptr, 0, &res);
      grads.push_back(slots.back().data);
      weights.push_back(e.weight);
    }
    SnapshotPtr s = ps_->apply(grads, weights, lr);
    for (const Slot& sl : slots) ps_->release_slot(sl);
    version = v;
    keep[v] = s;
    for (auto it = keep.begin(); it != keep.end();) {
      auto lu = last_use.find(it->first);
      const bool needed = it->first == version || (lu != last_use.end() && lu->second > version);
      it = needed ? std::next(it) : keep.erase(it);
    }
  }
  RunSummary sum;
  SnapshotPtr last = ps_->latest();
  sum.updates = last->version;
  sum.final_eval = evaluator_->evaluate(last->data, 0);
  sum.params.assign(last->data, last->data + last->size);
  sum.checksum = checksum(last->data, last->size);
  sum.wall = wall_.seconds();
  sum.k = 1;
  return sum;
}

}  // namespace adasync
