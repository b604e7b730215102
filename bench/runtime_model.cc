// runtime_model: time per parameter-server update of every variant and K,
// P = 8 workers with exponential compute times (mean 20 ms), measured with
// the real clock (8 CPU worker threads, a tiny model, injected delays) and
// with the virtual clock, next to the theory of ALGORITHMS.md section 3
// (closed form, or a 200,000-update Monte Carlo where none exists).
//
//   runtime_model [--quick] [--real-seconds 2.5] [--virtual-updates 20000]
#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdio>

#include "runtime/drivers/simulate.h"
#include "runtime/engine/theory.h"
#include "runtime/run/trainer.h"

using namespace adasync;

namespace {
double per_update(const RunSummary& s) {
  return s.updates > 1 ? (s.time - s.first_update_time) / double(s.updates - 1) : NAN;
}
}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  double real_seconds = 2.5;
  int64_t virtual_updates = 20000;
  std::string mean = "20ms";
  CLI::App app{"time per update: real clock, virtual clock and theory"};
  app.add_flag("--quick", quick, "shorter runs (1 s real, 5000 virtual updates)");
  app.add_option("--real-seconds", real_seconds, "wall seconds per real-clock run");
  app.add_option("--virtual-updates", virtual_updates, "updates per virtual-clock run");
  CLI11_PARSE(app, argc, argv);
  if (quick) real_seconds = 1.0, virtual_updates = 5000;

  auto data = std::make_shared<DataSplit>(make_gaussian_classes(4000, 500, 16, 4, 1.5, 1));
  normalize(*data);
  const StragglerSpec spec = parse_straggler("exp:mean=" + mean, "--straggler");
  const int P = 8;
  std::printf("P = %d workers, compute time ~ Exp(mean %s); time per update in ms\n", P, mean.c_str());
  std::printf("%-14s %3s %9s %9s %8s %9s %8s\n", "variant", "K", "theory", "virtual", "v/th", "real", "r/th");
  for (const char* vname : {"sync", "k-sync", "k-batch-sync", "async", "k-async", "k-batch-async"}) {
    const Variant v = parse_variant(vname);
    const std::vector<int> ks = has_k(v) ? std::vector<int>{1, 2, 4, 8} : std::vector<int>{v == Variant::Sync ? P : 1};
    for (int k : ks) {
      double theory = theory::expected_time(v, P, k, spec);
      const bool simulated = std::isnan(theory);
      if (simulated) theory = theory::simulate(v, P, k, spec, 200000, 99).mean;
      TrainConfig c;
      c.model = "linear";
      c.dataset = "gaussian";
      c.batch = 8;
      c.lr = 0.05;
      c.workers = P;
      c.set_variant(vname);
      c.k = k;
      c.straggler = StragglerFlag(spec);
      c.eval_every = "0";
      c.progress = Progress::None;
      c.devices = Devices::Cpu;
      c.clock = ClockKind::Virtual;
      c.max_updates = virtual_updates;
      const double t_virtual = per_update(Trainer(c, data).run());
      c.clock = ClockKind::Real;
      c.max_updates = 0;
      c.time_budget = real_seconds;
      const double t_real = per_update(Trainer(c, data).run());
      std::printf("%-14s %3d %8.2f%s %9.2f %8.3f %9.2f %8.3f\n", vname, k, 1e3 * theory, simulated ? "*" : " ",
                  1e3 * t_virtual, t_virtual / theory, 1e3 * t_real, t_real / theory);
      std::fflush(stdout);
    }
  }
  std::printf("(* Monte Carlo: ALGORITHMS.md gives no closed form. Real-clock times include the workers' own compute\n"
              " and the parameter server's work, so r/th sits a little above 1.)\n");
  return 0;
}
