// Device sync: sync SGD on the GPUs (NCCL all-reduce and the update on every
// replica), no parameter server in the loop. The PS holds a copy that is
// refreshed for each evaluation, each checkpoint and at the end; the
// counters read as if each step were a sync update of P gradients, so
// checkpoints and the summary read like a PS run's.
#include "runtime/algorithms/device_sync.h"
#include "runtime/run/run.h"

namespace adasync {

namespace {
class DeviceSyncAlgorithm : public Algorithm {
 public:
  explicit DeviceSyncAlgorithm(Run& r)
      : r_(r),
        sync_(workers(r), r.cfg.opt, r.ps->latest()->data),
        host_(r.ps->size()),
        version_(r.ps->version()),
        base_(r.agg->stats()) {
    if (r.cfg.resume && host_velocity() != nullptr) sync_.velocity_from_host(*host_velocity());
  }

  double train() override {
    Run& r = r_;
    const int P = r.workers();
    std::vector<std::vector<int32_t>> batches(static_cast<size_t>(P));
    std::vector<double> delays(static_cast<size_t>(P));
    double now = 0;
    for (;;) {
      now = r.wall.seconds();
      if (r.supervisor->should_stop(version_, version_ * P, now)) break;
      for (int w = 0; w < P; ++w) {
        Sampler& smp = r.samplers[size_t(w)];
        const uint64_t b = smp.next(&batches[size_t(w)]);
        r.replicas[size_t(w)]->set_epoch(smp.epoch_of(b));
        delays[size_t(w)] = r.straggler->draw(w);
      }
      const LrConfig& lc = r.policy->lr_rule().config();  // the same schedule as the PS applies
      const double epoch = lc.grads_per_epoch > 0 ? double(version_ * P) / lc.grads_per_epoch : 0;
      sync_.step(batches, delays, float(r.cfg.lr * lr_multiplier(lc, epoch)));
      ++version_;
      r.reporter->add_losses(sync_.completed());
      // Steady state from the third step: after the two eager warm-up steps and the graph capture.
      r.reporter->count_steps(version_, version_ * P, P, r.wall.seconds(), version_ == 3);
      r.supervisor->after_step(version_, now);
    }
    r.reporter->add_losses(sync_.drain());
    return r.wall.seconds();
  }

  // Brings the PS (parameters, momentum) up to the devices' state.
  SnapshotPtr publish(nlohmann::json*) override {
    r_.reporter->add_losses(sync_.drain());
    sync_.params_to_host(host_.data());
    r_.ps->reset(host_.data(), version_);
    if (std::vector<float>* v = host_velocity()) *v = sync_.velocity_to_host();
    r_.ps->optimizer().set_steps(version_);
    return r_.ps->latest();
  }

  AggregatorStats counts() override {
    const int P = r_.workers();
    AggregatorStats st = base_;
    st.updates = version_;
    st.counted = st.pushes = version_ * P;
    for (int w = 0; w < P; ++w) st.counted_by_worker[size_t(w)] = st.pushes_by_worker[size_t(w)] = version_;
    return st;
  }

  std::vector<uint64_t> positions() override {
    std::vector<uint64_t> p;
    for (const Sampler& s : r_.samplers) p.push_back(s.position());
    return p;
  }

 private:
  static std::vector<ModelWorker*> workers(Run& r) {
    std::vector<ModelWorker*> ws;
    for (auto& w : r.replicas) ws.push_back(w.get());
    return ws;
  }
  std::vector<float>* host_velocity() {
    auto st = r_.ps->optimizer().state();
    return st.empty() ? nullptr : st[0].second;
  }

  Run& r_;
  DeviceSync sync_;
  std::vector<float> host_;
  int64_t version_;
  const AggregatorStats base_;  // a resumed run's
};
}  // namespace

std::unique_ptr<Algorithm> make_device_sync(Run& r) { return std::make_unique<DeviceSyncAlgorithm>(r); }

}  // namespace adasync
