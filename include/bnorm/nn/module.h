// nn::Module: the base of every layer. Explicit forward/backward (no autograd tape): forward
// caches what backward needs; backward returns dL/dx and *accumulates* dL/dparam into each
// Parameter's grad until zero_grad(), as PyTorch's .grad does. Checked by tests/nn/*.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::nn {

/// A learnable tensor and its accumulated gradient (same shape and dtype).
struct Parameter {
  Tensor value;
  Tensor grad;
};

class Module {
 public:
  virtual ~Module() = default;

  /// Computes the output for x and caches what backward needs.
  virtual Tensor forward(const Tensor& x) = 0;
  /// Given dL/dy for the last forward, returns dL/dx and adds dL/dparam into the grads.
  /// Throws ValueError when called before forward or with dy of the wrong shape.
  virtual Tensor backward(const Tensor& dy) = 0;

  /// Sets training mode (true) or evaluation mode (false); PyTorch: module.train(mode).
  virtual void train(bool on = true) { training_ = on; }
  /// Same as train(false); PyTorch: module.eval().
  void eval() { train(false); }
  bool is_training() const { return training_; }

  /// The parameters with PyTorch's names ("weight", "bias"; "0.weight" inside Sequential).
  virtual std::vector<std::pair<std::string, Parameter*>> named_parameters() { return {}; }
  /// The buffers with PyTorch's names ("running_mean", "running_var").
  virtual std::vector<std::pair<std::string, Tensor*>> named_buffers() { return {}; }
  /// Integer buffers ("num_batches_tracked"), saved as int64 in checkpoints.
  virtual std::vector<std::pair<std::string, int64_t*>> named_int_buffers() { return {}; }
  /// Sets every parameter's grad to zero.
  void zero_grad();
  /// A one-line description, as PyTorch's repr: "BatchNorm2d(64, eps=1e-05, momentum=0.1, ...)".
  virtual std::string repr() const = 0;

 protected:
  bool training_ = true;
};

}  // namespace bnorm::nn
