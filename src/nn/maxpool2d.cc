// nn::MaxPool2d. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/maxpool2d.h"

#include <limits>

#include "bnorm/parallel.h"
#include "internal/checks.h"

namespace bnorm::nn {

MaxPool2d::MaxPool2d(int64_t kernel_size, int64_t stride)
    : k_(kernel_size), stride_(stride == 0 ? kernel_size : stride) {
  if (k_ < 1 || stride_ < 1) {
    throw ValueError(fmt::format("MaxPool2d: kernel_size and stride must be >= 1, got {} and {}",
                                 kernel_size, stride));
  }
}

Tensor MaxPool2d::forward(const Tensor& x) {
  detail::check_float_input("MaxPool2d", "input", x, 4);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (h < k_ || w < k_) {
    throw ValueError(
        fmt::format("MaxPool2d: input {}x{} must be at least kernel_size {}", h, w, k_));
  }
  const int64_t ho = (h - k_) / stride_ + 1, wo = (w - k_) / stride_ + 1;
  Tensor y = Tensor::empty({n, c, ho, wo});
  argmax_.assign(static_cast<std::size_t>(y.numel()), 0);
  const float* xp = x.data<float>();
  float* yp = y.data<float>();
  parallel_for(0, n * c, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t plane = i0; plane < i1; ++plane) {
      for (int64_t oy = 0; oy < ho; ++oy)
        for (int64_t ox = 0; ox < wo; ++ox) {
          float best = -std::numeric_limits<float>::infinity();
          int64_t arg = plane * h * w + oy * stride_ * w + ox * stride_;
          for (int64_t ky = 0; ky < k_; ++ky)
            for (int64_t kx = 0; kx < k_; ++kx) {
              const int64_t off = plane * h * w + (oy * stride_ + ky) * w + ox * stride_ + kx;
              if (xp[off] > best || xp[off] != xp[off]) {  // NaN wins, as in PyTorch
                best = xp[off];
                arg = off;
              }
            }
          const int64_t o = (plane * ho + oy) * wo + ox;
          yp[o] = best;
          argmax_[o] = arg;
        }
    }
  });
  in_shape_ = x.shape();
  return y;
}

Tensor MaxPool2d::backward(const Tensor& dy) {
  if (in_shape_.empty()) throw ValueError("MaxPool2d: backward called before forward");
  if (!dy.defined() || dy.numel() != static_cast<int64_t>(argmax_.size())) {
    throw ValueError("MaxPool2d: dy must have the output's shape");
  }
  Tensor dx = Tensor::zeros(in_shape_);
  float* d = dx.data<float>();
  const float* g = dy.data<float>();
  for (std::size_t i = 0; i < argmax_.size(); ++i) d[argmax_[i]] += g[i];
  return dx;
}

std::string MaxPool2d::repr() const {
  return fmt::format("MaxPool2d(kernel_size={}, stride={})", k_, stride_);
}

}  // namespace bnorm::nn
