// ps_apply: the parameter server's hot loop, the fused average of K counted
// gradients plus the optimizer step, in GB/s of memory touched, next to a
// plain multi-threaded memory copy of the same parameter count measured in
// the same run (the ceiling: an update must at least read and write the
// parameters once). Both are timed from cold caches (a 96 MB buffer is
// written between repetitions), so small sizes compare memory with memory
// rather than the copy's cache-resident rerun with the update's larger set.
//
// Bytes touched per update: K gradients and the parameters read, the new
// parameters written, and the optimizer state read and written
// (SGD momentum: 1 array; AMSGrad: 3).
//
//   ps_apply [--sizes 1000000,10000000,100000000] [--ks 1,4,8] [--threads N] [--reps 9]
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <thread>

#include "bench/bench_util.h"
#include "kernels/context.h"
#include "runtime/engine/optimizer.h"

using namespace adasync;

namespace {
std::vector<long> parse_list(const std::string& s) {
  std::vector<long> v;
  std::stringstream ss(s);
  std::string t;
  while (std::getline(ss, t, ',')) v.push_back(std::stol(t));
  return v;
}
}  // namespace

int main(int argc, char** argv) {
  std::string sizes = "1000000,10000000,100000000", ks = "1,4,8";
  int threads = int(std::thread::hardware_concurrency()), reps = 9;
  CLI::App app{"parameter-server apply throughput"};
  app.add_option("--sizes", sizes, "parameter counts");
  app.add_option("--ks", ks, "gradients per update");
  app.add_option("--threads", threads, "threads");
  app.add_option("--reps", reps, "timed repetitions (median)");
  CLI11_PARSE(app, argc, argv);
  ThreadPool pool(threads);
  Buffer<float> evict(MemKind::Host, size_t(24) << 20);
  auto flush = [&] {
    parallel_for(&pool, evict.size(), 1 << 16, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) evict.data()[i] = float(i);
    });
  };

  std::printf("%-11s %-8s %3s %9s %10s %11s %9s\n", "params", "optim", "K", "ms", "GB/s", "copy GB/s", "of copy");
  for (long n : parse_list(sizes)) {
    const size_t N = size_t(n);
    // One parallel copy of N floats: read N, write N.
    Buffer<float> src(MemKind::Host, N), dst(MemKind::Host, N);
    parallel_for(&pool, N, 1 << 16, [&](size_t b, size_t e) {
      for (size_t i = b; i < e; ++i) src.data()[i] = float(i % 97) * 1e-3f, dst.data()[i] = 0.f;
    });
    const double t_copy = bench::median_seconds(
        [&] {
          parallel_for(&pool, N, 1 << 16, [&](size_t b, size_t e) {
            std::memcpy(dst.data() + b, src.data() + b, (e - b) * sizeof(float));
          });
        },
        reps, 2, flush);
    const double copy_gbs = 2.0 * double(N) * 4 / t_copy / 1e9;
    const int kmax = int(parse_list(ks).back());
    std::vector<Buffer<float>> grads;
    for (int l = 0; l < kmax; ++l) {
      grads.emplace_back(MemKind::Host, N);
      float* g = grads.back().data();
      parallel_for(&pool, N, 1 << 16, [&](size_t b, size_t e) {
        for (size_t i = b; i < e; ++i) g[i] = float((i + size_t(l)) % 13) * 1e-4f;
      });
    }
    Buffer<float> w_in(MemKind::Host, N), w_out(MemKind::Host, N);
    std::memcpy(w_in.data(), src.data(), N * 4);
    std::memcpy(w_out.data(), src.data(), N * 4);
    for (const char* name : {"momentum", "amsgrad"}) {
      OptimizerConfig oc;
      oc.name = parse_enum<OptimizerKind>(name, "optimizer");  // momentum: sgd
      oc.momentum = 0.9;
      HostOptimizer opt(oc, N, &pool);
      for (long k : parse_list(ks)) {
        std::vector<const float*> g;
        std::vector<float> c(size_t(k), 1.0f / float(k));
        for (long l = 0; l < k; ++l) g.push_back(grads[size_t(l)].data());
        const double t = bench::median_seconds(
            [&] { opt.step(w_in.data(), w_out.data(), g.data(), c.data(), int(k), 1e-3f); }, reps, 2, flush);
        const double bytes = double(N) * 4 * double(k + 2 + 2 * opt.state_floats());
        const double gbs = bytes / t / 1e9;
        std::printf("%-11ld %-8s %3ld %9.3f %10.1f %11.1f %8.0f%%\n", n, name, k, t * 1e3, gbs, copy_gbs,
                    100 * gbs / copy_gbs);
      }
    }
  }
  std::printf("(GB/s counts every byte an update must touch; target >= 70%% of the copy)\n");
  return 0;
}
