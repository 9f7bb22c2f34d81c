// nn::Linear: y = x·Wᵀ + b on (N, in_features) float32 input, through CBLAS (OpenBLAS).
// Checked by tests/nn/layers_test.cc (finite differences, PyTorch init bounds).
#pragma once

#include <cstdint>

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class Linear : public Module {
 public:
  /// weight (out, in) and bias (out) drawn as PyTorch does: U(−1/√in, 1/√in) from the global
  /// generator (bnorm::manual_seed). bias = false drops the bias (redundant before a BatchNorm).
  /// Throws ValueError for sizes < 1.
  Linear(int64_t in_features, int64_t out_features, bool bias = true);

  /// x: (N, in_features) float32 → (N, out_features). Throws ValueError for another shape.
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  std::vector<std::pair<std::string, Parameter*>> named_parameters() override;
  std::string repr() const override;

  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }
  bool has_bias() const { return has_bias_; }

 private:
  int64_t in_, out_;
  bool has_bias_;
  Parameter weight_, bias_;
  Tensor x_;
};

}  // namespace bnorm::nn
