// Replay: re-applies a recorded trace, each gradient recomputed from its
// worker's sampler batch at the snapshot of its version.
#include <cstdio>
#include <map>

#include "runtime/run/run.h"
#include "runtime/run/state.h"
#include "runtime/run/trace.h"

namespace adasync {

void replay_config(const Trace& t, const std::string& file, TrainConfig* cfg) {
  try {
    const RunIdentity id = t.header.get<RunIdentity>();
    cfg->model = id.model;
    cfg->dataset = id.dataset;
    cfg->data_dir = id.data_dir;
    cfg->seed = id.seed;
    cfg->batch = id.batch;
    cfg->workers = id.workers;
    cfg->shard = id.shard;
    cfg->lr = id.lr;
    cfg->opt = id.optimizer;
    cfg->init_from = t.header.value("init_from", std::string());
    cfg->augment = t.header.value("augment", false);
    cfg->opt.no_decay_bn = t.header.value("no_decay_bn", false);
  } catch (const std::exception& e) {
    throw UsageError("--replay: " + file + ": header is missing a setting: " + e.what());
  }
  cfg->clock = ClockKind::Virtual;
  cfg->set_variant("async");
  cfg->k = 1;
  cfg->max_staleness = -1;
  cfg->trace.clear();
}

int64_t replay_trace(Run& r, const Trace& t) {
  const std::string& file = r.cfg.replay;
  const std::string recorded_devices = t.header.value("devices", "cpu");
  if (recorded_devices != (r.use_cuda ? "cuda" : "cpu"))
    std::printf("note: the trace was recorded on %s and is replayed on %s: results match only on the same backend\n",
                recorded_devices.c_str(), r.use_cuda ? "cuda" : "cpu");
  // The last update that reads each version, so snapshots are dropped once unneeded.
  std::map<int64_t, int64_t> last_use;
  for (const auto& e : t.entries) last_use[e.tau] = std::max(last_use[e.tau], e.version);
  std::map<int64_t, SnapshotPtr> keep{{0, r.ps->latest()}};
  ModelWorker& worker = *r.replicas[0];
  std::vector<int32_t> idx;
  size_t i = 0;
  int64_t version = 0;
  while (i < t.entries.size()) {
    const int64_t v = t.entries[i].version;
    if (v != version + 1)
      throw UsageError("--replay: " + file + ": expected an update producing version " + std::to_string(version + 1) +
                       ", found version " + std::to_string(v));
    std::vector<SlotLease> slots;
    std::vector<const float*> grads;
    std::vector<float> weights;
    const float lr = t.entries[i].lr;
    for (; i < t.entries.size() && t.entries[i].version == v; ++i) {
      const TraceEntry& e = t.entries[i];
      auto it = keep.find(e.tau);
      if (it == keep.end() || e.worker < 0 || e.worker >= r.workers())
        throw UsageError("--replay: " + file + ": entry for version " + std::to_string(v) + " reads version " +
                         std::to_string(e.tau) + " of worker " + std::to_string(e.worker) + ", which the trace never made");
      worker.pull(it->second);
      Sampler& smp = r.samplers[size_t(e.worker)];
      smp.at(e.batch, &idx);
      worker.set_epoch(smp.epoch_of(e.batch));
      slots.push_back(r.ps->acquire_slot());
      GradResult res;
      worker.compute(idx, slots.back().data(), 0, nullptr, 0, &res);
      grads.push_back(slots.back().data());
      weights.push_back(e.weight);
    }
    SnapshotPtr s = r.ps->apply(grads, weights, lr);
    version = v;
    keep[v] = s;
    for (auto it = keep.begin(); it != keep.end();) {
      auto lu = last_use.find(it->first);
      const bool needed = it->first == version || (lu != last_use.end() && lu->second > version);
      it = needed ? std::next(it) : keep.erase(it);
    }
  }
  return version;
}

}  // namespace adasync
