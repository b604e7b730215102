// Layers over a flat parameter buffer.
//
// A layer owns no parameters: bind() points it at its slice of the model's
// one contiguous parameter buffer and of the matching gradient buffer, so a
// pull or a push is a single copy of the whole model. Layers are per replica
// (one Context), templated on the scalar so the same code runs in float for
// training and in double for finite-difference gradient checks (CPU only).
// Shapes are per sample (C, H, W); the batch size n is given per call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "datasets/rng.h"
#include "kernels/context.h"
#include "kernels/ops.h"

namespace adasync {

struct Shape {
  int c = 1, h = 1, w = 1;
  size_t size() const { return size_t(c) * h * w; }
  bool operator==(const Shape& o) const { return c == o.c && h == o.h && w == o.w; }
};
std::string to_string(const Shape& s);

template <typename T>
class Layer {
 public:
  virtual ~Layer() = default;
  virtual std::string describe() const = 0;
  const Shape& in_shape() const { return in_; }
  const Shape& out_shape() const { return out_; }
  virtual size_t num_params() const { return 0; }
  // Shapes of the parameter tensors as PyTorch holds them (weight, then bias),
  // in their order in this layer's slice; empty without parameters.
  virtual std::vector<std::vector<int64_t>> param_shapes() const { return {}; }
  // Writes this layer's initial parameters (num_params values, host memory).
  virtual void init(T* params, Rng& rng) const {}
  // Allocates per-replica buffers (e.g. pooling indices) for up to max_batch.
  virtual void setup(Context& ctx, int max_batch) {}
  void bind(const T* params, T* grads) {
    w_ = params;
    dw_ = grads;
  }
  virtual void forward(Context& ctx, const T* x, T* y, int n) = 0;
  // Overwrites this layer's parameter gradients and, if dx is non-null, writes
  // dL/dx. y is the forward output for the same x.
  virtual void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) = 0;

 protected:
  Shape in_, out_;
  const T* w_ = nullptr;
  T* dw_ = nullptr;
};

// y = x W^T + b with W [out, in] (PyTorch layout); the input is flattened.
template <typename T>
class Linear : public Layer<T> {
 public:
  Linear(Shape in, int out);
  std::string describe() const override;
  size_t num_params() const override;
  std::vector<std::vector<int64_t>> param_shapes() const override;
  void init(T* params, Rng& rng) const override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;
};

// 2-D convolution with bias; weights [K, C, R, S] then bias [K].
template <typename T>
class Conv2d : public Layer<T> {
 public:
  Conv2d(Shape in, int out_channels, int kernel, int pad, int stride = 1);
  std::string describe() const override;
  size_t num_params() const override;
  std::vector<std::vector<int64_t>> param_shapes() const override;
  void init(T* params, Rng& rng) const override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;

 private:
  ConvShape shape(int n) const;
  int k_, r_, pad_, stride_;
};

// Max pooling; with relu it computes maxpool(relu(x)) (= relu(maxpool(x)))
// in one pass, which is how the zoo applies the ReLU before each pooling.
template <typename T>
class MaxPool2d : public Layer<T> {
 public:
  MaxPool2d(Shape in, int size, int stride, bool relu = false);
  std::string describe() const override;
  void setup(Context& ctx, int max_batch) override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;

 private:
  PoolShape shape(int n) const;
  int size_, stride_;
  bool relu_;
  Buffer<int32_t> argmax_;
};

template <typename T>
class ReLU : public Layer<T> {
 public:
  explicit ReLU(Shape in);
  std::string describe() const override { return "relu"; }
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;
};

}  // namespace adasync
