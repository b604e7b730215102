// Built without MPI: the MPI transport says so.
#include "runtime/algorithms/swarm.h"
#include "runtime/transport/mpi/mpi.h"

namespace adasync {

bool MpiWorld::available() { return false; }
MpiWorld::MpiWorld() {
  throw UsageError("MPI transport: this build has no MPI (install libopenmpi-dev and openmpi-bin, then rebuild)");
}
MpiWorld::~MpiWorld() = default;
std::pair<int, int> MpiWorld::workers_of(int, int) const { return {0, 0}; }
int MpiWorld::rank_of(int, int) const { return 0; }
bool MpiWorld::agree(bool ok) { return ok; }
std::vector<int> MpiWorld::ranks_differing(const std::string&) { return {}; }
void MpiWorld::stop_workers() {}
double run_mpi_ps(DriverSetup&, MpiWorld&, const std::vector<uint64_t>&) {
  throw UsageError("MPI transport: this build has no MPI");
}
void serve_worker_group(WorkerGroup&, MpiWorld&) { throw UsageError("MPI transport: this build has no MPI"); }
struct MpiSwarm::Impl {};
MpiSwarm::MpiSwarm(MpiWorld&, const SwarmConfig&, int, size_t) { throw UsageError("MPI transport: this build has no MPI"); }
MpiSwarm::~MpiSwarm() = default;
void MpiSwarm::restore(const nlohmann::json&, const Checkpoint&) {}
void MpiSwarm::start(const float*, const std::vector<uint64_t>&) {}
nlohmann::json MpiSwarm::save(Checkpoint*) { return {}; }
std::vector<uint64_t> MpiSwarm::positions() { return {}; }
double MpiSwarm::run(SwarmListener&) { return 0; }
void MpiSwarm::average(float*, double*) {}
SwarmStats MpiSwarm::stats() { return {}; }
void MpiSwarm::release() {}
const std::vector<int>& MpiSwarm::lost() const {
  static const std::vector<int> none;
  return none;
}
void serve_swarm_group(SwarmGroup&, MpiWorld&) { throw UsageError("MPI transport: this build has no MPI"); }

}  // namespace adasync
