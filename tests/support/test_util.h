// Shared helpers for the tests: random inputs, comparisons, the GPU fixture.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "datasets/rng.h"
#include "kernels/context.h"

namespace adasync::test {

template <typename T = float>
std::vector<T> random_vector(size_t n, uint64_t seed, double lo = -1.0, double hi = 1.0) {
  Rng rng(seed, 77);
  std::vector<T> v(n);
  for (auto& x : v) x = T(rng.uniform(lo, hi));
  return v;
}

// max_i |a_i - b_i| / max(1e-30, max_i |b_i|): relative to the reference's scale.
template <typename A, typename B>
double max_rel_error(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double scale = 0, err = 0;
  for (size_t i = 0; i < b.size(); ++i) scale = std::max(scale, std::fabs(double(b[i])));
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (!(d <= err)) err = std::isnan(d) ? INFINITY : d;  // NaN (e.g. an unwritten poisoned value) fails
  }
  return err / std::max(scale, 1e-30);
}

// GPU tests derive from this: they skip, with the reason, when no device is usable.
class GpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no usable CUDA device: " << cuda_unavailable_reason();
  }
};

// ||a - b||_2 / ||b||_2 over all elements; NaN anywhere gives infinity.
template <typename A, typename B>
double l2_rel_error(const std::vector<A>& a, const std::vector<B>& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    if (std::isnan(d)) return INFINITY;
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Device copies for GPU tests (synchronous: tests only).
template <typename T>
Buffer<T> upload(Context& ctx, const std::vector<T>& v) {
  Buffer<T> b(ctx.mem_kind(), v.size(), ctx.device());
  mem_copy(b.data(), v.data(), v.size() * sizeof(T), ctx.stream());
  ctx.synchronize();
  return b;
}
// A device buffer of n values poisoned with NaN bytes (0xFF), so an element
// the op fails to write shows up as NaN (or -1 for integers).
template <typename T>
Buffer<T> poisoned(Context& ctx, size_t n) {
  std::vector<unsigned char> ff(n * sizeof(T), 0xFF);
  Buffer<T> b(ctx.mem_kind(), n, ctx.device());
  mem_copy(b.data(), ff.data(), ff.size(), ctx.stream());
  ctx.synchronize();
  return b;
}
template <typename T>
std::vector<T> download(Context& ctx, const T* p, size_t n) {
  std::vector<T> v(n);
  mem_copy(v.data(), p, n * sizeof(T), ctx.stream());
  ctx.synchronize();
  return v;
}

inline std::string fashion_mnist_dir() { return "/usr/share/datasets/fashion-mnist"; }

}  // namespace adasync::test
