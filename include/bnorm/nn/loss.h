// Losses: CrossEntropyLoss (stable log-softmax, mean over the batch) and MSELoss (mean).
// Checked by tests/nn/layers_test.cc (finite differences, PyTorch values).
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::nn {

/// PyTorch: nn.CrossEntropyLoss() with reduction='mean'.
class CrossEntropyLoss {
 public:
  /// logits (N, K) float32, targets N class indices in [0, K). Returns the mean loss; caches the
  /// softmax for backward. Throws ValueError for a size mismatch or a target out of range.
  double forward(const Tensor& logits, const std::vector<int64_t>& targets);
  /// dL/dlogits = (softmax − onehot)/N.
  Tensor backward() const;
  /// Number of rows whose arg-max equals the target, from the last forward.
  int64_t correct() const { return correct_; }

 private:
  Tensor probs_;
  std::vector<int64_t> targets_;
  int64_t correct_ = 0;
};

/// PyTorch: nn.MSELoss() with reduction='mean'.
class MSELoss {
 public:
  /// Throws ValueError when the shapes differ.
  double forward(const Tensor& prediction, const Tensor& target);
  Tensor backward() const;

 private:
  Tensor diff_;
};

}  // namespace bnorm::nn
