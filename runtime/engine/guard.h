// The stability guard of AdaSync under the stale variants (k-async,
// k-batch-async): K sets the staleness, and delayed gradient descent diverges
// once step x curvature x delay passes a constant (ALGORITHMS.md section 5).
// A K chosen too small, by hand or from a curvature read before the network
// sharpened, shows itself as a loss that rises exponentially; the guard sees
// it in the counted gradients' losses within a round of P of them and doubles
// K, which halves the staleness.
//
// It fires when the mean of the last P counted losses exceeds the reference
// (the loss where the current K began) by more than a half plus z standard
// errors (a stable descent at a constant rate does not bring the loss back
// half again above where K began; an exponential rise passes any such factor
// within a few updates). After firing it reads only gradients computed after
// the change (the stale ones still in flight come from before it), takes the
// mean of the first P of them as a baseline, and fires again only when the
// loss rises above it (still diverging at the new K; recovering, it falls). Non-finite gradients are not its
// signal: they come from faulty workers too, and the run drops them.
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <vector>

#include "runtime/engine/schedule.h"

namespace adasync {

class StabilityGuard {
 public:
  StabilityGuard(int workers, double z) : workers_(workers), z_(z) {}

  // A counted gradient's loss, computed at version tau.
  void on_loss(int64_t tau, float loss);
  // The loss where the current K began (a K change's window; NaN: keep the last).
  void set_reference(double loss);
  bool has_reference() const { return std::isfinite(reference_); }
  // After update `version` at clock time `now` with K = k_now: a doubling of K when the run is diverging.
  std::optional<KChange> check(double now, int64_t version, int k_now);

  std::vector<double> state() const;
  void set_state(const std::vector<double>& s);

  static constexpr double kRise = 0.5;  // the relative rise over the reference that is no noise

 private:
  int workers_;
  double z_;
  double reference_ = NAN;   // F where the current K began
  double baseline_ = NAN;    // the first P losses after it fired (NaN: none yet or not fired since K began)
  bool wait_baseline_ = false;
  int64_t fired_at_ = 0;     // the version it last fired at: older gradients are not read
  std::vector<double> recent_;  // the last P counted losses, a ring
  size_t next_ = 0, filled_ = 0;
};

}  // namespace adasync
