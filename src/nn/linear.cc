// nn::Linear on CBLAS. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/linear.h"

#include <cmath>
#include <random>

#include "bnorm/random.h"
#include "internal/blas.h"
#include "internal/checks.h"

namespace bnorm::nn {

Linear::Linear(int64_t in_features, int64_t out_features, bool bias)
    : in_(in_features), out_(out_features), has_bias_(bias) {
  if (in_features < 1 || out_features < 1) {
    throw ValueError(fmt::format("Linear: in_features and out_features must be >= 1, got {} and {}",
                                 in_features, out_features));
  }
  // PyTorch: kaiming_uniform_(a=√5) on the weight is U(−1/√in, 1/√in); the bias uses the same
  // bound.
  const float bound = 1.0f / std::sqrt(static_cast<float>(in_features));
  std::uniform_real_distribution<float> u(-bound, bound);
  weight_.value = Tensor::empty({out_, in_});
  float* w = weight_.value.data<float>();
  for (int64_t i = 0; i < out_ * in_; ++i) w[i] = u(generator());
  weight_.grad = Tensor::zeros({out_, in_});
  if (has_bias_) {
    bias_.value = Tensor::empty({out_});
    float* b = bias_.value.data<float>();
    for (int64_t i = 0; i < out_; ++i) b[i] = u(generator());
    bias_.grad = Tensor::zeros({out_});
  }
}

Tensor Linear::forward(const Tensor& x) {
  detail::check_float_input("Linear", "input", x, 2);
  if (x.size(1) != in_) {
    throw ValueError(
        fmt::format("Linear: input must have in_features={} columns, got {} (shape {})", in_,
                    x.size(1), shape_str(x.shape())));
  }
  const int64_t n = x.size(0);
  Tensor y = Tensor::empty({n, out_});
  float* yp = y.data<float>();
  if (has_bias_) {
    const float* b = bias_.value.data<float>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out_; ++j) yp[i * out_ + j] = b[j];
  }
  detail::sgemm(false, true, n, out_, in_, 1.0f, x.data<float>(), weight_.value.data<float>(),
                has_bias_ ? 1.0f : 0.0f, yp);
  x_ = x;
  return y;
}

Tensor Linear::backward(const Tensor& dy) {
  if (!x_.defined()) throw ValueError("Linear: backward called before forward");
  const int64_t n = x_.size(0);
  detail::check_grad_shape("Linear", dy, {n, out_});
  const float* g = dy.data<float>();
  // dW += dyᵀ·x ; db += Σ_rows dy ; dx = dy·W
  detail::sgemm(true, false, out_, in_, n, 1.0f, g, x_.data<float>(), 1.0f,
                weight_.grad.data<float>());
  if (has_bias_) {
    float* db = bias_.grad.data<float>();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < out_; ++j) db[j] += g[i * out_ + j];
  }
  Tensor dx = Tensor::empty({n, in_});
  detail::sgemm(false, false, n, in_, out_, 1.0f, g, weight_.value.data<float>(), 0.0f,
                dx.data<float>());
  return dx;
}

std::vector<std::pair<std::string, Parameter*>> Linear::named_parameters() {
  if (!has_bias_) return {{"weight", &weight_}};
  return {{"weight", &weight_}, {"bias", &bias_}};
}

std::string Linear::repr() const {
  return fmt::format("Linear(in_features={}, out_features={}, bias={})", in_, out_,
                     has_bias_ ? "True" : "False");
}

}  // namespace bnorm::nn
