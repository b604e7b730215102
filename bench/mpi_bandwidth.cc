// Push and pull between two ranks, as --transport mpi sends them (a small
// header, then the flat float array; the receiver probes, then receives
// straight into its slot), next to MPI's own ping-pong of the same bytes
// (plain MPI_Send and MPI_Recv, half a round trip: the reference the
// transport is held to, >= 70%) and a plain memcpy on the same machine.
//
//   mpirun -np 2 build/bench/mpi_bandwidth [--reps 20]
//
// GB/s counts the array's bytes once. Push: rank 1 -> rank 0; pull: rank 0 ->
// rank 1. Each is the median of --reps timed transfers, each timed by the
// receiver from a zero-byte "go" to the last byte in.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

struct Header {
  int32_t worker, finite;
  int64_t tau;
  uint64_t batch;
  float loss, unused;
};

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

MPI_Datatype two_part(const Header* h, const float* data, size_t n) {
  MPI_Aint a[2];
  MPI_Get_address(h, &a[0]);
  MPI_Get_address(data, &a[1]);
  int len[2] = {int(sizeof(Header)), int(n * sizeof(float))};
  MPI_Datatype types[2] = {MPI_BYTE, MPI_BYTE}, t;
  MPI_Type_create_struct(2, len, a, types, &t);
  MPI_Type_commit(&t);
  return t;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Seconds of one transfer of n floats from rank `from` to rank `to`, median
// over reps (on every rank). two_messages: the header, then the array as its
// own contiguous message (what the transport sends).
double transfer(int rank, int from, int to, size_t n, int reps, bool two_messages) {
  std::vector<float> buf(n, 1.0f);
  Header h{};
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == to) {
      const double t0 = now();
      MPI_Send(nullptr, 0, MPI_BYTE, from, 1, MPI_COMM_WORLD);  // go
      MPI_Message msg;
      MPI_Status st;
      MPI_Mprobe(from, 2, MPI_COMM_WORLD, &msg, &st);
      if (two_messages) {
        MPI_Mrecv(&h, int(sizeof h), MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        MPI_Recv(buf.data(), int(n), MPI_FLOAT, from, 3, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      } else {
        MPI_Datatype type = two_part(&h, buf.data(), n);
        MPI_Mrecv(MPI_BOTTOM, 1, type, &msg, MPI_STATUS_IGNORE);
        MPI_Type_free(&type);
      }
      if (i >= 2) t.push_back(now() - t0);
    } else if (rank == from) {
      MPI_Recv(nullptr, 0, MPI_BYTE, to, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (two_messages) {
        MPI_Send(&h, int(sizeof h), MPI_BYTE, to, 2, MPI_COMM_WORLD);
        MPI_Send(buf.data(), int(n), MPI_FLOAT, to, 3, MPI_COMM_WORLD);
      } else {
        MPI_Datatype type = two_part(&h, buf.data(), n);
        MPI_Send(MPI_BOTTOM, 1, type, to, 2, MPI_COMM_WORLD);
        MPI_Type_free(&type);
      }
    }
  }
  double s = rank == to ? median(t) : 0;
  MPI_Bcast(&s, 1, MPI_DOUBLE, to, MPI_COMM_WORLD);
  return s;
}

// Half the round trip of n floats between ranks 0 and 1 (plain send and
// receive each way), median over reps (on every rank).
double ping_pong(int rank, size_t n, int reps) {
  std::vector<float> buf(n, 1.0f);
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    MPI_Barrier(MPI_COMM_WORLD);
    const double t0 = now();
    if (rank == 0) {
      MPI_Send(buf.data(), int(n), MPI_FLOAT, 1, 4, MPI_COMM_WORLD);
      MPI_Recv(buf.data(), int(n), MPI_FLOAT, 1, 5, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (i >= 2) t.push_back((now() - t0) / 2);
    } else if (rank == 1) {
      MPI_Recv(buf.data(), int(n), MPI_FLOAT, 0, 4, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      MPI_Send(buf.data(), int(n), MPI_FLOAT, 0, 5, MPI_COMM_WORLD);
    }
  }
  double s = rank == 0 ? median(t) : 0;
  MPI_Bcast(&s, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  return s;
}

double copy_seconds(size_t n, int reps) {
  std::vector<float> a(n, 1.0f), b(n, 0.0f);
  std::vector<double> t;
  for (int i = 0; i < reps + 2; ++i) {
    const double t0 = now();
    std::memcpy(b.data(), a.data(), n * sizeof(float));
    if (i >= 2) t.push_back(now() - t0);
    a[size_t(i) % n] = float(i);  // keep the copies live
  }
  return median(t) + 0 * double(b[0]);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int reps = 20;
  bool two = true;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--reps" && i + 1 < argc) reps = std::max(3, std::atoi(argv[i + 1]));
    if (std::string(argv[i]) == "--one-message") two = false;  // header and array as one struct datatype
  }
  if (size != 2) {
    if (rank == 0) std::fprintf(stderr, "mpi_bandwidth: run with mpirun -np 2 (found %d ranks)\n", size);
    MPI_Finalize();
    return 2;
  }
  struct Case {
    const char* name;
    size_t floats;
  };
  const Case cases[] = {{"1M floats (4 MB)", size_t(1) << 20},
                        {"cnn: 3.27M floats (13 MB)", 3274634},
                        {"26M floats (105 MB)", size_t(26) << 20}};
  if (rank == 0) {
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    std::string first(lib, size_t(len));
    first = first.substr(0, first.find_first_of(",\n"));
    std::printf("MPI push and pull between 2 ranks on one host (%s), %s, median of %d; MPI ping-pong (half a round "
                "trip) and memcpy on rank 0 in the same run\n",
                first.c_str(), two ? "header + contiguous array" : "one struct-datatype message", reps);
    std::printf("%-28s %12s %12s %12s %12s %10s %10s %10s\n", "message", "memcpy GB/s", "pingpong GB/s", "push GB/s",
                "pull GB/s", "push/pp", "pull/pp", "push/copy");
  }
  for (const Case& c : cases) {
    const double bytes = double(c.floats) * sizeof(float);
    const double pp = ping_pong(rank, c.floats, reps);
    const double push = transfer(rank, 1, 0, c.floats, reps, two);
    const double pull = transfer(rank, 0, 1, c.floats, reps, two);
    double copy = rank == 0 ? copy_seconds(c.floats, reps) : 0;
    MPI_Bcast(&copy, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0)
      std::printf("%-28s %12.2f %12.2f %12.2f %12.2f %9.0f%% %9.0f%% %9.0f%%\n", c.name, bytes / copy / 1e9,
                  bytes / pp / 1e9, bytes / push / 1e9, bytes / pull / 1e9, 100 * pp / push, 100 * pp / pull,
                  100 * copy / push);
  }
  MPI_Finalize();
  return 0;
}
