// layer_times: where one training step of a model goes, layer by layer, on
// the CPU (or a GPU with --devices cuda). Prints the median forward and
// backward time of each layer over repeated steps on random data.
//
//   layer_times [--model cnn] [--batch 64] [--threads 2] [--steps 20] [--devices cpu|cuda]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/context.h"
#include "models/model.h"

using namespace adasync;

int main(int argc, char** argv) {
  std::string arch = "cnn", devices = "cpu";
  int batch = 64, threads = 2, steps = 20;
  CLI::App app{"per-layer step times"};
  app.add_option("--model", arch);
  app.add_option("--batch", batch);
  app.add_option("--threads", threads);
  app.add_option("--steps", steps);
  app.add_option("--devices", devices);
  CLI11_PARSE(app, argc, argv);

  ThreadPool pool(threads);
  auto ctx = devices == "cuda" ? Context::cuda(0, "bench") : Context::cpu(&pool);
  auto layers = build_layers<float>(arch, Shape{1, 28, 28}, 10);
  const MemKind mk = ctx->mem_kind();
  size_t np = 0;
  for (auto& l : layers) np += l->num_params();
  std::vector<float> host(np);
  Rng rng(1);
  for (auto& v : host) v = float(rng.uniform(-0.05, 0.05));
  Buffer<float> params(mk, np), grads(mk, np);
  mem_copy(params.data(), host.data(), np * 4, ctx->stream());
  std::vector<Buffer<float>> act, dact;
  std::vector<float> xin(size_t(batch) * 784);
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
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double sf = 0, sb = 0;
  std::printf("%-28s %10s %10s\n", "layer", "fwd ms", "bwd ms");
  for (size_t i = 0; i < L; ++i) {
    const double f = median(tf[i]) * 1e3, b = median(tb[i]) * 1e3;
    sf += f;
    sb += b;
    std::printf("%-28s %10.3f %10.3f\n", layers[i]->describe().c_str(), f, b);
  }
  std::printf("%-28s %10.3f %10.3f   step %.3f ms = %.0f samples/s\n", "total", sf, sb, sf + sb,
              batch / ((sf + sb) * 1e-3));
  return 0;
}
