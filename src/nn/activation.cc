// ReLU, Sigmoid, Tanh. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/activation.h"

#include <cmath>

#include "internal/checks.h"

namespace bnorm::nn {

namespace {
// Applies f elementwise to a contiguous float32 tensor of any rank.
template <typename F>
Tensor map(const char* fn, const Tensor& x, F f) {
  if (!x.defined() || x.dtype() != DType::kFloat32) {
    throw ValueError(fmt::format("{}: input must be a defined float32 tensor", fn));
  }
  Tensor src = x.is_contiguous() ? x : x.clone(MemoryFormat::kContiguous);
  Tensor y = Tensor::empty(src.shape());
  const float* a = src.data<float>();
  float* b = y.data<float>();
  const int64_t n = src.numel();
  for (int64_t i = 0; i < n; ++i) b[i] = f(a[i]);
  return y;
}

// dx = dy·d(y) where d is the derivative written in terms of the output y.
template <typename D>
Tensor grad(const char* fn, const Tensor& y, const Tensor& dy, D d) {
  if (!y.defined()) throw ValueError(fmt::format("{}: backward called before forward", fn));
  detail::check_grad_shape(fn, dy, y.shape());
  Tensor g = dy.is_contiguous() ? dy : dy.clone(MemoryFormat::kContiguous);
  Tensor dx = Tensor::empty(y.shape());
  const float* yp = y.data<float>();
  const float* gp = g.data<float>();
  float* o = dx.data<float>();
  const int64_t n = y.numel();
  for (int64_t i = 0; i < n; ++i) o[i] = gp[i] * d(yp[i]);
  return dx;
}
}  // namespace

Tensor ReLU::forward(const Tensor& x) {
  y_ = map("ReLU", x, [](float v) { return v > 0 ? v : 0.0f; });
  return y_;
}
Tensor ReLU::backward(const Tensor& dy) {
  return grad("ReLU", y_, dy, [](float y) { return y > 0 ? 1.0f : 0.0f; });
}

Tensor Sigmoid::forward(const Tensor& x) {
  y_ = map("Sigmoid", x, [](float v) { return 1.0f / (1.0f + std::exp(-v)); });
  return y_;
}
Tensor Sigmoid::backward(const Tensor& dy) {
  return grad("Sigmoid", y_, dy, [](float y) { return y * (1.0f - y); });
}

Tensor Tanh::forward(const Tensor& x) {
  y_ = map("Tanh", x, [](float v) { return std::tanh(v); });
  return y_;
}
Tensor Tanh::backward(const Tensor& dy) {
  return grad("Tanh", y_, dy, [](float y) { return 1.0f - y * y; });
}

}  // namespace bnorm::nn
