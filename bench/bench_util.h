// Small helpers shared by the table-printing benchmarks.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace adasync::bench {

// Median wall time of f() over `reps` runs after `warmup` unmeasured ones;
// prepare() (untimed) runs before each, e.g. to evict the caches.
template <class F, class P>
double median_seconds(F&& f, int reps, int warmup, P&& prepare) {
  std::vector<double> t;
  for (int i = 0; i < warmup + reps; ++i) {
    prepare();
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= warmup) t.push_back(dt);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <class F>
double median_seconds(F&& f, int reps, int warmup = 2) {
  return median_seconds(f, reps, warmup, [] {});
}

}  // namespace adasync::bench
