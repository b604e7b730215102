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
        layer = new Conv2d<T>(in, l.out, l.kernel, l.pad, l.stride, l.bias);
        break;
      case LayerSpec::Kind::Bn:
        layer = new BatchNorm2d<T>(in);
        break;
      case LayerSpec::Kind::Gap:
        layer = new GlobalAvgPool<T>(in);
        break;
      case LayerSpec::Kind::Dropout:
        layer = new Dropout<T>(in, float(l.percent) / 100.f);
        break;
      case LayerSpec::Kind::Res:
        if (l.stride == 1 && l.out == in.c) {
        } else if (!l.projection && (l.out < in.c || (l.out - in.c) % 2 != 0)) {
          fail(l, "changes its input " + to_string(in) + " to " + std::to_string(l.out) +
                      " channels: an option-A shortcut needs an even increase (add -proj for a 1x1 projection)");
        }
        layer = new BasicBlock<T>(in, l.out, l.stride, l.projection);
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

ParamLayout layout_of(const std::vector<ParamTensor>& tensors) {
  ParamLayout l;
  for (const ParamTensor& t : tensors) {
    const ParamLayout::Range r{t.offset, t.count, t.kind};
    if (t.kind == TensorKind::Param) {
      l.trainable = std::max(l.trainable, t.offset + t.count);
      if (!t.decay) l.no_decay.push_back(r);
    } else {
      l.buffers.push_back(r);
    }
    l.total = std::max(l.total, t.offset + t.count);
  }
  return l;
}

template <typename T>
std::vector<ParamTensor> name_params(const ModelSpec& spec, const std::vector<std::unique_ptr<Layer<T>>>& layers) {
  std::vector<ParamTensor> params, buffers;
  int convs = 0, fcs = 0, bns = 0, stage = 0, block = 0, last_width = 0;
  size_t offset = 0;
  std::vector<std::string> prefixes;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerSpec& l = spec.layers[i];
    std::string prefix;
    switch (l.kind) {
      case LayerSpec::Kind::Conv: prefix = "conv" + std::to_string(++convs); break;
      case LayerSpec::Kind::Fc: prefix = "fc" + std::to_string(++fcs); break;
      case LayerSpec::Kind::Bn: prefix = "bn" + std::to_string(++bns); break;
      case LayerSpec::Kind::Res:
        if (stage == 0 || l.stride != 1 || l.out != last_width) ++stage, block = 0;
        last_width = l.out;
        prefix = "layer" + std::to_string(stage) + "." + std::to_string(block++);
        break;
      default: break;
    }
    prefixes.push_back(prefix);
    for (const TensorInfo& t : layers[i]->param_info()) {
      ParamTensor p;
      p.name = prefix + "." + t.name;
      p.shape = t.shape;
      p.offset = offset;
      p.count = t.count();
      p.decay = t.decay;
      offset += p.count;
      params.push_back(std::move(p));
    }
  }
  for (size_t i = 0; i < layers.size(); ++i)
    for (const TensorInfo& t : layers[i]->buffer_info()) {
      ParamTensor p;
      p.name = prefixes[i] + "." + t.name;
      p.shape = t.shape;
      p.offset = offset;
      p.count = t.count();
      p.kind = t.kind;
      p.decay = false;
      offset += p.count;
      buffers.push_back(std::move(p));
    }
  params.insert(params.end(), buffers.begin(), buffers.end());
  return params;
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
    offsets_.push_back(num_trainable_);
    num_trainable_ += l->num_params();
    l->setup(ctx, max_batch);
    acts_.emplace_back(mk, size_t(max_batch) * l->out_shape().size(), ctx.device());
    dacts_.emplace_back(mk, size_t(max_batch) * l->out_shape().size(), ctx.device());
  }
  num_params_ = num_trainable_;
  for (auto& l : layers_) {
    buf_offsets_.push_back(num_params_);
    num_params_ += l->num_buffers();
  }
  for (const auto& l : spec_.layers) uses_key_ = uses_key_ || (l.kind == LayerSpec::Kind::Dropout && l.percent > 0);
  params_ = Buffer<T>(mk, num_params_, ctx.device());
  grads_ = Buffer<T>(mk, num_params_, ctx.device());
  scalars_ = Buffer<T>(mk, 1, ctx.device());
  correct_ = Buffer<int32_t>(mk, 1, ctx.device());
  key_ = Buffer<uint64_t>(mk, 1, ctx.device());
  if (!ctx.is_cuda()) key_.data()[0] = 0;
  for (auto& l : layers_) l->set_key(key_.data());
  bind_all();
}

template <typename T>
std::string Model<T>::summary() const {
  std::ostringstream os;
  os << arch_ << ": input " << to_string(input_) << ", " << num_trainable_ << " parameters";
  if (num_params_ > num_trainable_) os << " and " << num_params_ - num_trainable_ << " buffer values";
  os << "\n";
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
    layers_[i]->init_buffers(host + buf_offsets_[i]);
  }
}

template <typename T>
void Model<T>::set_batch_key(const int32_t* idx, int n, uint64_t seed) {
  if (uses_key_) ops::batch_key(ctx_, idx, n, seed, key_.data());
}

template <typename T>
void Model<T>::set_training(bool on) {
  if (training_ == on) return;
  training_ = on;
  for (auto& l : layers_) l->set_training(on);
}

template <typename T>
void Model<T>::bind_all() {
  const T* p = params();
  T* g = grads();
  for (size_t i = 0; i < layers_.size(); ++i)
    layers_[i]->bind(p + offsets_[i], g + offsets_[i], p + buf_offsets_[i], g + buf_offsets_[i]);
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
  set_training(false);
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
  set_training(true);
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
