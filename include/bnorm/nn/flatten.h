// nn::Flatten: (N, d1, d2, …) → (N, d1·d2·…). Checked by tests/nn/layers_test.cc.
#pragma once

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class Flatten : public Module {
 public:
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::string repr() const override { return "Flatten()"; }

 private:
  Shape in_shape_;
};

}  // namespace bnorm::nn
