// nn::Conv2d: 2-d convolution on NCHW float32 input, square kernel, stride and zero padding,
// as im2col + GEMM (CBLAS). Checked by tests/nn/layers_test.cc (finite differences and a direct
// convolution oracle).
#pragma once

#include <cstdint>

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class Conv2d : public Module {
 public:
  /// weight (out, in, k, k), bias (out), PyTorch's init U(−1/√(in·k·k), +). Throws ValueError
  /// for sizes < 1 or padding < 0.
  Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
         int64_t padding = 0, bool bias = true);

  /// x: (N, in_channels, H, W) → (N, out_channels, Ho, Wo), Ho = (H + 2p − k)/s + 1.
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::vector<std::pair<std::string, Parameter*>> named_parameters() override;
  std::string repr() const override;

  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }

 private:
  int64_t in_, out_, k_, stride_, pad_;
  bool has_bias_;
  Parameter weight_, bias_;
  Tensor x_;
  int64_t ho_ = 0, wo_ = 0;
};

}  // namespace bnorm::nn
