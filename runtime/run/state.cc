#include "runtime/run/state.h"

#include <cmath>
#include <cstdio>
#include <set>

#include "models/describe.h"
#include "runtime/run/registry.h"


namespace adasync {

namespace {
struct SettingsRest {  // RunSettings beyond the identity
  std::string slowdown;
  double base_time, ps_time;
  AdaRule adasync_rule;
  int64_t max_staleness;
  ScheduleKind schedule;
  int k0;
  LrKind lr_rule;
  double lr_c;
  LossEstimate loss_estimate;
  GraphKind graph;
  int degree;
  double local_steps;
  StepsDist local_steps_dist;
  SwarmMode swarm_mode;
  int quantize;
  double quant_step;
  int quant_block;
  double quant_margin;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(SettingsRest, slowdown, base_time, ps_time, adasync_rule, max_staleness, schedule, k0,
                                   lr_rule, lr_c, loss_estimate, graph, degree, local_steps, local_steps_dist,
                                   swarm_mode, quantize, quant_step, quant_block, quant_margin)
}  // namespace

void to_json(nlohmann::json& j, const RunSettings& x) {
  j = x.identity;
  const SettingsRest r{x.slowdown, x.base_time, x.ps_time,    x.adasync_rule, x.max_staleness, x.schedule, x.k0,
                       x.lr_rule,  x.lr_c,      x.loss_estimate, x.graph,     x.degree,        x.local_steps,
                       x.local_steps_dist, x.swarm_mode, x.quantize, x.quant_step, x.quant_block, x.quant_margin};
  j.update(nlohmann::json(r));
  if (x.augment) j["augment"] = true;
  if (x.no_decay_bn) j["no_decay_bn"] = true;
  if (x.lr_schedule != LrSchedule::Const || x.lr_warmup > 0)
    j["lr_schedule"] = {{"kind", x.lr_schedule}, {"milestones", x.lr_milestones}, {"gamma", x.lr_gamma},
                        {"warmup", x.lr_warmup}};
}
void from_json(const nlohmann::json& j, RunSettings& x) {
  x.identity = j.get<RunIdentity>();
  const SettingsRest r = j.get<SettingsRest>();
  x.slowdown = r.slowdown, x.base_time = r.base_time, x.ps_time = r.ps_time, x.adasync_rule = r.adasync_rule;
  x.max_staleness = r.max_staleness, x.schedule = r.schedule, x.k0 = r.k0, x.lr_rule = r.lr_rule, x.lr_c = r.lr_c;
  x.loss_estimate = r.loss_estimate, x.graph = r.graph, x.degree = r.degree, x.local_steps = r.local_steps;
  x.local_steps_dist = r.local_steps_dist, x.swarm_mode = r.swarm_mode, x.quantize = r.quantize;
  x.quant_step = r.quant_step, x.quant_block = r.quant_block, x.quant_margin = r.quant_margin;
  x.augment = j.value("augment", false);
  x.no_decay_bn = j.value("no_decay_bn", false);
  if (j.contains("lr_schedule")) {
    const nlohmann::json& s = j.at("lr_schedule");
    s.at("kind").get_to(x.lr_schedule);
    s.at("milestones").get_to(x.lr_milestones);
    s.at("gamma").get_to(x.lr_gamma);
    s.at("warmup").get_to(x.lr_warmup);
  }
}

RunIdentity run_identity(const Run& r) {
  const TrainConfig& c = r.cfg;
  return RunIdentity{c.model,     c.dataset, c.data_dir,  c.seed, c.batch, c.workers, c.shard, c.variant_name(),
                     c.k,         c.clock,   c.straggler.text(), c.lr,   c.opt,   r.use_cuda ? "cuda" : "cpu"};
}

RunSettings run_settings(const Run& r) {
  const TrainConfig& c = r.cfg;
  RunSettings s;
  s.identity = run_identity(r);
  s.slowdown = c.slowdown.text;
  s.base_time = c.base_time;
  s.ps_time = c.ps_time;
  s.adasync_rule = c.adasync_rule;
  s.max_staleness = c.max_staleness;
  s.schedule = c.schedule;
  s.k0 = c.k0;
  s.lr_rule = c.lr_rule;
  s.lr_c = c.lr_c;
  s.loss_estimate = c.loss_estimate;
  s.augment = c.augment;
  s.no_decay_bn = c.opt.no_decay_bn;
  s.lr_schedule = c.lr_schedule;
  s.lr_milestones = c.lr_milestones;
  s.lr_gamma = c.lr_gamma;
  s.lr_warmup = c.lr_warmup;
  if (c.swarm) {
    s.graph = c.graph;
    s.degree = c.degree;
    s.local_steps = c.local_steps;
    s.local_steps_dist = c.local_steps_dist;
    s.swarm_mode = c.swarm_mode;
    s.quantize = c.quantize;
    s.quant_step = c.quant_step;
    s.quant_block = c.quant_block;
    s.quant_margin = c.quant_margin;
  }
  return s;
}

void register_state(Run& r) {
  StateRegistry& g = r.registry;
  using Presence = StateRegistry::Presence;
  // The run that wrote it (absent in older checkpoints); a resumed run goes on as the same run.
  g.add<std::string>(
      "run_id", [&r] { return r.run_id; },
      [&r](const std::string& id) {
        if (!id.empty()) r.run_id = id;
      },
      Presence::Optional);
  // The goodput estimators' gradients travel beside the policy's state.
  g.add_with_arrays(
      "policy",
      [&r](Checkpoint& c) {
        if (const std::vector<float>* v = r.policy->noise_waiting()) c.put_floats("noise:waiting", v->data(), v->size());
        if (const std::vector<float>* v = r.policy->noise_last_mean()) c.put_floats("noise:mean", v->data(), v->size());
        return nlohmann::json(r.policy->state());
      },
      [&r](const nlohmann::json& j, const Checkpoint& c) {
        r.policy->restore(j.get<PolicyState>());
        if (c.has("noise:waiting")) r.policy->set_noise_waiting(c.floats("noise:waiting"));
        if (c.has("noise:mean")) r.policy->set_noise_last_mean(c.floats("noise:mean"));
      });
  g.add<SupervisorState>(
      "supervisor", [&r] { return r.supervisor->state(); },
      [&r](const SupervisorState& s) { r.supervisor->restore(s); });
  g.add<ReporterState>(
      "reporter", [&r] { return r.reporter->state(); }, [&r](const ReporterState& s) { r.reporter->restore(s); });
  // The algorithm's own (SwarmSGD's nodes; null for the others), restored
  // when the algorithm is set up on the resumed run.
  g.add_with_arrays(
      "swarm", [&r](Checkpoint& c) { return r.algorithm->save(&c); },
      [&r](const nlohmann::json& j, const Checkpoint&) { r.resume_swarm = j; });
  // The distance rule's sketch of past parameters: the versions here, the values beside.
  g.add_with_arrays(
      "sketch_versions",
      [&r](Checkpoint& c) {
        DistanceSketch* sk = r.policy->lr_rule().sketch();
        if (sk == nullptr) return nlohmann::json::array();
        const auto vals = sk->values();
        c.put_floats("sketch", vals.data(), vals.size());
        return nlohmann::json(sk->versions());
      },
      [&r](const nlohmann::json& j, const Checkpoint& c) {
        const auto versions = j.get<std::vector<int64_t>>();
        if (DistanceSketch* sk = r.policy->lr_rule().sketch(); sk && !versions.empty())
          sk->restore(versions, c.floats("sketch"));
      });
}

Checkpoint capture_state(Run& r, double now, const VirtualState* vs, const SnapshotPtr& params) {
  TrainState st;
  st.config = run_settings(r);
  st.version = params->version;
  st.time = now;
  st.k = r.agg->k();
  st.stats = r.stats();
  st.stats.cancelled = r.loop->cancelled_count();
  for (int w = 0; w < r.workers(); ++w)
    if (!r.agg->is_alive(w)) st.dead.push_back(w);
  st.optimizer_steps = r.ps->optimizer().steps();
  Checkpoint c;
  r.registry.save(c);
  st.samplers = r.algorithm->positions();  // after its state: consistent with it
  c.header.update(nlohmann::json(st));
  // The clock: the virtual PS driver's state at this quiet point and the straggler streams.
  if (vs != nullptr) c.header["virtual"] = *vs;
  if (vs != nullptr || (r.cfg.swarm && r.virtual_clock)) c.put_u64s("straggler", r.straggler->state());
  return c;
}

std::string save_state(Run& r, Checkpoint c, const SnapshotPtr& params, const std::vector<SnapshotPtr>& in_flight,
                       double now) {
  ADASYNC_RANGE("checkpoint");
  c.put_floats("params", params->data, params->size);
  for (auto& [name, arr] : r.ps->optimizer().state()) c.put_floats("opt:" + name, arr->data(), arr->size());
  std::set<int64_t> saved;
  for (const auto& sp : in_flight)
    if (sp->version != params->version && saved.insert(sp->version).second)
      c.put_floats("snap:" + std::to_string(sp->version), sp->data, sp->size);
  const std::string path = save_checkpoint(r.cfg.checkpoint_dir, params->version, c, r.cfg.checkpoint_keep, "--checkpoint-dir");
  r.reporter->checkpoint_written(now, params->version, path);
  return path;
}

namespace {
// The first setting that differs between a checkpoint and this run, as
// "name = checkpoint's, this run has ours"; empty when none does.
std::string first_difference(const nlohmann::json& have, const nlohmann::json& want, const std::string& prefix) {
  for (auto it = want.begin(); it != want.end(); ++it) {
    const std::string name = prefix + it.key();
    if (!have.contains(it.key())) return name + " = (missing), this run has " + it.value().dump();
    const nlohmann::json& h = have.at(it.key());
    if (h != it.value()) {
      return name + " = " + h.dump() + ", this run has " + it.value().dump();
    }
  }
  for (auto it = have.begin(); it != have.end(); ++it)  // settings written only when set
    if (!want.contains(it.key())) return prefix + it.key() + " = " + it.value().dump() + ", this run has none";
  return "";
}
}  // namespace

void restore_state(Run& r) {
  const std::string& dir = r.cfg.checkpoint_dir;
  const auto files = list_checkpoints(dir);
  if (files.empty()) throw UsageError("--resume: no checkpoint in '" + dir + "' (expected files ckpt-*.bin)");
  auto c = std::make_unique<Checkpoint>();
  std::string path;
  for (const auto& f : files) {
    try {
      *c = load_checkpoint(f);
      path = f;
      break;
    } catch (const CheckpointError& e) {
      std::fprintf(stderr, "trainer: skipping %s\n", e.what());
    }
  }
  if (path.empty()) throw UsageError("--resume: no readable checkpoint in '" + dir + "' (all damaged)");
  r.supervisor->set_last_checkpoint(path);
  try {
    const nlohmann::json& h = c->header;
    const int format = h.value("state_format", 1);
    if (format != kStateFormat)
      throw CheckpointError("state format " + std::to_string(format) + " (written by another adasync version); this "
                            "build reads format " + std::to_string(kStateFormat));
    // The settings that shape the computation must match (the identity's k,
    // lr and data_dir may differ: K is the checkpoint's, see below).
    nlohmann::json want = run_settings(r), have = h.at("config");
    for (const char* loose : {"k", "lr", "data_dir"}) {
      want.erase(loose);
      have.erase(loose);
    }
    // A layer list written another way (spaces, a zoo name, defaults spelt
    // out) is the same model when it describes the same layers.
    for (nlohmann::json* s : {&want, &have}) {
      if (!s->contains("model") || !(*s)["model"].is_string()) continue;
      try {
        (*s)["model"] = parse_model((*s)["model"].get<std::string>()).description();
      } catch (const UsageError&) {
        // compared as written
      }
    }
    const std::string diff = first_difference(have, want, "");
    if (!diff.empty()) throw UsageError("--resume: " + path + " was written with " + diff);
    const TrainState st = h.get<TrainState>();
    if (st.config.identity.k != r.cfg.k && r.cfg.schedule == ScheduleKind::Fixed && !r.cfg.swarm &&
        has_k(r.cfg.variant))
      std::fprintf(stderr, "note: --k %d is ignored: the run resumes at the checkpoint's K = %d\n", r.cfg.k, st.k);
    const std::vector<float> params = c->floats("params");
    if (params.size() != r.ps->size())
      throw CheckpointError("parameters: expected " + std::to_string(r.ps->size()) + " values, found " +
                            std::to_string(params.size()));
    r.ps->reset(params.data(), st.version);
    r.agg->set_version(st.version);
    for (auto& [name, arr] : r.ps->optimizer().state()) {
      const std::vector<float> v = c->floats("opt:" + name);
      if (v.size() != arr->size()) throw CheckpointError("optimizer state '" + name + "' has the wrong size");
      *arr = v;
    }
    r.ps->optimizer().set_steps(st.optimizer_steps);
    AggregatorStats& as = r.agg->stats();
    const auto pushes = as.pushes_by_worker.size();
    as = st.stats;
    if (as.pushes_by_worker.size() != pushes || as.counted_by_worker.size() != pushes)
      throw CheckpointError("per-worker counters for " + std::to_string(as.pushes_by_worker.size()) + " workers");
    r.loop->set_cancelled(st.stats.cancelled);
    for (int w : st.dead) r.agg->worker_failed(w);
    r.registry.restore(*c);  // the policy, the supervisor, the reporter, the algorithm's own, ...
    r.agg->set_k(st.k);
    for (size_t w = 0; w < st.samplers.size() && w < r.samplers.size(); ++w) r.samplers[w].set_position(st.samplers[w]);
    r.reporter->restore_failed(st.dead);
    r.resume_time = st.time;
    if (r.virtual_clock) {
      const bool quiet_point = h.contains("virtual");
      if (!quiet_point && !r.cfg.swarm)
        throw CheckpointError("written by a real-clock run; this run uses the virtual clock");
      r.straggler->set_state(c->u64s("straggler"));
      if (quiet_point) {
        r.resume_state = std::make_unique<VirtualState>(h.at("virtual").get<VirtualState>());
        r.resume_snapshots[st.version] = r.ps->latest();
        for (const auto& jb : r.resume_state->jobs) {
          if (!jb.active || r.resume_snapshots.count(jb.tau)) continue;
          const std::vector<float> snap = c->floats("snap:" + std::to_string(jb.tau));
          r.resume_snapshots[jb.tau] = r.ps->make_snapshot(snap.data(), jb.tau);
        }
      }
    }
    r.reporter->set_stats(r.agg->stats(), r.agg->k());
    r.policy->lr_rule().on_publish(*r.ps->latest());
  } catch (const CheckpointError& e) {
    throw UsageError("--resume: " + path + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw UsageError("--resume: " + path + ": malformed checkpoint header: " + e.what());
  }
  r.resumed = std::move(c);
  if (r.cfg.progress != Progress::None)
    std::printf("resuming from %s (update %lld, time %.2f s)\n", path.c_str(), static_cast<long long>(r.ps->version()),
                r.resume_time);
}

}  // namespace adasync
