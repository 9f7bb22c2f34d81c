// nn::Dropout: zeroes each element with probability p in training and scales the rest by
// 1/(1 − p); identity in eval. Masks come from the global generator. Checked by
// tests/nn/layers_test.cc.
#pragma once

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class Dropout : public Module {
 public:
  /// Throws ValueError unless 0 <= p < 1.
  explicit Dropout(double p = 0.5);
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override;

 private:
  double p_;
  Tensor mask_;  // scaled keep mask, or undefined in eval
};

}  // namespace bnorm::nn
