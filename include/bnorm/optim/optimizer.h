// optim::Optimizer: the base of SGD and Adam; holds the parameters and the learning rate.
#pragma once

#include <vector>

#include "bnorm/nn/module.h"

namespace bnorm::optim {

class Optimizer {
 public:
  explicit Optimizer(std::vector<nn::Parameter*> params, double lr);
  virtual ~Optimizer() = default;
  /// Applies one update from the accumulated grads.
  virtual void step() = 0;
  /// Sets every grad to zero.
  void zero_grad();
  /// The optimizer's internal state by name ("momentum_buffer.3", "exp_avg.0", "step"), as
  /// float32 tensors, for checkpoints; an empty buffer (not yet created) is omitted.
  virtual std::vector<std::pair<std::string, Tensor>> state() const = 0;
  /// Restores what state() returned. Throws ValueError for a missing or mis-shaped entry.
  virtual void load_state(const std::vector<std::pair<std::string, Tensor>>& state) = 0;
  double lr() const { return lr_; }
  void set_lr(double lr) { lr_ = lr; }

 protected:
  std::vector<nn::Parameter*> params_;
  double lr_;
};

/// The parameters of a module as the list an optimizer takes.
std::vector<nn::Parameter*> parameters_of(nn::Module& m);

}  // namespace bnorm::optim
