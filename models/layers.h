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
#include "models/layout.h"

namespace adasync {

struct Shape {
  int c = 1, h = 1, w = 1;
  size_t size() const { return size_t(c) * h * w; }
  bool operator==(const Shape& o) const { return c == o.c && h == o.h && w == o.w; }
};
std::string to_string(const Shape& s);

// One tensor of a layer's slice, named relative to the layer's module
// ("weight", "bn1.bias", "shortcut.1.running_mean").
struct TensorInfo {
  std::string name;
  std::vector<int64_t> shape;   // PyTorch's ({} for a scalar)
  bool decay = true;            // false: biases and batch-norm affine terms (--no-decay-bn)
  TensorKind kind = TensorKind::Param;
  size_t count() const {
    size_t c = 1;
    for (int64_t d : shape) c *= size_t(d);
    return c;
  }
};

// Layers own slices of two regions of the flat buffer: trainable parameters
// (with gradients) and, after all of them, buffers (batch-norm running
// statistics). In the gradient buffer a buffer's slice carries what the
// training-mode forward measured (the batch mean, the unbiased batch
// variance, 1 for the counter), which is what a worker pushes for it.
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
  // The parameter tensors with their names ("weight", then "bias") and decay.
  virtual std::vector<TensorInfo> param_info() const;
  // The buffer tensors, in their order in the layer's buffer slice.
  virtual std::vector<TensorInfo> buffer_info() const { return {}; }
  size_t num_buffers() const;
  // Writes this layer's initial parameters (num_params values, host memory).
  virtual void init(T* params, Rng& rng) const {}
  // Writes the initial buffers (num_buffers values, host memory).
  virtual void init_buffers(T* buffers) const {}
  // Allocates per-replica buffers (e.g. pooling indices) for up to max_batch.
  virtual void setup(Context& ctx, int max_batch) {}
  // Parameters and their gradients; buffers and the slice of the gradient
  // buffer where a training forward writes its statistics (either may be null).
  virtual void bind(const T* params, T* grads, const T* buffers = nullptr, T* stats = nullptr) {
    w_ = params;
    dw_ = grads;
    buf_ = buffers;
    stats_ = stats;
  }
  // Training mode (batch statistics, dropout) or evaluation mode.
  virtual void set_training(bool on) { training_ = on; }
  // The dropout key of the current step (context memory), for layers that draw masks.
  virtual void set_key(const uint64_t* key) {}
  virtual void forward(Context& ctx, const T* x, T* y, int n) = 0;
  // Overwrites this layer's parameter gradients and, if dx is non-null, writes
  // dL/dx. y is the forward output for the same x.
  virtual void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) = 0;

 protected:
  Shape in_, out_;
  const T* w_ = nullptr;
  T* dw_ = nullptr;
  const T* buf_ = nullptr;
  T* stats_ = nullptr;
  bool training_ = true;
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

// 2-D convolution; weights [K, C, R, S] then (with bias) bias [K].
template <typename T>
class Conv2d : public Layer<T> {
 public:
  Conv2d(Shape in, int out_channels, int kernel, int pad, int stride = 1, bool bias = true);
  std::string describe() const override;
  size_t num_params() const override;
  std::vector<std::vector<int64_t>> param_shapes() const override;
  void init(T* params, Rng& rng) const override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;

 private:
  ConvShape shape(int n) const;
  int k_, r_, pad_, stride_;
  bool bias_;
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

// 2-D batch norm over the channels (PyTorch's BatchNorm2d, affine, momentum
// 0.1, eps 1e-5): parameters weight [C] (1) and bias [C] (0); buffers
// running_mean [C] (0), running_var [C] (1), num_batches_tracked [] (0).
// Training mode normalises with the batch's statistics and writes them to its
// stats slice; evaluation mode uses the running buffers. The layer itself
// never updates its buffers: whoever applies the update folds the statistics.
template <typename T>
class BatchNorm2d : public Layer<T> {
 public:
  static constexpr double kEps = 1e-5;
  explicit BatchNorm2d(Shape in);
  std::string describe() const override { return "batchnorm"; }
  size_t num_params() const override { return 2 * size_t(this->in_.c); }
  std::vector<std::vector<int64_t>> param_shapes() const override;
  std::vector<TensorInfo> param_info() const override;
  std::vector<TensorInfo> buffer_info() const override;
  void init(T* params, Rng& rng) const override;
  void init_buffers(T* buffers) const override;
  void setup(Context& ctx, int max_batch) override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;
  // A residual block's epilogue in the same pass: y = relu?(bn(x) + add), add
  // (if non-null) of y's shape.
  void forward(Context& ctx, const T* x, T* y, int n, const T* add, bool relu);
  // The backward of bn followed by a ReLU whose output is relu_y.
  void backward_relu(Context& ctx, const T* x, const T* relu_y, const T* dy, T* dx, int n);

 private:
  BnShape shape(int n) const { return BnShape{n, this->in_.c, this->in_.h * this->in_.w}; }
  Buffer<T> mean_, invstd_, var_;  // the last training forward's statistics
};

// Global average pooling: [C, H, W] -> [C, 1, 1].
template <typename T>
class GlobalAvgPool : public Layer<T> {
 public:
  explicit GlobalAvgPool(Shape in);
  std::string describe() const override { return "avgpool"; }
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;
};

// Inverted dropout with probability p in training mode (its mask from the
// step's key, see ops::dropout_forward); the identity in evaluation mode.
template <typename T>
class Dropout : public Layer<T> {
 public:
  Dropout(Shape in, float p);
  std::string describe() const override;
  void set_key(const uint64_t* key) override { key_ = key; }
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;

 private:
  float p_;
  const uint64_t* key_ = nullptr;
};

// The CIFAR ResNets' basic block (He et al. 2016): relu(bn2(conv2(relu(bn1(
// conv1(x))))) + shortcut(x)), 3x3 convolutions without bias, the first with
// `stride`. The shortcut is the identity when the shape is kept, else option A
// (subsample and zero-pad channels; needs an even channel increase) or, with
// `projection`, option B (1x1 convolution with the stride, then batch norm).
// Tensors are named as PyTorch's BasicBlock names them: conv1, bn1, conv2,
// bn2, shortcut.0 (the projection's convolution), shortcut.1 (its norm).
template <typename T>
class BasicBlock : public Layer<T> {
 public:
  BasicBlock(Shape in, int out_channels, int stride, bool projection);
  std::string describe() const override;
  size_t num_params() const override;
  std::vector<std::vector<int64_t>> param_shapes() const override;
  std::vector<TensorInfo> param_info() const override;
  std::vector<TensorInfo> buffer_info() const override;
  void init(T* params, Rng& rng) const override;
  void init_buffers(T* buffers) const override;
  void setup(Context& ctx, int max_batch) override;
  void bind(const T* params, T* grads, const T* buffers = nullptr, T* stats = nullptr) override;
  void set_training(bool on) override;
  void forward(Context& ctx, const T* x, T* y, int n) override;
  void backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) override;

 private:
  // The sub-layers in parameter order, with their module names.
  std::vector<std::pair<std::string, Layer<T>*>> parts() const;
  int stride_;
  bool projection_;
  std::unique_ptr<Conv2d<T>> conv1_, conv2_, sc_conv_;
  std::unique_ptr<BatchNorm2d<T>> bn1_, bn2_, sc_bn_;
  std::unique_ptr<ReLU<T>> relu_;
  // Activations (a1 conv1, r1 bn1 + relu, a2 conv2, s1/s2 the projection)
  // and gradient scratch, sized by setup().
  Buffer<T> a1_, r1_, a2_, s1_, s2_, g1_, g2_, g3_, gx_;
};

}  // namespace adasync
