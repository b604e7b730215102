#include "runtime/engine/guard.h"

#include <algorithm>
#include <sstream>

namespace adasync {

void StabilityGuard::on_loss(int64_t tau, float loss) {
  if (tau < fired_at_) return;
  if (recent_.size() != size_t(workers_)) recent_.assign(size_t(workers_), 0.0);
  recent_[next_] = double(loss);
  next_ = (next_ + 1) % recent_.size();
  filled_ = std::min(filled_ + 1, recent_.size());
}

void StabilityGuard::set_reference(double loss) {
  if (!std::isfinite(loss)) return;
  reference_ = loss;
  baseline_ = NAN, wait_baseline_ = false;
}

std::optional<KChange> StabilityGuard::check(double now, int64_t version, int k_now) {
  if (k_now >= workers_) return std::nullopt;
  const size_t n = filled_;
  double mean = NAN, se = 0;
  if (n == size_t(workers_) && n > 1) {
    double sum = 0, sq = 0;
    for (double x : recent_) sum += x;
    mean = sum / double(n);
    for (double x : recent_) sq += (x - mean) * (x - mean);
    se = std::sqrt(sq / double(n - 1) / double(n));
  }
  if (wait_baseline_ && std::isfinite(mean)) {
    baseline_ = mean, wait_baseline_ = false;
    return std::nullopt;
  }
  const bool rising = std::isfinite(reference_) && std::isfinite(mean) && !wait_baseline_ &&
                      mean > reference_ * (1 + kRise) + z_ * se && !(mean <= baseline_);
  if (!rising) return std::nullopt;
  const int k = std::min(workers_, 2 * k_now);
  std::ostringstream why;
  why.precision(3);
  why << "stability guard: the last " << n << " counted losses average " << mean << " > " << 1 + kRise
      << " x the loss where the schedule's K began " << reference_ << " + " << z_ << " se " << se;
  why << ", K doubled (half the staleness)";
  KChange ch{k_now, k, now, reference_, mean, why.str(), "guard"};
  // The next test reads P losses counted after this change, and only a loss still rising fires again.
  baseline_ = NAN, wait_baseline_ = true;
  fired_at_ = version;
  filled_ = 0;
  return ch;
}

std::vector<double> StabilityGuard::state() const {
  std::vector<double> s{reference_, baseline_, wait_baseline_ ? 1.0 : 0.0, double(fired_at_), double(next_),
                        double(filled_)};
  s.insert(s.end(), recent_.begin(), recent_.end());
  return s;
}

void StabilityGuard::set_state(const std::vector<double>& s) {
  if (s.size() < 6) return;
  reference_ = s[0], baseline_ = s[1], wait_baseline_ = s[2] != 0, fired_at_ = int64_t(s[3]);
  next_ = size_t(s[4]), filled_ = size_t(s[5]);
  recent_.assign(s.begin() + 6, s.end());
  if (recent_.size() != size_t(workers_)) recent_.assign(size_t(workers_), 0.0), next_ = filled_ = 0;
}

}  // namespace adasync
