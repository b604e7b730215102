// The SwarmSGD algorithm: no parameter server in the loop. The PS holds the
// average model x_bar, refreshed for every evaluation, every checkpoint and
// at the end; "updates" count local steps over all nodes.
#include <algorithm>
#include <cstdio>
#include <cstring>

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

namespace {
class SwarmAlgorithm : public Algorithm {
 public:
  explicit SwarmAlgorithm(Run& r)
      : r_(r),
        sc_(config(r)),
        graph_(GossipGraph::make(sc_.graph, r.workers(), sc_.degree, sc_.seed)),
        codec_(sc_.bits, sc_.quant_step, sc_.quant_block),
        hooks_(r),
        avg_(r.ps->size()) {
    const int P = r.workers();
    // In one process the engine holds every node; over MPI the worker ranks
    // do and rank 0 gathers (the same counters, the same average).
    if (r.mpi != nullptr) {
      far_ = std::make_unique<MpiSwarm>(*r.mpi, sc_, P, r.ps->size());
    } else {
      for (auto& w : r.replicas) setup_.workers.push_back(w.get());
      setup_.samplers = &r.samplers;
      setup_.straggler = r.straggler.get();
      setup_.faults = r.faults.empty() ? nullptr : &r.faults;
      local_ = std::make_unique<SwarmEngine>(sc_, r.ps->latest()->data, r.ps->size(), P);
    }
    if (!r.resume_swarm.is_null()) restore(r.resume_swarm);
  }

  double train() override {
    Run& r = r_;
    if (r.cfg.progress != Progress::None) describe();
    if (far_) {
      std::vector<uint64_t> positions;
      for (const Sampler& s : r.samplers) positions.push_back(s.position());
      far_->start(r.ps->latest()->data, positions);
      return r.supervisor->run_monitored([&] { return far_->run(hooks_); }, [&] { return hooks_.steps.load(); }, 0,
                                         false);
    }
    if (r.virtual_clock) return run_swarm_virtual(*local_, setup_, hooks_);
    SwarmThreads nodes(*local_, setup_);
    return r.supervisor->run_monitored([&] { return nodes.run(hooks_); }, [&] { return hooks_.steps.load(); }, 0,
                                       false);
  }

  // x_bar into the PS, as the version counting local steps; an x_bar and the
  // snapshot taken of it belong together.
  SnapshotPtr publish(nlohmann::json* extra) override {
    std::lock_guard<std::mutex> lk(publish_mu_);
    double consensus = 0;
    state().average(avg_.data(), &consensus);
    last_consensus_ = consensus;
    if (extra != nullptr) *extra = keys(consensus);
    // Unchanged since the last: the same snapshot (the end of a run on its
    // last periodic checkpoint is then seen to be written already).
    const int64_t version = hooks_.steps.load();
    SnapshotPtr now = r_.ps->latest();
    if (now && now->version == version && now->size == avg_.size() &&
        std::memcmp(now->data, avg_.data(), avg_.size() * sizeof(float)) == 0)
      return now;
    r_.ps->reset(avg_.data(), version);
    return r_.ps->latest();
  }

  // Steps in the aggregator's terms: a step a push, a step taken a counted
  // gradient and an update.
  AggregatorStats counts() override {
    const int P = r_.workers();
    const SwarmStats st = stats();
    AggregatorStats a;
    a.updates = a.counted = hooks_.steps.load();
    a.dropped_nonfinite = st.nonfinite;
    a.pushes = a.counted + a.dropped_nonfinite;
    a.pushes_by_worker = st.steps_by_node;
    a.counted_by_worker = st.taken_by_node;
    a.pushes_by_worker.resize(size_t(P), 0);
    a.counted_by_worker.resize(size_t(P), 0);
    return a;
  }

  std::vector<uint64_t> positions() override { return state().positions(); }

  // Every node's state (a checkpoint's parameters are x_bar, what --export
  // writes); virtual: exactly the snapshot's version, real: the nodes have
  // gone on meanwhile.
  nlohmann::json save(Checkpoint* c) override {
    nlohmann::json j = state().save(c);
    j["steps"] = hooks_.steps.load();
    return j;
  }

  // A lost rank took its nodes: no final checkpoint (the last one stays the
  // one to resume from) and the end evaluates the last average.
  bool whole() override { return !far_ || far_->lost().empty(); }

  SnapshotPtr finish(nlohmann::json* extra) override {
    double consensus = last_consensus_;
    if (whole()) {
      publish(nullptr);
      consensus = last_consensus_;
    } else {
      const SnapshotPtr last = r_.ps->latest();
      const std::vector<float> x(last->data, last->data + last->size);
      r_.ps->reset(x.data(), hooks_.steps.load());
    }
    if (far_) far_->release();
    if (extra != nullptr) *extra = keys(consensus);
    if (r_.cfg.progress != Progress::None) {
      const SwarmStats st = stats();
      const std::string range = st.by_message > 0
                                    ? std::string("decoded values outside the safe range not counted through messages")
                                    : std::to_string(st.out_of_range) + " decoded values outside the safe range";
      const std::string how = !far_           ? ""
                              : st.by_message ? " (" + std::to_string(st.by_message) + " through messages)"
                                              : " (all in place, in shared memory)";
      std::printf(
          "swarm: %lld interactions%s, %.1f MB sent per worker (mean), consensus distance %.3g, %lld of %lld "
          "blocks sent again at full precision, %s\n",
          static_cast<long long>(st.interactions), how.c_str(), double(st.bytes_total()) / r_.workers() / 1e6,
          consensus, static_cast<long long>(st.fallback_blocks), static_cast<long long>(st.blocks_sent), range.c_str());
    }
    return r_.ps->latest();
  }

 private:
  static SwarmConfig config(const Run& r) {
    SwarmConfig sc = swarm_config(r.cfg);
    sc.layout = r.ps->optimizer().layout();
    return sc;
  }
  SwarmState& state() { return far_ ? static_cast<SwarmState&>(*far_) : *local_; }
  SwarmStats stats() { return state().stats(); }

  void restore(const nlohmann::json& j) {
    Run& r = r_;
    const int P = r.workers();
    try {
      if (far_)
        far_->restore(j, *r.resumed);
      else
        local_->restore(j, *r.resumed);
      hooks_.steps = j.at("steps").get<int64_t>();
      // Nodes that left before the checkpoint stay gone; the watchdog leaves them alone.
      const auto& nodes = j.at("nodes");
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

  void describe() const {
    const TrainConfig& c = r_.cfg;
    std::string q = "full precision";
    if (c.quantize != 0) {
      q = std::to_string(c.quantize) + "-bit lattice quantisation in blocks of " + std::to_string(sc_.quant_block) +
          ", ";
      if (codec_.adaptive()) {
        q += "adaptive step";
      } else {
        char buf[96];
        std::snprintf(buf, sizeof buf, "e = %g (safe radius %g)", sc_.quant_step,
                      LatticeQuantizer(c.quantize, sc_.quant_step).safe_radius());
        q += buf;
      }
    }
    std::printf("swarm: %s, H = %g (%s), %s averaging, %s\n", graph_.describe().c_str(), c.local_steps,
                name_of(c.local_steps_dist), name_of(c.swarm_mode), q.c_str());
    std::fflush(stdout);
  }

  // The keys of an evaluation's record.
  nlohmann::json keys(double consensus) {
    const int P = r_.workers();
    const SwarmStats st = stats();
    int64_t worst = 0;
    for (int64_t b : st.bytes_sent) worst = std::max(worst, b);
    nlohmann::json j{
        {"consensus_distance", consensus},
        {"bytes_total", st.bytes_total()},
        {"bytes_per_worker", double(st.bytes_total()) / P},
        {"bytes_per_worker_max", worst},
        {"interactions", st.interactions},
        {"interactions_by_message", st.by_message},
        {"local_steps", st.local_steps},
        {"steps_by_node", st.steps_by_node},
        {"bytes_by_node", st.bytes_sent},
        {"nonfinite_steps", st.nonfinite},
        {"out_of_range", st.out_of_range},
        {"out_of_range_fraction", st.coordinates_sent ? double(st.out_of_range) / double(st.coordinates_sent) : 0.0},
        {"fallback_blocks", st.fallback_blocks},
        {"fallback_fraction", st.blocks_sent ? double(st.fallback_blocks) / double(st.blocks_sent) : 0.0},
        {"fallback_bytes", st.fallback_bytes}};
    // Counting values decoded outside the safe range needs both ends of a
    // transfer: one process has them, and so do ranks that share memory;
    // messages between ranks do not.
    if (st.by_message > 0) j.erase("out_of_range"), j.erase("out_of_range_fraction");
    return j;
  }

  Run& r_;
  const SwarmConfig sc_;
  const GossipGraph graph_;
  const SwarmCodec codec_;
  SwarmHooks hooks_;
  std::unique_ptr<SwarmEngine> local_;
  std::unique_ptr<MpiSwarm> far_;
  SwarmSetup setup_;  // the drivers' side of the nodes (in one process)
  std::vector<float> avg_;
  std::mutex publish_mu_;
  double last_consensus_ = 0;
};
}  // namespace

std::unique_ptr<Algorithm> make_swarm(Run& r) { return std::make_unique<SwarmAlgorithm>(r); }

}  // namespace adasync
