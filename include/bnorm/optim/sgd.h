// optim::SGD with momentum, dampening, Nesterov and weight decay, exactly as torch.optim.SGD.
// Checked by tests/optim/optim_test.cc.
#pragma once

#include "bnorm/optim/optimizer.h"

namespace bnorm::optim {

struct SGDOptions {
  double momentum = 0;
  double dampening = 0;
  double weight_decay = 0;
  bool nesterov = false;
};

/// g = grad + weight_decay·p; b = momentum·b + (1 − dampening)·g (b = g at the first step);
/// g = nesterov ? g + momentum·b : b (when momentum ≠ 0); p −= lr·g.
class SGD : public Optimizer {
 public:
  /// Throws ValueError for lr < 0, momentum < 0, weight_decay < 0, or Nesterov without momentum
  /// or with dampening.
  SGD(std::vector<nn::Parameter*> params, double lr, SGDOptions options = {});
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  SGDOptions options_;
  std::vector<std::vector<float>> buffers_;
};

}  // namespace bnorm::optim
