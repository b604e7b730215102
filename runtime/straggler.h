// Straggler models: the distribution of a worker's compute time per
// mini-batch (virtual clock) or of the delay injected on top of the real
// compute (real clock).
//
// Spec strings (plain numbers are seconds; ms, us and s suffixes accepted):
//   none                              no delay
//   const:value=20ms                  a fixed time
//   exp:mean=20ms                     exponential
//   shifted-exp:shift=0.5,mean=1      shift + exponential (mean of the exp part)
//   pareto:scale=10ms,shape=2.5       Pareto (x_m, alpha); alpha > 1 for a finite mean
//   uniform:min=10ms,max=30ms
//   trace:path=FILE                   per-worker times; line i = times of worker i,
//                                     separated by spaces or commas, reused cyclically
// Heterogeneous workers: slowdown factors multiply each worker's draws
// ("--slowdown 1,1,2,4", the last factor repeats for further workers).
// Each worker draws from its own Rng stream, so the sequence of worker w's
// times does not depend on the other workers or on thread timing.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/rng.h"

namespace adasync {

struct StragglerSpec {
  enum class Kind { None, Const, Exp, ShiftedExp, Pareto, Uniform, Trace } kind = Kind::None;
  double a = 0, b = 0;                  // const: a; exp: a=mean; shifted: a=shift, b=mean; pareto: a=scale, b=shape; uniform: [a, b]
  std::vector<std::vector<double>> trace;  // per worker
  std::string text;                     // the spec as given

  double mean() const;  // E[X] for one draw (slowdown 1); trace: mean of all entries
  bool is_none() const { return kind == Kind::None; }
};

// Parses a spec; throws UsageError naming `flag` with what was expected.
StragglerSpec parse_straggler(const std::string& text, const std::string& flag);
// Parses "1,1,2,4" (positive factors).
std::vector<double> parse_slowdown(const std::string& text, const std::string& flag);
// Parses "20ms", "0.5", "3s", "100us" into seconds; throws UsageError naming flag.
double parse_seconds(const std::string& text, const std::string& flag);

// The per-worker sampler of compute times.
class Straggler {
 public:
  Straggler(StragglerSpec spec, std::vector<double> slowdown, int workers, uint64_t seed);
  // The next time of worker w (seconds, >= 0).
  double draw(int w);
  const StragglerSpec& spec() const { return spec_; }
  double slowdown(int w) const;

  // Per-worker RNG state and trace positions, for checkpoints.
  std::vector<uint64_t> state() const;
  void set_state(const std::vector<uint64_t>& s);

 private:
  StragglerSpec spec_;
  std::vector<double> slowdown_;
  std::vector<Rng> rng_;
  std::vector<uint64_t> trace_pos_;
};

}  // namespace adasync
