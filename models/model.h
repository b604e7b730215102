// Model: one replica of a network on one Context.
//
// The replica owns one contiguous parameter buffer and one gradient buffer in
// its context's memory; layers hold views into them. use_params/use_grads
// rebind every layer to external buffers of the same memory kind, which is
// how a CPU worker computes straight from a published snapshot into its push
// slot with no copy. Activations are sized for max_batch once, so a CUDA step
// allocates nothing and can be captured in a graph.
//
// `arch` is anything --model takes (models/describe.h): a zoo name, a layer
// list or a .json file. param_tensors() names the slices of the flat buffer
// as PyTorch names the equivalent module's state_dict.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "models/describe.h"
#include "models/layers.h"

namespace adasync {

template <typename T>
class Model {
 public:
  Model(Context& ctx, const std::string& arch, Shape input, int classes, int max_batch);

  const std::string& arch() const { return arch_; }
  // The canonical layer list ("conv5x5-32,relu,pool2,...").
  std::string description() const { return spec_.description(); }
  const std::vector<ParamTensor>& param_tensors() const { return tensors_; }
  // Every value of the flat buffer: parameters, then buffers (models/layout.h).
  size_t num_params() const { return num_params_; }
  size_t num_trainable() const { return num_trainable_; }
  ParamLayout layout() const { return layout_of(tensors_); }
  // Whether a training step draws dropout masks (see set_batch_key).
  bool uses_key() const { return uses_key_; }
  // The dropout key of the next training step: a hash of the mini-batch's
  // sample indices (in the context's memory) and seed, computed on the
  // context's stream, so a step's masks depend on its batch alone.
  void set_batch_key(const int32_t* idx, int n, uint64_t seed);
  int max_batch() const { return max_batch_; }
  Shape input_shape() const { return input_; }
  int classes() const { return classes_; }
  Context& context() { return ctx_; }
  // One line per layer: kind, output shape, parameter count.
  std::string summary() const;

  // Deterministic initial parameters for `seed` and the initial buffers, written to host memory.
  void init_params(T* host, uint64_t seed) const;

  T* params() { return params_ext_ != nullptr ? const_cast<T*>(params_ext_) : params_.data(); }
  T* grads() { return grads_ext_ != nullptr ? grads_ext_ : grads_.data(); }
  T* own_params() { return params_.data(); }
  void use_params(const T* p);  // nullptr: back to the owned buffer
  void use_grads(T* g);

  // logits for n <= max_batch inputs, in evaluation mode (running statistics, no dropout).
  void forward(const T* x, int n);
  const T* logits() const { return acts_.back().data(); }
  // Training-mode forward and mean softmax cross-entropy (to loss_ptr()),
  // keeping what backward needs; batch-norm statistics go to the gradient
  // buffer's buffer slice. On CPU contexts `cancelled` is polled between layers;
  // returns false if it fired.
  bool forward_loss(const T* x, const int32_t* y, int n, const std::function<bool()>& cancelled = {});
  // Backward of the last forward_loss (gradients overwritten), same polling.
  bool backward(const T* x, int n, const std::function<bool()>& cancelled = {});
  bool forward_backward(const T* x, const int32_t* y, int n, const std::function<bool()>& cancelled = {}) {
    return forward_loss(x, y, n, cancelled) && backward(x, n, cancelled);
  }
  T* loss_ptr() { return scalars_.data(); }
  // Forward, then mean loss to loss_ptr() and the number of correct arg-max
  // predictions (ties: lowest class) to correct_ptr().
  void evaluate_batch(const T* x, const int32_t* y, int n);
  int32_t* correct_ptr() { return correct_.data(); }

 private:
  void bind_all();
  void set_training(bool on);

  Context& ctx_;
  std::string arch_;
  ModelSpec spec_;
  std::vector<ParamTensor> tensors_;
  Shape input_;
  int classes_;
  int max_batch_;
  std::vector<std::unique_ptr<Layer<T>>> layers_;
  std::vector<size_t> offsets_;      // parameter offset of each layer
  std::vector<size_t> buf_offsets_;  // buffer offset of each layer (after every parameter)
  size_t num_params_ = 0, num_trainable_ = 0;
  bool training_ = true, uses_key_ = false;
  Buffer<uint64_t> key_;
  Buffer<T> params_, grads_;
  const T* params_ext_ = nullptr;
  T* grads_ext_ = nullptr;
  std::vector<Buffer<T>> acts_;   // output of each layer
  std::vector<Buffer<T>> dacts_;  // gradient w.r.t. each layer's output
  Buffer<T> scalars_;
  Buffer<int32_t> correct_;
};

// The layer stack of a model for the given input and classes. A description
// that does not fit the input (a kernel larger than its padded input, a
// window larger than its input, an output count that is not the classes) is
// one UsageError naming the layer and the shapes.
template <typename T>
std::vector<std::unique_ptr<Layer<T>>> build_layers(const ModelSpec& spec, Shape input, int classes);
template <typename T>
std::vector<std::unique_ptr<Layer<T>>> build_layers(const std::string& arch, Shape input, int classes);
// The named parameter tensors of a layer stack built from `spec`.
template <typename T>
std::vector<ParamTensor> name_params(const ModelSpec& spec, const std::vector<std::unique_ptr<Layer<T>>>& layers);
// The same without a Context: what a model of `arch` holds for this input.
std::vector<ParamTensor> model_param_tensors(const std::string& arch, Shape input, int classes);
// The zoo names (each stands for a description, see zoo_descriptions()).
const std::vector<std::string>& model_names();

}  // namespace adasync
