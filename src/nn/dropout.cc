// nn::Dropout. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/dropout.h"

#include <random>

#include "bnorm/random.h"
#include "internal/checks.h"

namespace bnorm::nn {

Dropout::Dropout(double p) : p_(p) {
  if (!(p >= 0 && p < 1)) throw ValueError(fmt::format("Dropout: p must be in [0, 1), got {}", p));
}

Tensor Dropout::forward(const Tensor& x) {
  if (!x.defined() || x.dtype() != DType::kFloat32 || !x.is_contiguous()) {
    throw ValueError("Dropout: input must be a defined contiguous float32 tensor");
  }
  if (!training_ || p_ == 0) {
    mask_ = Tensor();
    return x;
  }
  mask_ = Tensor::empty(x.shape());
  Tensor y = Tensor::empty(x.shape());
  std::bernoulli_distribution keep(1 - p_);
  const float scale = static_cast<float>(1 / (1 - p_));
  float* m = mask_.data<float>();
  const float* a = x.data<float>();
  float* b = y.data<float>();
  for (int64_t i = 0; i < x.numel(); ++i) {
    m[i] = keep(generator()) ? scale : 0.0f;
    b[i] = a[i] * m[i];
  }
  return y;
}

Tensor Dropout::backward(const Tensor& dy) {
  if (!mask_.defined()) return dy;
  detail::check_grad_shape("Dropout", dy, mask_.shape());
  Tensor dx = Tensor::empty(dy.shape());
  const float* m = mask_.data<float>();
  const float* g = dy.data<float>();
  float* o = dx.data<float>();
  for (int64_t i = 0; i < dy.numel(); ++i) o[i] = g[i] * m[i];
  return dx;
}

std::string Dropout::repr() const { return fmt::format("Dropout(p={})", p_); }

}  // namespace bnorm::nn
