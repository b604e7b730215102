// Runtime theory (ALGORITHMS.md section 3): the expected wall time per PS
// update of each variant when worker compute times X are i.i.d.
//
// Closed forms where they exist (exp, shifted-exp, and the renewal results
// that hold for any X); the Monte Carlo estimate for any straggler model runs
// the virtual driver (drivers/simulate.h).
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/engine/aggregator.h"
#include "runtime/straggler.h"

namespace adasync::theory {

double harmonic(int n);  // H_n = 1 + 1/2 + ... + 1/n (H_0 = 0)

// E[T] per update, or NaN where ALGORITHMS.md gives no closed form
// ("simulate"). `base` is a fixed time added to every draw (a shift).
double expected_time(Variant v, int workers, int k, const StragglerSpec& spec, double base = 0);

// E[T] per update from observed compute times `xs` (any distribution, at
// least one): K mean(X) / P for async and the k-batch variants (renewal), and
// E[X_{K:P}] for sync, k-sync and k-async (an upper bound for k-async under
// new-longer-than-used times), computed exactly for X drawn from the
// empirical distribution of xs. For k-batch-sync the renewal form is exact
// under Exp times and an approximation otherwise.
double expected_time_observed(Variant v, int workers, int k, std::vector<double> xs);
// The same for every K at once (index K = 1..P; O(n P)).
std::vector<double> expected_times_observed(Variant v, int workers, std::vector<double> xs);

// E[X_{K:P}] for X uniform over the (sorted) values xs: one K, or all (index K).
double empirical_order_stat(const std::vector<double>& sorted_xs, int k, int workers);
std::vector<double> empirical_order_stats(const std::vector<double>& sorted_xs, int workers);

}  // namespace adasync::theory
