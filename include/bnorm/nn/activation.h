// Elementwise activations: ReLU, Sigmoid, Tanh, Identity (any shape, float32).
// Checked by tests/nn/layers_test.cc.
#pragma once

#include "bnorm/nn/module.h"

namespace bnorm::nn {

/// max(0, x). PyTorch: nn.ReLU.
class ReLU : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override { return "ReLU()"; }

 private:
  Tensor y_;
};

/// 1/(1 + e^−x). PyTorch: nn.Sigmoid.
class Sigmoid : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override { return "Sigmoid()"; }

 private:
  Tensor y_;
};

/// tanh(x). PyTorch: nn.Tanh.
class Tanh : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override { return "Tanh()"; }

 private:
  Tensor y_;
};

/// y = x; the "no nonlinearity" network of the FAQ experiment. PyTorch: nn.Identity.
class Identity : public Module {
 public:
  Tensor forward(const Tensor& x) override { return x; }
  Tensor backward(const Tensor& dy) override { return dy; }
  std::string repr() const override { return "Identity()"; }
};

}  // namespace bnorm::nn
