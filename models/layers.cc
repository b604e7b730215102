#include "models/layers.h"

#include <cmath>

namespace adasync {

std::string to_string(const Shape& s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

namespace {
// PyTorch's default for Linear and Conv2d (kaiming_uniform with a = sqrt(5)
// for weights, and the bias rule): both uniform in +-1/sqrt(fan_in).
template <typename T>
void init_uniform(T* p, size_t n, size_t fan_in, Rng& rng) {
  const double bound = 1.0 / std::sqrt(double(fan_in));
  for (size_t i = 0; i < n; ++i) p[i] = T(rng.uniform(-bound, bound));
}
}  // namespace

// ------------------------------------------------------------------ Layer
template <typename T>
std::vector<TensorInfo> Layer<T>::param_info() const {
  std::vector<TensorInfo> out;
  const auto shapes = param_shapes();
  for (size_t t = 0; t < shapes.size(); ++t) out.push_back(TensorInfo{t == 0 ? "weight" : "bias", shapes[t], t == 0});
  return out;
}
template <typename T>
size_t Layer<T>::num_buffers() const {
  size_t n = 0;
  for (const auto& b : buffer_info()) n += b.count();
  return n;
}

// ------------------------------------------------------------------ Linear
template <typename T>
Linear<T>::Linear(Shape in, int out) {
  this->in_ = in;
  this->out_ = Shape{out, 1, 1};
}
template <typename T>
std::string Linear<T>::describe() const {
  return "linear(" + std::to_string(this->in_.size()) + "->" + std::to_string(this->out_.c) + ")";
}
template <typename T>
size_t Linear<T>::num_params() const {
  return this->in_.size() * this->out_.c + this->out_.c;
}
template <typename T>
std::vector<std::vector<int64_t>> Linear<T>::param_shapes() const {
  return {{this->out_.c, int64_t(this->in_.size())}, {this->out_.c}};
}
template <typename T>
void Linear<T>::init(T* p, Rng& rng) const {
  init_uniform(p, num_params(), this->in_.size(), rng);
}
template <typename T>
void Linear<T>::forward(Context& ctx, const T* x, T* y, int n) {
  const int in = int(this->in_.size()), out = this->out_.c;
  ops::gemm<T>(ctx, false, true, n, out, in, T(1), x, in, this->w_, in, T(0), y, out);
  ops::bias_add<T>(ctx, y, this->w_ + size_t(in) * out, n, out);
}
template <typename T>
void Linear<T>::backward(Context& ctx, const T* x, const T*, const T* dy, T* dx, int n) {
  const int in = int(this->in_.size()), out = this->out_.c;
  ops::gemm<T>(ctx, true, false, out, in, n, T(1), dy, out, x, in, T(0), this->dw_, in);  // dW = dY^T X
  ops::bias_grad<T>(ctx, dy, this->dw_ + size_t(in) * out, n, out);
  if (dx != nullptr) ops::gemm<T>(ctx, false, false, n, in, out, T(1), dy, out, this->w_, in, T(0), dx, in);
}

// ------------------------------------------------------------------ Conv2d
template <typename T>
Conv2d<T>::Conv2d(Shape in, int out_channels, int kernel, int pad, int stride, bool bias)
    : k_(out_channels), r_(kernel), pad_(pad), stride_(stride), bias_(bias) {
  EXPECTS(kernel >= 1 && stride >= 1 && pad >= 0, "conv kernel " << kernel << " stride " << stride << " pad " << pad);
  this->in_ = in;
  const ConvShape s = shape(1);
  EXPECTS(s.out_h() >= 1 && s.out_w() >= 1, "conv" << kernel << "x" << kernel << " does not fit input " << to_string(in));
  this->out_ = Shape{k_, s.out_h(), s.out_w()};
}
template <typename T>
ConvShape Conv2d<T>::shape(int n) const {
  ConvShape s;
  s.n = n;
  s.c = this->in_.c;
  s.h = this->in_.h;
  s.w = this->in_.w;
  s.k = k_;
  s.r = s.s = r_;
  s.pad_h = s.pad_w = pad_;
  s.stride_h = s.stride_w = stride_;
  return s;
}
template <typename T>
std::string Conv2d<T>::describe() const {
  return "conv" + std::to_string(r_) + "x" + std::to_string(r_) + "-" + std::to_string(k_) +
         (pad_ ? " pad" + std::to_string(pad_) : "") + (stride_ > 1 ? " stride" + std::to_string(stride_) : "") +
         (bias_ ? "" : " no-bias");
}
template <typename T>
size_t Conv2d<T>::num_params() const {
  return shape(1).w_size() + (bias_ ? size_t(k_) : 0);
}
template <typename T>
std::vector<std::vector<int64_t>> Conv2d<T>::param_shapes() const {
  if (!bias_) return {{k_, this->in_.c, r_, r_}};
  return {{k_, this->in_.c, r_, r_}, {k_}};
}
template <typename T>
void Conv2d<T>::init(T* p, Rng& rng) const {
  init_uniform(p, num_params(), size_t(this->in_.c) * r_ * r_, rng);
}
template <typename T>
void Conv2d<T>::forward(Context& ctx, const T* x, T* y, int n) {
  const ConvShape s = shape(n);
  ops::conv2d_forward<T>(ctx, s, x, this->w_, bias_ ? this->w_ + s.w_size() : nullptr, y);
}
template <typename T>
void Conv2d<T>::backward(Context& ctx, const T* x, const T*, const T* dy, T* dx, int n) {
  const ConvShape s = shape(n);
  ops::conv2d_backward_filter<T>(ctx, s, x, dy, this->dw_, bias_ ? this->dw_ + s.w_size() : nullptr);
  if (dx != nullptr) ops::conv2d_backward_data<T>(ctx, s, dy, this->w_, dx);
}

// ------------------------------------------------------------------ MaxPool2d
template <typename T>
MaxPool2d<T>::MaxPool2d(Shape in, int size, int stride, bool relu) : size_(size), stride_(stride), relu_(relu) {
  this->in_ = in;
  const PoolShape s = shape(1);
  EXPECTS(size >= 1 && stride >= 1 && s.out_h() >= 1 && s.out_w() >= 1,
          "maxpool " << size << "/" << stride << " does not fit input " << to_string(in));
  this->out_ = Shape{in.c, s.out_h(), s.out_w()};
}
template <typename T>
PoolShape MaxPool2d<T>::shape(int n) const {
  PoolShape s;
  s.n = n;
  s.c = this->in_.c;
  s.h = this->in_.h;
  s.w = this->in_.w;
  s.size = size_;
  s.stride = stride_;
  return s;
}
template <typename T>
std::string MaxPool2d<T>::describe() const {
  return std::string(relu_ ? "relu+" : "") + "maxpool" + std::to_string(size_) +
         (stride_ != size_ ? "/" + std::to_string(stride_) : "");
}
template <typename T>
void MaxPool2d<T>::setup(Context& ctx, int max_batch) {
  argmax_ = Buffer<int32_t>(ctx.mem_kind(), size_t(max_batch) * this->out_.size(), ctx.device());
}
template <typename T>
void MaxPool2d<T>::forward(Context& ctx, const T* x, T* y, int n) {
  EXPECTS(size_t(n) * this->out_.size() <= argmax_.size(), "batch " << n << " exceeds the layer's setup size");
  ops::maxpool2d_forward<T>(ctx, shape(n), x, y, argmax_.data(), relu_);
}
template <typename T>
void MaxPool2d<T>::backward(Context& ctx, const T*, const T*, const T* dy, T* dx, int n) {
  if (dx != nullptr) ops::maxpool2d_backward<T>(ctx, shape(n), dy, argmax_.data(), dx);
}

// ------------------------------------------------------------------ ReLU
template <typename T>
ReLU<T>::ReLU(Shape in) {
  this->in_ = in;
  this->out_ = in;
}
template <typename T>
void ReLU<T>::forward(Context& ctx, const T* x, T* y, int n) {
  ops::relu_forward<T>(ctx, x, y, size_t(n) * this->in_.size());
}
template <typename T>
void ReLU<T>::backward(Context& ctx, const T*, const T* y, const T* dy, T* dx, int n) {
  if (dx != nullptr) ops::relu_backward<T>(ctx, y, dy, dx, size_t(n) * this->in_.size());
}

// ------------------------------------------------------------------ BatchNorm2d
template <typename T>
BatchNorm2d<T>::BatchNorm2d(Shape in) {
  this->in_ = in;
  this->out_ = in;
}
template <typename T>
std::vector<std::vector<int64_t>> BatchNorm2d<T>::param_shapes() const {
  return {{this->in_.c}, {this->in_.c}};
}
template <typename T>
std::vector<TensorInfo> BatchNorm2d<T>::param_info() const {
  return {TensorInfo{"weight", {this->in_.c}, false}, TensorInfo{"bias", {this->in_.c}, false}};
}
template <typename T>
std::vector<TensorInfo> BatchNorm2d<T>::buffer_info() const {
  return {TensorInfo{"running_mean", {this->in_.c}, false, TensorKind::RunningStat},
          TensorInfo{"running_var", {this->in_.c}, false, TensorKind::RunningStat},
          TensorInfo{"num_batches_tracked", {}, false, TensorKind::Count}};
}
template <typename T>
void BatchNorm2d<T>::init(T* p, Rng&) const {
  const int c = this->in_.c;
  for (int k = 0; k < c; ++k) p[k] = T(1), p[c + k] = T(0);
}
template <typename T>
void BatchNorm2d<T>::init_buffers(T* b) const {
  const int c = this->in_.c;
  for (int k = 0; k < c; ++k) b[k] = T(0), b[c + k] = T(1);
  b[2 * c] = T(0);
}
template <typename T>
void BatchNorm2d<T>::setup(Context& ctx, int) {
  const size_t c = size_t(this->in_.c);
  mean_ = Buffer<T>(ctx.mem_kind(), c, ctx.device());
  invstd_ = Buffer<T>(ctx.mem_kind(), c, ctx.device());
  var_ = Buffer<T>(ctx.mem_kind(), c, ctx.device());
}
template <typename T>
void BatchNorm2d<T>::forward(Context& ctx, const T* x, T* y, int n) {
  forward(ctx, x, y, n, nullptr, false);
}
template <typename T>
void BatchNorm2d<T>::forward(Context& ctx, const T* x, T* y, int n, const T* add, bool relu) {
  const BnShape s = shape(n);
  const T* gamma = this->w_;
  const T* beta = this->w_ + s.c;
  if (!this->training_) {
    EXPECTS(this->buf_ != nullptr, "batch norm in evaluation mode without its running buffers");
    ops::batchnorm_forward_eval<T>(ctx, s, x, gamma, beta, this->buf_, this->buf_ + s.c, kEps, y);
    if (add != nullptr) ops::axpy<T>(ctx, T(1), add, y, s.size());
    if (relu) ops::relu_forward<T>(ctx, y, y, s.size());
    return;
  }
  ops::batchnorm_forward_train<T>(ctx, s, x, gamma, beta, kEps, y, mean_.data(), invstd_.data(), var_.data(), add,
                                  relu);
  if (this->stats_ != nullptr) {
    ops::scale<T>(ctx, T(1), mean_.data(), this->stats_, size_t(s.c));
    ops::scale<T>(ctx, T(1), var_.data(), this->stats_ + s.c, size_t(s.c));
    ops::fill<T>(ctx, this->stats_ + 2 * s.c, T(1), 1);
  }
}
template <typename T>
void BatchNorm2d<T>::backward(Context& ctx, const T* x, const T*, const T* dy, T* dx, int n) {
  backward_relu(ctx, x, nullptr, dy, dx, n);
}
template <typename T>
void BatchNorm2d<T>::backward_relu(Context& ctx, const T* x, const T* relu_y, const T* dy, T* dx, int n) {
  const BnShape s = shape(n);
  ops::batchnorm_backward<T>(ctx, s, x, dy, this->w_, mean_.data(), invstd_.data(), dx, this->dw_,
                             this->dw_ + s.c, relu_y);
}

// ------------------------------------------------------------------ GlobalAvgPool
template <typename T>
GlobalAvgPool<T>::GlobalAvgPool(Shape in) {
  this->in_ = in;
  this->out_ = Shape{in.c, 1, 1};
}
template <typename T>
void GlobalAvgPool<T>::forward(Context& ctx, const T* x, T* y, int n) {
  ops::global_avgpool_forward<T>(ctx, n, this->in_.c, this->in_.h * this->in_.w, x, y);
}
template <typename T>
void GlobalAvgPool<T>::backward(Context& ctx, const T*, const T*, const T* dy, T* dx, int n) {
  if (dx != nullptr) ops::global_avgpool_backward<T>(ctx, n, this->in_.c, this->in_.h * this->in_.w, dy, dx);
}

// ------------------------------------------------------------------ Dropout
template <typename T>
Dropout<T>::Dropout(Shape in, float p) : p_(p) {
  EXPECTS(p >= 0 && p < 1, "dropout probability " << p);
  this->in_ = in;
  this->out_ = in;
}
template <typename T>
std::string Dropout<T>::describe() const {
  return "dropout(" + std::to_string(int(p_ * 100 + 0.5f)) + "%)";
}
template <typename T>
void Dropout<T>::forward(Context& ctx, const T* x, T* y, int n) {
  const size_t len = size_t(n) * this->in_.size();
  if (!this->training_ || p_ == 0) {
    ops::scale<T>(ctx, T(1), x, y, len);
    return;
  }
  EXPECTS(key_ != nullptr, "dropout in training mode without a key");
  ops::dropout_forward<T>(ctx, x, y, len, p_, key_);
}
template <typename T>
void Dropout<T>::backward(Context& ctx, const T*, const T*, const T* dy, T* dx, int n) {
  if (dx == nullptr) return;
  const size_t len = size_t(n) * this->in_.size();
  if (!this->training_ || p_ == 0) ops::scale<T>(ctx, T(1), dy, dx, len);
  else ops::dropout_backward<T>(ctx, dy, dx, len, p_, key_);
}

// ------------------------------------------------------------------ BasicBlock
template <typename T>
BasicBlock<T>::BasicBlock(Shape in, int out_channels, int stride, bool projection)
    : stride_(stride), projection_(projection) {
  this->in_ = in;
  conv1_ = std::make_unique<Conv2d<T>>(in, out_channels, 3, 1, stride, false);
  const Shape mid = conv1_->out_shape();
  bn1_ = std::make_unique<BatchNorm2d<T>>(mid);
  relu_ = std::make_unique<ReLU<T>>(mid);
  conv2_ = std::make_unique<Conv2d<T>>(mid, out_channels, 3, 1, 1, false);
  bn2_ = std::make_unique<BatchNorm2d<T>>(mid);
  this->out_ = mid;
  const bool same = stride == 1 && in.c == out_channels;
  if (!same && projection) {
    sc_conv_ = std::make_unique<Conv2d<T>>(in, out_channels, 1, 0, stride, false);
    sc_bn_ = std::make_unique<BatchNorm2d<T>>(sc_conv_->out_shape());
  }
  if (!same && !projection)
    EXPECTS(out_channels >= in.c && (out_channels - in.c) % 2 == 0,
            "an option-A shortcut pads channels evenly: " << in.c << " -> " << out_channels);
}
template <typename T>
std::string BasicBlock<T>::describe() const {
  const bool same = stride_ == 1 && this->in_.c == this->out_.c;
  return "basicblock(" + std::to_string(this->out_.c) + (stride_ > 1 ? ", stride " + std::to_string(stride_) : "") +
         (same ? "" : projection_ ? ", projection" : ", option A") + ")";
}
template <typename T>
std::vector<std::pair<std::string, Layer<T>*>> BasicBlock<T>::parts() const {
  std::vector<std::pair<std::string, Layer<T>*>> p = {
      {"conv1", conv1_.get()}, {"bn1", bn1_.get()}, {"conv2", conv2_.get()}, {"bn2", bn2_.get()}};
  if (sc_conv_) {
    p.emplace_back("shortcut.0", sc_conv_.get());
    p.emplace_back("shortcut.1", sc_bn_.get());
  }
  return p;
}
template <typename T>
size_t BasicBlock<T>::num_params() const {
  size_t n = 0;
  for (const auto& [name, l] : parts()) n += l->num_params();
  return n;
}
template <typename T>
std::vector<std::vector<int64_t>> BasicBlock<T>::param_shapes() const {
  std::vector<std::vector<int64_t>> out;
  for (const auto& t : param_info()) out.push_back(t.shape);
  return out;
}
template <typename T>
std::vector<TensorInfo> BasicBlock<T>::param_info() const {
  std::vector<TensorInfo> out;
  for (const auto& [name, l] : parts())
    for (TensorInfo t : l->param_info()) {
      t.name = name + "." + t.name;
      out.push_back(std::move(t));
    }
  return out;
}
template <typename T>
std::vector<TensorInfo> BasicBlock<T>::buffer_info() const {
  std::vector<TensorInfo> out;
  for (const auto& [name, l] : parts())
    for (TensorInfo t : l->buffer_info()) {
      t.name = name + "." + t.name;
      out.push_back(std::move(t));
    }
  return out;
}
template <typename T>
void BasicBlock<T>::init(T* p, Rng& rng) const {
  for (const auto& [name, l] : parts()) {
    l->init(p, rng);
    p += l->num_params();
  }
}
template <typename T>
void BasicBlock<T>::init_buffers(T* b) const {
  for (const auto& [name, l] : parts()) {
    l->init_buffers(b);
    b += l->num_buffers();
  }
}
template <typename T>
void BasicBlock<T>::setup(Context& ctx, int max_batch) {
  for (const auto& [name, l] : parts()) l->setup(ctx, max_batch);
  const MemKind mk = ctx.mem_kind();
  const size_t mid = size_t(max_batch) * this->out_.size();
  for (Buffer<T>* b : {&a1_, &r1_, &a2_, &g1_, &g2_, &g3_}) *b = Buffer<T>(mk, mid, ctx.device());
  if (sc_conv_) {
    s1_ = Buffer<T>(mk, mid, ctx.device());
    s2_ = Buffer<T>(mk, mid, ctx.device());
    gx_ = Buffer<T>(mk, size_t(max_batch) * this->in_.size(), ctx.device());
  }
}
template <typename T>
void BasicBlock<T>::bind(const T* params, T* grads, const T* buffers, T* stats) {
  Layer<T>::bind(params, grads, buffers, stats);
  size_t po = 0, bo = 0;
  for (const auto& [name, l] : parts()) {
    l->bind(params == nullptr ? nullptr : params + po, grads == nullptr ? nullptr : grads + po,
            buffers == nullptr ? nullptr : buffers + bo, stats == nullptr ? nullptr : stats + bo);
    po += l->num_params();
    bo += l->num_buffers();
  }
}
template <typename T>
void BasicBlock<T>::set_training(bool on) {
  Layer<T>::set_training(on);
  for (const auto& [name, l] : parts()) l->set_training(on);
}
template <typename T>
void BasicBlock<T>::forward(Context& ctx, const T* x, T* y, int n) {
  // Batch norm, the shortcut's add and the ReLUs in the batch norms' passes
  // where the shortcut has y's shape.
  conv1_->forward(ctx, x, a1_.data(), n);
  bn1_->forward(ctx, a1_.data(), r1_.data(), n, nullptr, true);
  conv2_->forward(ctx, r1_.data(), a2_.data(), n);
  if (sc_conv_) {
    sc_conv_->forward(ctx, x, s1_.data(), n);
    sc_bn_->forward(ctx, s1_.data(), s2_.data(), n);
    bn2_->forward(ctx, a2_.data(), y, n, s2_.data(), true);
  } else if (stride_ == 1 && this->in_.c == this->out_.c) {
    bn2_->forward(ctx, a2_.data(), y, n, x, true);
  } else {
    const ShortcutShape s{n, this->in_.c, this->in_.h, this->in_.w, this->out_.c, stride_};
    bn2_->forward(ctx, a2_.data(), y, n);
    ops::shortcut_add<T>(ctx, s, x, y);
    relu_->forward(ctx, y, y, n);
  }
}
template <typename T>
void BasicBlock<T>::backward(Context& ctx, const T* x, const T* y, const T* dy, T* dx, int n) {
  T* dz = g1_.data();
  relu_->backward(ctx, nullptr, y, dy, dz, n);
  bn2_->backward(ctx, a2_.data(), nullptr, dz, g2_.data(), n);               // g2: d a2
  conv2_->backward(ctx, r1_.data(), a2_.data(), g2_.data(), g3_.data(), n);  // g3: d r1
  bn1_->backward_relu(ctx, a1_.data(), r1_.data(), g3_.data(), g2_.data(), n);  // g2: d a1, the ReLU's too
  conv1_->backward(ctx, x, a1_.data(), g2_.data(), dx, n);
  if (sc_conv_) {
    sc_bn_->backward(ctx, s1_.data(), s2_.data(), dz, g2_.data(), n);
    sc_conv_->backward(ctx, x, s1_.data(), g2_.data(), dx == nullptr ? nullptr : gx_.data(), n);
    if (dx != nullptr) ops::axpy<T>(ctx, T(1), gx_.data(), dx, size_t(n) * this->in_.size());
  } else if (dx == nullptr) {
  } else if (stride_ == 1 && this->in_.c == this->out_.c) {
    ops::axpy<T>(ctx, T(1), dz, dx, size_t(n) * this->in_.size());
  } else {
    const ShortcutShape s{n, this->in_.c, this->in_.h, this->in_.w, this->out_.c, stride_};
    ops::shortcut_add_backward<T>(ctx, s, dz, dx);
  }
}

template class Layer<float>;
template class Layer<double>;
template class BatchNorm2d<float>;
template class BatchNorm2d<double>;
template class GlobalAvgPool<float>;
template class GlobalAvgPool<double>;
template class Dropout<float>;
template class Dropout<double>;
template class BasicBlock<float>;
template class BasicBlock<double>;
template class Linear<float>;
template class Linear<double>;
template class Conv2d<float>;
template class Conv2d<double>;
template class MaxPool2d<float>;
template class MaxPool2d<double>;
template class ReLU<float>;
template class ReLU<double>;

}  // namespace adasync
