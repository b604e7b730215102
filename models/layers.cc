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
Conv2d<T>::Conv2d(Shape in, int out_channels, int kernel, int pad, int stride)
    : k_(out_channels), r_(kernel), pad_(pad), stride_(stride) {
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
         (pad_ ? " pad" + std::to_string(pad_) : "") + (stride_ > 1 ? " stride" + std::to_string(stride_) : "");
}
template <typename T>
size_t Conv2d<T>::num_params() const {
  return shape(1).w_size() + size_t(k_);
}
template <typename T>
std::vector<std::vector<int64_t>> Conv2d<T>::param_shapes() const {
  return {{k_, this->in_.c, r_, r_}, {k_}};
}
template <typename T>
void Conv2d<T>::init(T* p, Rng& rng) const {
  init_uniform(p, num_params(), size_t(this->in_.c) * r_ * r_, rng);
}
template <typename T>
void Conv2d<T>::forward(Context& ctx, const T* x, T* y, int n) {
  const ConvShape s = shape(n);
  ops::conv2d_forward<T>(ctx, s, x, this->w_, this->w_ + s.w_size(), y);
}
template <typename T>
void Conv2d<T>::backward(Context& ctx, const T* x, const T*, const T* dy, T* dx, int n) {
  const ConvShape s = shape(n);
  ops::conv2d_backward_filter<T>(ctx, s, x, dy, this->dw_, this->dw_ + s.w_size());
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

template class Linear<float>;
template class Linear<double>;
template class Conv2d<float>;
template class Conv2d<double>;
template class MaxPool2d<float>;
template class MaxPool2d<double>;
template class ReLU<float>;
template class ReLU<double>;

}  // namespace adasync
