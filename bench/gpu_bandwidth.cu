// gpu_bandwidth: push and pull as the engine does them, next to a plain
// cudaMemcpy between pinned host memory and the device in the same run.
//   push: D2H of a worker's flat gradient into a parameter-server slot
//         (cudaMemcpyAsync on the worker's stream, completion by event)
//   pull: H2D of a published snapshot into the worker's replica
// Prints GB/s of each, and the engine paths as a fraction of the plain copy.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "runtime/engine/param_server.h"
#include "runtime/drivers/worker.h"

using namespace adasync;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
template <class F>
double time_median(F f, int reps) {
  std::vector<double> t;
  for (int i = 0; i < reps + 3; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (i >= 3) t.push_back(dt);
  }
  return median(t);
}
}  // namespace

int main(int argc, char** argv) {
  if (cuda_device_count() == 0) {
    std::printf("gpu_bandwidth: skipped: no usable CUDA device: %s\n", cuda_unavailable_reason().c_str());
    return 0;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s\n", prop.name);
  std::printf("%-14s %12s %12s %12s %12s %8s %8s\n", "params", "MB", "memcpy H2D", "pull GB/s", "memcpy D2H",
              "push GB/s", "ratio");
  for (size_t n : {size_t(3274634), size_t(25) << 20}) {  // the cnn, and 100 MB
    const size_t bytes = n * sizeof(float);
    std::vector<float> init(n, 0.5f);
    OptimizerConfig oc;
    ParamServer ps(n, init.data(), std::make_unique<HostOptimizer>(oc, n, nullptr), 2);
    auto ctx = Context::cuda(0, "bench");
    Buffer<float> dev(MemKind::Device, n, 0), pinned(MemKind::Pinned, n, 0);
    SnapshotPtr snap = ps.latest();
    SlotLease slot = ps.acquire_slot();
    Event done;
    const int reps = 20;
    // Plain synchronous copies between pinned memory and the device.
    const double t_h2d = time_median([&] { cudaMemcpy(dev.data(), pinned.data(), bytes, cudaMemcpyHostToDevice); }, reps);
    const double t_d2h = time_median([&] { cudaMemcpy(pinned.data(), dev.data(), bytes, cudaMemcpyDeviceToHost); }, reps);
    // The engine's paths: snapshot -> replica, gradient -> slot, on the worker stream.
    const double t_pull = time_median([&] {
      mem_copy(dev.data(), snap->data, bytes, ctx->stream());
      done.record(*ctx);
      done.synchronize();
    }, reps);
    const double t_push = time_median([&] {
      mem_copy(slot.data(), dev.data(), bytes, ctx->stream());
      done.record(*ctx);
      done.synchronize();
    }, reps);
    slot.release();
    const double gb = double(bytes) / 1e9;
    std::printf("%-14zu %12.1f %12.1f %12.1f %12.1f %8.1f %7.0f%%/%.0f%%\n", n, double(bytes) / 1e6, gb / t_h2d,
                gb / t_pull, gb / t_d2h, gb / t_push, 100 * t_h2d / t_pull, 100 * t_d2h / t_push);
  }
  std::printf("(ratio: pull / memcpy H2D, push / memcpy D2H; target >= 80%%)\n");
  return 0;
}
