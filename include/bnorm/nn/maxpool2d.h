// nn::MaxPool2d: max over k×k windows with a stride (default k), NCHW float32. Checked by
// tests/nn/layers_test.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class MaxPool2d : public Module {
 public:
  /// stride 0 means stride = kernel_size. Throws ValueError for kernel_size < 1.
  explicit MaxPool2d(int64_t kernel_size, int64_t stride = 0);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override;

 private:
  int64_t k_, stride_;
  Shape in_shape_;
  std::vector<int64_t> argmax_;  // input offset of each output's maximum
};

}  // namespace bnorm::nn
