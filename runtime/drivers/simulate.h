// The runtime theory's Monte Carlo estimate (ALGORITHMS.md section 3): the
// expected wall time per PS update for any straggler model, obtained by
// running the virtual clock itself with workers that compute nothing, so the
// estimate exercises exactly the code that trains.
#pragma once

#include <cstdint>

#include "runtime/engine/aggregator.h"
#include "runtime/straggler.h"

namespace adasync::theory {

struct Estimate {
  double mean = 0;      // time per update
  double std_err = 0;   // of the mean, from batch means
  int64_t updates = 0;
};
// Simulates `updates` updates on the virtual clock and measures time per update.
// `ps_time`: the parameter server's service time per update (a queue forms).
Estimate simulate(Variant v, int workers, int k, const StragglerSpec& spec, int64_t updates, uint64_t seed,
                  double base = 0, double ps_time = 0);

}  // namespace adasync::theory
