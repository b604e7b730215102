// SwarmSGD over MPI: this host's worker ranks' nodes in one MPI shared-memory
// window (MPI_Win_allocate_shared on the host's worker ranks). Per node a
// process-shared robust lock, the model, the published copy and the learnt
// distances, each on its own cache lines. Every worker rank of the host
// builds it together; each initialises its own nodes' locks, and ready() is
// the barrier after which other ranks may use them.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <vector>

#include "runtime/algorithms/swarm.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

class SharedNodes {
 public:
  // This rank holds nodes [first, last) of `nodes`, n floats a model and
  // `blocks` learnt distances.
  SharedNodes(MpiWorld& world, int nodes, size_t n, size_t blocks, int first, int last);
  // Indexed by node: those of this host's ranks (this one's included) have a lock.
  const std::vector<SwarmSharedNode>& nodes() const { return nodes_; }
  // Every rank of the host has set its nodes (locks, models): they may be used.
  void ready();
  // At a clean end only (collective: a lost rank would never join; the job
  // is aborted then, and the window goes with the processes).
  void close();

 private:
  MPI_Win win_ = MPI_WIN_NULL;
  std::vector<SwarmSharedNode> nodes_;
};

}  // namespace adasync
