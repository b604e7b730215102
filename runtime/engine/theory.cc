#include "runtime/engine/theory.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>


namespace adasync::theory {

double harmonic(int n) {
  double h = 0;
  for (int i = 1; i <= n; ++i) h += 1.0 / i;
  return h;
}

double expected_time(Variant v, int P, int K, const StragglerSpec& s, double base) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (v == Variant::Sync) K = P;
  if (v == Variant::Async) K = 1;
  const bool exp = s.kind == StragglerSpec::Kind::Exp;
  const bool shifted = s.kind == StragglerSpec::Kind::ShiftedExp;
  const double mean_exp = exp ? s.a : (shifted ? s.b : 0);  // 1/mu
  const double shift = base + (shifted ? s.a : 0);
  const double order_stat = (harmonic(P) - harmonic(P - K)) * mean_exp;  // E[X_{K:P}] - shift
  switch (v) {
    case Variant::Sync:
    case Variant::KSync:
      if (exp || shifted) return shift + order_stat;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const) return base + s.mean();
      return nan;
    case Variant::KBatchSync:
      if (exp && shift == 0) return K * mean_exp / P;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const)
        return (base + s.mean()) * std::ceil(double(K) / P);
      return nan;
    case Variant::KAsync:
      if (exp && shift == 0) return order_stat;
      if (s.kind == StragglerSpec::Kind::None || s.kind == StragglerSpec::Kind::Const) return base + s.mean();
      return nan;
    case Variant::Async:
    case Variant::KBatchAsync:
      // Renewal: P workers each deliver one gradient per E[X]; an update takes K of them.
      return K * (base + s.mean()) / P;
  }
  return nan;
}

std::vector<double> empirical_order_stats(const std::vector<double>& xs, int P) {
  // P(X_{K:P} <= x_(i)) = P(Bin(P, i/n) >= K): each x_(i) weighs the step of
  // that tail, for every K at once from one binomial pmf per i (O(n P)).
  const size_t n = xs.size();
  std::vector<double> e(size_t(P) + 1, 0.0), prev(size_t(P) + 2, 0.0), tail(size_t(P) + 2, 0.0);
  std::vector<double> log_choose(size_t(P) + 1);
  for (int j = 0; j <= P; ++j) log_choose[size_t(j)] = std::lgamma(P + 1.0) - std::lgamma(j + 1.0) - std::lgamma(P - j + 1.0);
  for (size_t i = 0; i < n; ++i) {
    const double p = double(i + 1) / double(n);
    tail[size_t(P) + 1] = 0;
    for (int j = P; j >= 0; --j) {
      const double pmf = p >= 1 ? (j == P ? 1.0 : 0.0)
                                : std::exp(log_choose[size_t(j)] + j * std::log(p) + (P - j) * std::log1p(-p));
      tail[size_t(j)] = tail[size_t(j) + 1] + pmf;
    }
    for (int k = 1; k <= P; ++k) e[size_t(k)] += xs[i] * (tail[size_t(k)] - prev[size_t(k)]);
    prev.swap(tail);
  }
  e[0] = std::numeric_limits<double>::quiet_NaN();
  return e;
}

double empirical_order_stat(const std::vector<double>& xs, int K, int P) { return empirical_order_stats(xs, P)[size_t(K)]; }

std::vector<double> expected_times_observed(Variant v, int P, std::vector<double> xs) {
  std::vector<double> t(size_t(P) + 1, std::numeric_limits<double>::quiet_NaN());
  if (xs.empty()) return t;
  if (v == Variant::Async || v == Variant::KBatchAsync || v == Variant::KBatchSync) {
    double sum = 0;
    for (double x : xs) sum += x;
    // Async is K = 1 whatever K says.
    for (int k = 1; k <= P; ++k) t[size_t(k)] = double(v == Variant::Async ? 1 : k) * sum / double(xs.size()) / double(P);
    return t;
  }
  std::sort(xs.begin(), xs.end());
  t = empirical_order_stats(xs, P);
  if (v == Variant::Sync) std::fill(t.begin() + 1, t.end(), t[size_t(P)]);  // K = P
  return t;
}

double expected_time_observed(Variant v, int P, int K, std::vector<double> xs) {
  return expected_times_observed(v, P, std::move(xs))[size_t(K)];
}

}  // namespace adasync::theory
