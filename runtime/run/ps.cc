// The parameter server's algorithm: workers push to the update loop, driven
// by the virtual clock, by threads, or by worker ranks over MPI.
#include "runtime/run/run.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

namespace {
class PsAlgorithm : public Algorithm {
 public:
  explicit PsAlgorithm(Run& r) : r_(r) {}

  double train() override {
    Run& r = r_;
    DriverSetup ds;
    ds.loop = r.loop.get();
    ds.straggler = r.straggler.get();
    ds.samplers = &r.samplers;
    for (auto& w : r.replicas) ds.workers.push_back(w.get());
    ds.hooks = r.supervisor.get();
    ds.base_time = r.cfg.base_time;
    ds.ps_time = r.cfg.ps_time;
    ds.faults = r.faults.empty() ? nullptr : &r.faults;
    ds.positions = r.positions.get();
    ds.time_offset = r.resume_time;
    if (r.resume_state) {
      ds.resume = r.resume_state.get();
      ds.snapshot_of = [&r](int64_t v) {
        auto it = r.resume_snapshots.find(v);
        EXPECTS(it != r.resume_snapshots.end(), "checkpoint lacks the parameters of version " << v);
        return it->second;
      };
    }
    if (r.virtual_clock && ds.base_time == 0 && r.straggler->spec().mean() == 0) ds.base_time = 1e-3;
    if (r.virtual_clock) return run_virtual(ds);
    // Checkpoints read the positions; they start where the samplers are (resume).
    for (int w = 0; w < r.workers(); ++w)
      (*r.positions)[size_t(w)].store(r.samplers[size_t(w)].position(), std::memory_order_relaxed);
    // Every N-th update's snapshot is the parameters as they were: the
    // monitor evaluates each of them.
    const auto version = [&r] { return r.ps->version(); };
    if (r.mpi != nullptr) {
      std::vector<uint64_t> start;
      for (const Sampler& s : r.samplers) start.push_back(s.position());
      return r.supervisor->run_monitored([&] { return run_mpi_ps(ds, *r.mpi, start); }, version, r.resume_time, true);
    }
    return r.supervisor->run_monitored([&] { return run_threads(ds); }, version, r.resume_time, true);
  }

  SnapshotPtr publish(nlohmann::json*) override { return r_.ps->latest(); }
  bool resumes_from_quiet_point() const override { return r_.virtual_clock; }
  AggregatorStats counts() override { return r_.agg->stats(); }
  std::vector<uint64_t> positions() override {
    std::vector<uint64_t> p;
    for (int w = 0; w < r_.workers(); ++w)
      p.push_back(r_.virtual_clock ? r_.samplers[size_t(w)].position()
                                   : (*r_.positions)[size_t(w)].load(std::memory_order_relaxed));
    return p;
  }

 private:
  Run& r_;
};
}  // namespace

std::unique_ptr<Algorithm> make_ps(Run& r) { return std::make_unique<PsAlgorithm>(r); }

}  // namespace adasync
