#include "models/model.h"

#include <sstream>

namespace adasync {

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = {"cnn", "lenet5", "mlp", "linear"};
  return names;
}

template <typename T>
std::vector<std::unique_ptr<Layer<T>>> build_layers(const std::string& arch, Shape in, int classes) {
  std::vector<std::unique_ptr<Layer<T>>> L;
  auto add = [&](Layer<T>* l) {
    L.emplace_back(l);
    in = l->out_shape();
  };
  if (arch == "cnn") {
    // conv5x5-32, ReLU, pool2, conv5x5-64, ReLU, pool2, fc-1024, ReLU, fc ("same" padding).
    // ReLU then pooling runs as one fused layer: maxpool(relu(x)) == relu(maxpool(x)).
    add(new Conv2d<T>(in, 32, 5, 2));
    add(new MaxPool2d<T>(in, 2, 2, true));
    add(new Conv2d<T>(in, 64, 5, 2));
    add(new MaxPool2d<T>(in, 2, 2, true));
    add(new Linear<T>(in, 1024));
    add(new ReLU<T>(in));
    add(new Linear<T>(in, classes));
  } else if (arch == "lenet5") {
    add(new Conv2d<T>(in, 6, 5, 2));
    add(new MaxPool2d<T>(in, 2, 2, true));
    add(new Conv2d<T>(in, 16, 5, 0));
    add(new MaxPool2d<T>(in, 2, 2, true));
    add(new Linear<T>(in, 120));
    add(new ReLU<T>(in));
    add(new Linear<T>(in, 84));
    add(new ReLU<T>(in));
    add(new Linear<T>(in, classes));
  } else if (arch == "mlp") {
    add(new Linear<T>(in, 256));
    add(new ReLU<T>(in));
    add(new Linear<T>(in, 256));
    add(new ReLU<T>(in));
    add(new Linear<T>(in, classes));
  } else if (arch == "linear") {
    add(new Linear<T>(in, classes));
  } else {
    std::string valid;
    for (const auto& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw UsageError("unknown model '" + arch + "': expected one of " + valid);
  }
  return L;
}

template <typename T>
Model<T>::Model(Context& ctx, const std::string& arch, Shape input, int classes, int max_batch)
    : ctx_(ctx), arch_(arch), input_(input), classes_(classes), max_batch_(max_batch) {
  EXPECTS(max_batch >= 1, "max_batch " << max_batch);
  EXPECTS(classes >= 2, "classes " << classes);
  layers_ = build_layers<T>(arch, input, classes);
  const MemKind mk = ctx.mem_kind();
  for (auto& l : layers_) {
    offsets_.push_back(num_params_);
    num_params_ += l->num_params();
    l->setup(ctx, max_batch);
    acts_.emplace_back(mk, size_t(max_batch) * l->out_shape().size(), ctx.device());
    dacts_.emplace_back(mk, size_t(max_batch) * l->out_shape().size(), ctx.device());
  }
  params_ = Buffer<T>(mk, num_params_, ctx.device());
  grads_ = Buffer<T>(mk, num_params_, ctx.device());
  scalars_ = Buffer<T>(mk, 1, ctx.device());
  correct_ = Buffer<int32_t>(mk, 1, ctx.device());
  bind_all();
}

template <typename T>
std::string Model<T>::summary() const {
  std::ostringstream os;
  os << arch_ << ": input " << to_string(input_) << ", " << num_params_ << " parameters\n";
  for (size_t i = 0; i < layers_.size(); ++i) {
    os << "  " << layers_[i]->describe() << " -> " << to_string(layers_[i]->out_shape());
    if (layers_[i]->num_params() > 0) os << "  (" << layers_[i]->num_params() << " params)";
    os << "\n";
  }
  return os.str();
}

template <typename T>
void Model<T>::init_params(T* host, uint64_t seed) const {
  for (size_t i = 0; i < layers_.size(); ++i) {
    Rng rng(seed, 1000 + i);  // one stream per layer: adding a layer leaves the others unchanged
    layers_[i]->init(host + offsets_[i], rng);
  }
}

template <typename T>
void Model<T>::bind_all() {
  const T* p = params();
  T* g = grads();
  for (size_t i = 0; i < layers_.size(); ++i) layers_[i]->bind(p + offsets_[i], g + offsets_[i]);
}

template <typename T>
void Model<T>::use_params(const T* p) {
  params_ext_ = p;
  bind_all();
}

template <typename T>
void Model<T>::use_grads(T* g) {
  grads_ext_ = g;
  bind_all();
}

template <typename T>
void Model<T>::forward(const T* x, int n) {
  EXPECTS(n >= 1 && n <= max_batch_, "batch " << n << " outside [1, " << max_batch_ << "]");
  const T* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->forward(ctx_, in, acts_[i].data(), n);
    in = acts_[i].data();
  }
}

template <typename T>
bool Model<T>::forward_loss(const T* x, const int32_t* y, int n, const std::function<bool()>& cancelled) {
  const bool poll = cancelled && !ctx_.is_cuda();
  EXPECTS(n >= 1 && n <= max_batch_, "batch " << n << " outside [1, " << max_batch_ << "]");
  const T* in = x;
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (poll && cancelled()) return false;
    layers_[i]->forward(ctx_, in, acts_[i].data(), n);
    in = acts_[i].data();
  }
  ops::softmax_xent<T>(ctx_, acts_.back().data(), y, n, classes_, scalars_.data(), dacts_.back().data());
  return true;
}

template <typename T>
bool Model<T>::backward(const T* x, int n, const std::function<bool()>& cancelled) {
  const bool poll = cancelled && !ctx_.is_cuda();
  for (size_t i = layers_.size(); i-- > 0;) {
    if (poll && cancelled()) return false;
    const T* xin = i == 0 ? x : acts_[i - 1].data();
    T* dx = i == 0 ? nullptr : dacts_[i - 1].data();  // the input needs no gradient
    layers_[i]->backward(ctx_, xin, acts_[i].data(), dacts_[i].data(), dx, n);
  }
  return true;
}

template <typename T>
void Model<T>::evaluate_batch(const T* x, const int32_t* y, int n) {
  forward(x, n);
  ops::softmax_xent<T>(ctx_, acts_.back().data(), y, n, classes_, scalars_.data(), nullptr);
  ops::count_correct<T>(ctx_, acts_.back().data(), y, n, classes_, correct_.data());
}

template class Model<float>;
template class Model<double>;
template std::vector<std::unique_ptr<Layer<float>>> build_layers<float>(const std::string&, Shape, int);
template std::vector<std::unique_ptr<Layer<double>>> build_layers<double>(const std::string&, Shape, int);

}  // namespace adasync
