#include "models/model.h"

#include <algorithm>
#include <sstream>

namespace adasync {

const std::vector<std::string>& model_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const auto& z : zoo_descriptions()) v.push_back(z.first);
    return v;
  }();
  return names;
}

template <typename T>
std::vector<std::unique_ptr<Layer<T>>> build_layers(const ModelSpec& spec, Shape in, int classes) {
  std::vector<std::unique_ptr<Layer<T>>> L;
  auto fail = [&](const LayerSpec& l, const std::string& what) {
    throw UsageError("--model '" + spec.source + "': layer " + std::to_string(l.position) + " '" + l.text() + "' " +
                     what);
  };
  auto window = [](int k) { return std::to_string(k) + "x" + std::to_string(k); };
  for (const LayerSpec& l : spec.layers) {
    Layer<T>* layer = nullptr;
    switch (l.kind) {
      case LayerSpec::Kind::Conv:
        if (in.h + 2 * l.pad < l.kernel || in.w + 2 * l.pad < l.kernel)
          fail(l, "does not fit its input " + to_string(in) + ": a " + window(l.kernel) + " kernel with padding " +
                      std::to_string(l.pad) + " needs at least " + window(std::max(1, l.kernel - 2 * l.pad)));
        layer = new Conv2d<T>(in, l.out, l.kernel, l.pad, l.stride);
        break;
      case LayerSpec::Kind::Pool:
      case LayerSpec::Kind::ReluPool:
        if (in.h < l.kernel || in.w < l.kernel)
          fail(l, "does not fit its input " + to_string(in) + ": a " + window(l.kernel) + " window needs at least " +
                      window(l.kernel));
        layer = new MaxPool2d<T>(in, l.kernel, l.stride, l.kind == LayerSpec::Kind::ReluPool);
        break;
      case LayerSpec::Kind::Relu:
        layer = new ReLU<T>(in);
        break;
      case LayerSpec::Kind::Fc:
        layer = new Linear<T>(in, l.out > 0 ? l.out : classes);
        break;
    }
    L.emplace_back(layer);
    // Far beyond any model this trainer is for; keeps offsets and GEMM sizes in int range.
    if (layer->num_params() > (size_t(1) << 31))
      fail(l, "has " + std::to_string(layer->num_params()) + " parameters for its input " + to_string(in) +
                  ": more than 2^31");
    in = layer->out_shape();
  }
  if (L.empty()) throw UsageError("--model '" + spec.source + "': no layers");
  if (in.size() != size_t(classes))
    fail(spec.layers.back(), "ends the network with " + to_string(in) + " = " + std::to_string(in.size()) +
                                 " outputs, but the dataset has " + std::to_string(classes) +
                                 " classes (end the description with fc)");
  return L;
}

template <typename T>
std::vector<std::unique_ptr<Layer<T>>> build_layers(const std::string& arch, Shape in, int classes) {
  return build_layers<T>(parse_model(arch), in, classes);
}

template <typename T>
std::vector<ParamTensor> name_params(const ModelSpec& spec, const std::vector<std::unique_ptr<Layer<T>>>& layers) {
  std::vector<ParamTensor> out;
  int convs = 0, fcs = 0;
  size_t offset = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto shapes = layers[i]->param_shapes();
    if (shapes.empty()) continue;
    const bool conv = spec.layers[i].kind == LayerSpec::Kind::Conv;
    const std::string prefix = conv ? "conv" + std::to_string(++convs) : "fc" + std::to_string(++fcs);
    const char* suffix[2] = {".weight", ".bias"};
    for (size_t t = 0; t < shapes.size(); ++t) {
      ParamTensor p;
      p.name = prefix + suffix[t];
      p.shape = shapes[t];
      p.offset = offset;
      p.count = 1;
      for (int64_t d : p.shape) p.count *= size_t(d);
      offset += p.count;
      out.push_back(std::move(p));
    }
  }
  return out;
}

std::vector<ParamTensor> model_param_tensors(const std::string& arch, Shape input, int classes) {
  const ModelSpec spec = parse_model(arch);
  return name_params<float>(spec, build_layers<float>(spec, input, classes));
}

template <typename T>
Model<T>::Model(Context& ctx, const std::string& arch, Shape input, int classes, int max_batch)
    : ctx_(ctx), arch_(arch), input_(input), classes_(classes), max_batch_(max_batch) {
  EXPECTS(max_batch >= 1, "max_batch " << max_batch);
  EXPECTS(classes >= 2, "classes " << classes);
  spec_ = parse_model(arch);
  layers_ = build_layers<T>(spec_, input, classes);
  tensors_ = name_params<T>(spec_, layers_);
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
template std::vector<std::unique_ptr<Layer<float>>> build_layers<float>(const ModelSpec&, Shape, int);
template std::vector<std::unique_ptr<Layer<double>>> build_layers<double>(const ModelSpec&, Shape, int);
template std::vector<ParamTensor> name_params<float>(const ModelSpec&, const std::vector<std::unique_ptr<Layer<float>>>&);
template std::vector<ParamTensor> name_params<double>(const ModelSpec&,
                                                      const std::vector<std::unique_ptr<Layer<double>>>&);

}  // namespace adasync
