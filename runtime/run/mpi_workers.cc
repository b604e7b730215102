// --transport mpi: the checks every rank makes before set-up, and the life of
// a worker rank (its share of the workers, computing for rank 0's PS).
#include <algorithm>
#include <cstdio>
#include <thread>

#include "runtime/algorithms/swarm.h"
#include "runtime/run/run.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

std::unique_ptr<MpiWorld> start_mpi(const TrainConfig& c, int argc, char** argv) {
  auto world = std::make_unique<MpiWorld>();
  const int rank = world->rank();
  if (world->size() < 2)
    throw UsageError("--transport mpi: expected 2 or more processes (run under mpirun -np N: rank 0 runs the "
                     "parameter server, the others the workers), found " + std::to_string(world->size()));
  std::string flags;
  for (int i = 1; i < argc; ++i) flags += std::string(argv[i]) + '\n';
  const std::vector<int> differ = world->ranks_differing(flags);
  std::string problem;
  if (!differ.empty()) {
    problem = "--transport mpi: every rank must be started with the same flags; rank(s)";
    for (int r : differ) problem += " " + std::to_string(r);
    problem += " got other flags than rank 0";
  } else if (c.workers < world->worker_ranks()) {
    problem = "--workers " + std::to_string(c.workers) + " for " + std::to_string(world->worker_ranks()) +
              " worker rank(s): every rank after rank 0 needs at least one worker (use --workers " +
              std::to_string(world->worker_ranks()) + " or more, or mpirun -np " + std::to_string(c.workers + 1) +
              ")";
  }
  // The flags are the same everywhere, so every rank reaches the same verdict.
  if (differ.empty() && problem.empty()) {
    try {
      validate(c);
    } catch (const UsageError& e) {
      problem = e.what();
    }
  }
  if (!world->agree(problem.empty())) {
    if (rank == 0) std::fprintf(stderr, "trainer: %s\n", problem.c_str());
    world->workers_stopped = true;
    return nullptr;
  }
  return world;
}

int run_worker_rank(const TrainConfig& cfg, MpiWorld& world) {
  TrainConfig c = cfg;
  const int P = c.workers;
  const auto [first, last] = world.workers_of(world.rank(), P);
  const int L = last - first;
  std::shared_ptr<const DataSplit> data;
  std::unique_ptr<ThreadPool> pool;
  std::vector<std::unique_ptr<Context>> contexts;
  std::vector<std::unique_ptr<ModelWorker>> replicas;
  std::unique_ptr<ParamServer> local;
  std::unique_ptr<Straggler> straggler;
  std::vector<Sampler> samplers;
  FaultPlan faults;
  bool ok = true;
  std::string error;
  int code = 2;
  try {
    data = std::make_shared<const DataSplit>(load_dataset(c.dataset, c.data_dir, c.seed));
    const int gpus = cuda_device_count();
    bool use_cuda = false;
    if (c.devices == Devices::Cuda) {
      if (gpus == 0) throw UsageError("--devices cuda: no usable GPU: " + cuda_unavailable_reason());
      use_cuda = true;
    } else if (c.devices == Devices::Auto) {
      use_cuda = gpus > 0;
    }
    const int threads = c.threads > 0 ? c.threads : int(std::max(1u, std::thread::hardware_concurrency()));
    const bool parallel = !use_cuda && L > 1;
    pool = std::make_unique<ThreadPool>(parallel ? 1 : threads);
    for (int i = 0; i < L; ++i) {
      const int w = first + i;
      if (use_cuda) {
        contexts.push_back(Context::cuda(i % gpus, "w" + std::to_string(w)));
        contexts.back()->deterministic = c.deterministic;
        contexts.back()->use_graphs = c.cuda_graphs;
      } else {
        contexts.push_back(Context::cpu(parallel ? nullptr : pool.get()));
      }
      replicas.push_back(std::make_unique<ModelWorker>(w, *contexts.back(), c.model, data->train, c.batch));
      replicas.back()->set_augmentation(make_augmentation(c, *data));
      samplers.push_back(make_sampler(c, data->train.size(), w));
    }
    const size_t n = replicas[0]->num_params();
    OptimizerConfig plain;
    plain.momentum = 0;
    local = std::make_unique<ParamServer>(n, std::vector<float>(n).data(),
                                          std::make_unique<HostOptimizer>(plain, n, nullptr), 2 * L);
    straggler = std::make_unique<Straggler>(c.straggler.spec, c.slowdown.factors, P, c.seed);
    faults = FaultPlan(c.inject.faults);
  } catch (const UsageError& e) {
    ok = false, error = e.what();
  } catch (const DataError& e) {
    ok = false, error = e.what();
  } catch (const std::exception& e) {
    ok = false, error = std::string("error: ") + e.what(), code = 1;
  }
  if (!ok) std::fprintf(stderr, "trainer (rank %d on %s): %s\n", world.rank(), world.host().c_str(), error.c_str());
  if (!world.agree(ok)) return ok ? 2 : code;

  std::vector<GradientWorker*> workers;
  for (auto& r : replicas) workers.push_back(r.get());
  try {
    if (c.swarm) {
      SwarmConfig sc = swarm_config(c);
      sc.layout = replicas[0]->model().layout();
      SwarmGroup g;
      g.cfg = &sc;
      g.first = first;
      g.nodes = P;
      g.workers = workers;
      g.samplers = &samplers;
      g.straggler = straggler.get();
      g.faults = faults.empty() ? nullptr : &faults;
      g.params = local->size();
      g.shared_memory = c.shared_memory;
      serve_swarm_group(g, world);
    } else {
      WorkerGroup g;
      g.first = first;
      g.workers = workers;
      g.samplers = &samplers;
      g.straggler = straggler.get();
      g.faults = faults.empty() ? nullptr : &faults;
      g.variant = c.variant;
      g.params = local->size();
      g.local = local.get();
      serve_worker_group(g, world);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trainer (rank %d on %s): error: %s\n", world.rank(), world.host().c_str(), e.what());
    return 1;
  }
  return 0;
}

}  // namespace adasync
