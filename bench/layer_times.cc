// layer_times: where one training step of a model goes, layer by layer, on
// the CPU (or a GPU with --devices cuda). Prints the median forward and
// backward time of each layer over repeated steps on random data and, on the
// CPU, the GFLOP/s of the convolutions and linear layers next to the peak
// measured in the same run: a tight FMA loop of the CPU path in use
// (kernels/cpu/simd.h; ADASYNC_CPU_PATH lowers it) on every thread at once.
//
//   layer_times [--model cnn] [--batch 64] [--threads 2] [--steps 20] [--devices cpu|cuda] [--stat median|min]
//               [--cuda-bn cudnn|own]
//
// --stat min: the fastest of the steps per layer, and the peak probed before
// and after them; on a shared machine, what the code does when it has the
// cores to itself.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/context.h"
#include "kernels/cpu/simd.h"
#include "models/model.h"

using namespace adasync;

int main(int argc, char** argv) {
  std::string arch = "cnn", devices = "cpu", stat = "median", input = "1x28x28", cuda_bn = "cudnn";
  int batch = 64, threads = 2, steps = 20;
  CLI::App app{"per-layer step times"};
  app.add_option("--model", arch);
  app.add_option("--batch", batch);
  app.add_option("--threads", threads);
  app.add_option("--steps", steps);
  app.add_option("--devices", devices);
  app.add_option("--stat", stat)->check(CLI::IsMember({"median", "min"}));
  app.add_option("--input", input, "CxHxW of one sample (1x32x32: Fashion-MNIST padded, 3x32x32: CIFAR-10)");
  app.add_option("--cuda-bn", cuda_bn, "batch norm on the GPU: through cuDNN or our kernels")
      ->check(CLI::IsMember({"cudnn", "own"}));
  CLI11_PARSE(app, argc, argv);

  ThreadPool pool(threads);
  auto ctx = devices == "cuda" ? Context::cuda(0, "bench") : Context::cpu(&pool);
  ctx->cudnn_batchnorm = cuda_bn == "cudnn";
  Shape in{1, 28, 28};
  if (std::sscanf(input.c_str(), "%dx%dx%d", &in.c, &in.h, &in.w) != 3 || in.c < 1 || in.h < 1 || in.w < 1) {
    std::fprintf(stderr, "layer_times: --input: expected CxHxW such as 3x32x32, found '%s'\n", input.c_str());
    return 2;
  }
  auto layers = build_layers<float>(arch, in, 10);
  const MemKind mk = ctx->mem_kind();
  size_t np = 0;
  for (auto& l : layers) np += l->num_params();
  std::vector<float> host(np);
  Rng rng(1);
  for (auto& v : host) v = float(rng.uniform(-0.05, 0.05));
  Buffer<float> params(mk, np), grads(mk, np);
  mem_copy(params.data(), host.data(), np * 4, ctx->stream());
  std::vector<Buffer<float>> act, dact;
  std::vector<float> xin(size_t(batch) * in.size());
  for (auto& v : xin) v = float(rng.normal());
  Buffer<float> x(mk, xin.size());
  mem_copy(x.data(), xin.data(), xin.size() * 4, ctx->stream());
  size_t off = 0;
  for (auto& l : layers) {
    l->bind(params.data() + off, grads.data() + off);
    off += l->num_params();
    l->setup(*ctx, batch);
    std::vector<float> h(size_t(batch) * l->out_shape().size());
    for (auto& v : h) v = float(rng.normal());
    act.emplace_back(mk, h.size());
    dact.emplace_back(mk, h.size());
    mem_copy(dact.back().data(), h.data(), h.size() * 4, ctx->stream());
  }
  ctx->synchronize();
  const size_t L = layers.size();
  std::vector<std::vector<double>> tf(L), tb(L);
  auto now = [] { return std::chrono::steady_clock::now(); };
  // The ceiling: every thread runs the path's FMA loop at once; the best of
  // 5 probes before the steps and 5 after.
  auto probe_peak = [&] {
    const auto& k = cpu::simd::kernels();
    std::vector<float> sink(static_cast<size_t>(threads));
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
      std::vector<double> flops(static_cast<size_t>(threads));
      const auto t0 = now();
      pool.parallel_chunks(size_t(threads), 1, [&](int slot, size_t b, size_t e) {
        for (size_t t = b; t < e; ++t) flops[t] = k.fma_loop(2000000, &sink[t]);
      });
      const double sec = std::chrono::duration<double>(now() - t0).count();
      double total = 0;
      for (double f : flops) total += f;
      best = std::max(best, total / sec * 1e-9);
    }
    return best;
  };
  double peak = devices != "cuda" ? probe_peak() : 0;
  for (int it = 0; it < steps + 3; ++it) {
    for (size_t i = 0; i < L; ++i) {
      if (getenv("TWICE")) layers[i]->forward(*ctx, i == 0 ? x.data() : act[i - 1].data(), act[i].data(), batch);
      const auto t0 = now();
      layers[i]->forward(*ctx, i == 0 ? x.data() : act[i - 1].data(), act[i].data(), batch);
      ctx->synchronize();
      if (it >= 3) tf[i].push_back(std::chrono::duration<double>(now() - t0).count());
    }
    for (size_t i = L; i-- > 0;) {
      const auto t0 = now();
      layers[i]->backward(*ctx, i == 0 ? x.data() : act[i - 1].data(), act[i].data(), dact[i].data(),
                          i == 0 ? nullptr : dact[i - 1].data(), batch);
      ctx->synchronize();
      if (it >= 3) tb[i].push_back(std::chrono::duration<double>(now() - t0).count());
    }
  }
  auto median = [&](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return stat == "min" ? v.front() : v[v.size() / 2];
  };
  const bool cpu = devices != "cuda";
  if (cpu) {
    peak = std::max(peak, probe_peak());
    std::printf("%s; peak %.1f GFLOP/s on %d threads (FMA loop, best of 5 before and 5 after); layer times: %s\n",
                cpu::cpu_kernel_path_summary().c_str(), peak, threads, stat == "min" ? "fastest step" : "median");
  }
  // Multiply-adds of a layer's convolutions and linear products (a residual
  // block's convolutions all produce its output's spatial size): per 4-D
  // weight [k, c, r, s], out_h * out_w * k * c * r * s per sample; per 2-D
  // weight [out, in], out * in.
  auto gflop = [&](size_t i) {
    const auto& l = *layers[i];
    const double hw = double(l.out_shape().h) * l.out_shape().w;
    double macs = 0;
    for (const auto& t : l.param_info()) {
      if (t.shape.size() == 4) macs += hw * double(t.count());
      else if (t.shape.size() == 2) macs += double(t.count());
    }
    return 2.0 * batch * macs * 1e-9;
  };
  double sf = 0, sb = 0, flop_total = 0;
  std::printf("%-28s %10s %10s %12s %12s\n", "layer", "fwd ms", "bwd ms", "fwd GFLOP/s", "bwd GFLOP/s");
  for (size_t i = 0; i < L; ++i) {
    const double f = median(tf[i]) * 1e3, b = median(tb[i]) * 1e3;
    sf += f;
    sb += b;
    // Backward: the weight gradient, and the input gradient but for layer 0.
    const double gf = gflop(i), gb = gf * (i == 0 ? 1 : 2);
    flop_total += gf + gb;
    if (gf > 0 && cpu)
      std::printf("%-28s %10.3f %10.3f %7.1f (%2.0f%%) %6.1f (%2.0f%%)\n", layers[i]->describe().c_str(), f, b,
                  gf / f * 1e3, 100 * gf / f * 1e3 / peak, gb / b * 1e3, 100 * gb / b * 1e3 / peak);
    else std::printf("%-28s %10.3f %10.3f\n", layers[i]->describe().c_str(), f, b);
  }
  std::printf("%-28s %10.3f %10.3f   step %.3f ms = %.0f samples/s\n", "total", sf, sb, sf + sb,
              batch / ((sf + sb) * 1e-3));
  if (cpu)
    std::printf("step: %.2f GFLOP in %.3f ms = %.1f GFLOP/s, %.0f%% of the %.1f GFLOP/s peak\n", flop_total, sf + sb,
                flop_total / (sf + sb) * 1e3, 100 * flop_total / (sf + sb) * 1e3 / peak, peak);
  return 0;
}
