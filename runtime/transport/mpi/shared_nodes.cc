#include "runtime/transport/mpi/shared_nodes.h"

#include <string>

#include "runtime/transport/mpi/mpi_internal.h"

namespace adasync {
using namespace mpi_detail;
namespace {
size_t round_up(size_t b) { return (b + 63) / 64 * 64; }
}  // namespace

SharedNodes::SharedNodes(MpiWorld& world, int nodes, size_t n, size_t blocks, int first, int last)
    : nodes_(size_t(nodes)) {
  const size_t lock_bytes = round_up(sizeof(pthread_mutex_t)), model_bytes = round_up(n * sizeof(float));
  const size_t stride = lock_bytes + 2 * model_bytes + round_up(blocks * sizeof(float));
  int size = 0;
  MPI_Comm_size(g_host_workers, &size);
  std::vector<int> ranks(size_t(size), 0);
  int me = world.rank();
  check(MPI_Allgather(&me, 1, MPI_INT, ranks.data(), 1, MPI_INT, g_host_workers), "shared memory");
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");  // each rank's part in its own pages
  void* mine = nullptr;
  const int rc =
      MPI_Win_allocate_shared(MPI_Aint(size_t(last - first) * stride), 1, info, g_host_workers, &mine, &win_);
  MPI_Info_free(&info);
  check(rc, "a shared-memory window for the SwarmSGD nodes (--no-shared-memory: exchanges as messages)");
  for (int h = 0; h < size; ++h) {
    MPI_Aint bytes = 0;
    int unit = 0;
    char* base = nullptr;
    check(MPI_Win_shared_query(win_, h, &bytes, &unit, &base), "shared memory");
    const auto [f, l] = world.workers_of(ranks[size_t(h)], nodes);
    for (int j = f; j < l; ++j) {
      char* p = base + size_t(j - f) * stride;
      auto* x = reinterpret_cast<float*>(p + lock_bytes);
      nodes_[size_t(j)] = SwarmSharedNode{reinterpret_cast<pthread_mutex_t*>(p), x, x + model_bytes / sizeof(float),
                                          x + 2 * model_bytes / sizeof(float)};
    }
  }
  // Robust: a killed rank's lock is not held for ever.
  for (int j = first; j < last; ++j) init_shared_lock(nodes_[size_t(j)].lock);
}

void SharedNodes::ready() { check(MPI_Barrier(g_host_workers), "shared memory"); }

void SharedNodes::close() { check(MPI_Win_free(&win_), "shared memory"); }

}  // namespace adasync
