// The SwarmSGD mode: no parameter server in the loop. The PS holds the
// average model x_bar, refreshed for every evaluation and at the end;
// "updates" count local steps over all nodes.
#include <algorithm>
#include <cstdio>

#include "runtime/algorithms/swarm.h"
#include "runtime/drivers/swarm_drivers.h"
#include "runtime/run/run.h"
#include "runtime/run/state.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

namespace {
struct SwarmHooks : SwarmListener {
  Run& r;
  std::atomic<int64_t> steps{0};
  explicit SwarmHooks(Run& run) : r(run) {}
  bool on_time(double now) override { return r.supervisor->on_time(now); }
  bool after_step(int node, float loss, bool finite, double now) override {
    // The supervisor sees a node's step as a PS worker's push: the watchdog
    // and the non-finite rules (--on-nonfinite, --nonfinite-limit) apply.
    PushEvent ev;
    ev.worker = node;
    ev.tau = steps.load();
    ev.loss = loss;
    ev.finite = finite;
    ev.time = now;
    r.supervisor->on_push(ev);
    if (!finite) return !r.supervisor->should_stop(ev.tau, ev.tau, now);
    const int64_t s = steps.fetch_add(1) + 1;
    r.reporter->add_losses({loss});
    r.reporter->count_steps(s, s, 1, now, s == 1);
    if (r.supervisor->should_stop(s, s, 0)) return false;
    r.supervisor->after_step(s, now, !r.virtual_clock);
    return true;
  }
  bool node_failed(int node, const std::string& what, int left, double now) override {
    r.supervisor->on_worker_failed(node, what, left, now);
    r.reporter->on_worker_failed(node, what, left, now);
    return left > 0;
  }
  void rank_lost(int rank, int first, int last, const std::string& what, double now) override {
    r.reporter->on_rank_lost(rank, first, last, what, now);
  }
};
}  // namespace

SwarmConfig swarm_config(const TrainConfig& c) {
  SwarmConfig sc;
  sc.graph = c.graph;
  sc.degree = c.degree;
  sc.local_steps = c.local_steps;
  sc.geometric = c.local_steps_dist == StepsDist::Geometric;
  sc.blocking = c.swarm_mode == SwarmMode::Blocking;
  sc.bits = c.quantize;
  sc.quant_step = c.quant_step;  // 0: adaptive per block
  sc.quant_block = size_t(c.quant_block);
  sc.quant_margin = c.quant_margin;  // 0: the engine's choice per mode
  sc.lr = float(c.lr);
  sc.seed = c.seed;
  return sc;
}

double run_swarm_mode(Run& r) {
  const TrainConfig& c = r.cfg;
  const int P = r.workers();
  SwarmConfig sc = swarm_config(c);
  sc.layout = r.ps->optimizer().layout();
  // In one process the engine holds every node; over MPI the worker ranks do
  // and rank 0 gathers (the same counters, the same average).
  std::unique_ptr<SwarmEngine> local;
  std::unique_ptr<MpiSwarm> far;
  SwarmSetup setup;  // the drivers' side of the nodes (in one process)
  if (r.mpi != nullptr) {
    far = std::make_unique<MpiSwarm>(*r.mpi, sc, P, r.ps->size());
  } else {
    for (auto& w : r.replicas) setup.workers.push_back(w.get());
    setup.samplers = &r.samplers;
    setup.straggler = r.straggler.get();
    setup.faults = r.faults.empty() ? nullptr : &r.faults;
    local = std::make_unique<SwarmEngine>(sc, r.ps->latest()->data, r.ps->size(), P);
  }
  const GossipGraph graph = GossipGraph::make(sc.graph, P, sc.degree, sc.seed);
  const SwarmCodec codec(sc.bits, sc.quant_step, sc.quant_block);
  auto average = [&](float* out, double* consensus) {
    if (far) far->average(out, consensus);
    else local->average(out, consensus);
  };
  auto stats = [&] { return far ? far->stats() : local->stats(); };
  SwarmHooks hooks(r);
  // Steps in the aggregator's terms: a step a push, a step taken a counted
  // gradient and an update.
  auto counts = [&] {
    const SwarmStats st = stats();
    AggregatorStats a;
    a.updates = a.counted = hooks.steps.load();
    a.dropped_nonfinite = st.nonfinite;
    a.pushes = a.counted + a.dropped_nonfinite;
    a.pushes_by_worker = st.steps_by_node;
    a.counted_by_worker = st.taken_by_node;
    a.pushes_by_worker.resize(size_t(P), 0);
    a.counted_by_worker.resize(size_t(P), 0);
    return a;
  };
  if (!r.resume_swarm.is_null()) {
    try {
      if (far) far->restore(r.resume_swarm, *r.resumed);
      else local->restore(r.resume_swarm, *r.resumed);
      hooks.steps = r.resume_swarm.at("steps").get<int64_t>();
      // Nodes that left before the checkpoint stay gone; the watchdog leaves them alone.
      const auto& nodes = r.resume_swarm.at("nodes");
      int left = P;
      for (const auto& nj : nodes) left -= nj.value("failed", false) ? 1 : 0;
      std::vector<int> gone;
      for (int i = 0; i < int(nodes.size()); ++i)
        if (nodes[size_t(i)].value("failed", false)) {
          r.supervisor->on_worker_failed(i, "failed before the checkpoint", left, 0);
          gone.push_back(i);
        }
      r.reporter->restore_failed(gone);
    } catch (const CheckpointError& e) {
      throw UsageError("--resume: " + r.supervisor->last_checkpoint() + ": " + e.what());
    } catch (const nlohmann::json::exception& e) {
      throw UsageError("--resume: " + r.supervisor->last_checkpoint() + ": malformed SwarmSGD state: " + e.what());
    }
  }
  if (c.progress != Progress::None) {
    std::string q = "full precision";
    if (c.quantize != 0) {
      q = std::to_string(c.quantize) + "-bit lattice quantisation in blocks of " + std::to_string(sc.quant_block) + ", ";
      if (codec.adaptive()) {
        q += "adaptive step";
      } else {
        char buf[96];
        std::snprintf(buf, sizeof buf, "e = %g (safe radius %g)", sc.quant_step,
                      LatticeQuantizer(c.quantize, sc.quant_step).safe_radius());
        q += buf;
      }
    }
    std::printf("swarm: %s, H = %g (%s), %s averaging, %s\n", graph.describe().c_str(), c.local_steps,
                name_of(c.local_steps_dist), name_of(c.swarm_mode), q.c_str());
    std::fflush(stdout);
  }
  std::vector<float> avg(r.ps->size());
  auto extra = [&](double consensus) {
    const SwarmStats st = stats();
    int64_t worst = 0;
    for (int64_t b : st.bytes_sent) worst = std::max(worst, b);
    nlohmann::json j{{"consensus_distance", consensus},
                          {"bytes_total", st.bytes_total()},
                          {"bytes_per_worker", double(st.bytes_total()) / P},
                          {"bytes_per_worker_max", worst},
                          {"interactions", st.interactions},
                          {"local_steps", st.local_steps},
                          {"steps_by_node", st.steps_by_node},
                          {"bytes_by_node", st.bytes_sent},
                          {"nonfinite_steps", st.nonfinite},
                          {"out_of_range", st.out_of_range},
                          {"out_of_range_fraction",
                           st.coordinates_sent ? double(st.out_of_range) / double(st.coordinates_sent) : 0.0},
                          {"fallback_blocks", st.fallback_blocks},
                          {"fallback_fraction", st.blocks_sent ? double(st.fallback_blocks) / double(st.blocks_sent) : 0.0},
                          {"fallback_bytes", st.fallback_bytes}};
    // Counting values decoded outside the safe range needs both ends of a
    // transfer: one process has them, MPI ranks do not.
    if (far) j.erase("out_of_range"), j.erase("out_of_range_fraction");
    return j;
  };
  // x_bar into the PS, as the version counting local steps.
  double last_consensus = 0;
  auto publish = [&] {
    double consensus = 0;
    average(avg.data(), &consensus);
    r.ps->reset(avg.data(), hooks.steps.load());
    return last_consensus = consensus;
  };
  SupervisorActions act;
  std::mutex publish_mu;  // an x_bar and the snapshot taken of it belong together
  act.evaluate = [&](double now) {
    double consensus;
    SnapshotPtr s;
    {
      std::lock_guard<std::mutex> lk(publish_mu);
      consensus = publish();
      s = r.ps->latest();
    }
    return r.evaluate(s, now, false, extra(consensus));
  };
  // A checkpoint holds x_bar as its parameters (what --export writes) and
  // every node's state.
  act.capture = [&](double now, const VirtualState*, const SnapshotPtr& p) {
    Checkpoint ck = capture_state(r, now, nullptr, p);
    // Virtual: exactly p's version; real: the nodes have gone on meanwhile.
    ck.header["swarm"]["steps"] = hooks.steps.load();
    return ck;
  };
  act.save = [&](Checkpoint ck, const SnapshotPtr& p, const std::vector<SnapshotPtr>& f, double now) {
    return save_state(r, std::move(ck), p, f, now);
  };
  act.params = [&] {
    std::lock_guard<std::mutex> lk(publish_mu);
    publish();
    return r.ps->latest();
  };
  r.supervisor->set_actions(act);
  r.swarm = far ? static_cast<SwarmState*>(far.get()) : local.get();
  r.counts = counts;

  double end = 0;
  if (far) {
    std::vector<uint64_t> positions;
    for (const Sampler& s : r.samplers) positions.push_back(s.position());
    far->start(r.ps->latest()->data, positions);
    end = r.supervisor->run_monitored([&] { return far->run(hooks); }, [&] { return hooks.steps.load(); }, 0);
  } else if (r.virtual_clock) {
    end = run_swarm_virtual(*local, setup, hooks);
  } else {
    SwarmThreads nodes(*local, setup);
    end = r.supervisor->run_monitored([&] { return nodes.run(hooks); }, [&] { return hooks.steps.load(); }, 0);
  }
  // A lost rank took its nodes: no final checkpoint (the last one stays the
  // one to resume from) and the summary evaluates the last average.
  const bool whole = !far || far->lost().empty();
  if (whole) r.supervisor->final_checkpoint(end, false);  // while the nodes' state is here
  r.swarm = nullptr;
  r.supervisor->set_actions(r.default_actions);
  r.checkpointed_at_end = true;
  if (!whole) {
    const SnapshotPtr last = r.ps->latest();
    const std::vector<float> x(last->data, last->data + last->size);
    r.ps->reset(x.data(), hooks.steps.load());
  }
  const double consensus = whole ? publish() : last_consensus;
  if (far) far->release();
  r.counts = [a = counts()] { return a; };  // this mode's locals end here
  r.final_extra = extra(consensus);
  const SwarmStats st = stats();
  if (c.progress != Progress::None) {
    const std::string range = far ? std::string("decoded values outside the safe range not counted over MPI")
                                  : std::to_string(st.out_of_range) + " decoded values outside the safe range";
    std::printf("swarm: %lld interactions, %.1f MB sent per worker (mean), consensus distance %.3g, %lld of %lld "
                "blocks sent again at full precision, %s\n",
                static_cast<long long>(st.interactions), double(st.bytes_total()) / P / 1e6, consensus,
                static_cast<long long>(st.fallback_blocks), static_cast<long long>(st.blocks_sent), range.c_str());
  }
  return end;
}

}  // namespace adasync
