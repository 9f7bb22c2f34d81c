// optim::Adam as torch.optim.Adam (bias-corrected moments, L2 weight decay added to the grad).
// Checked by tests/optim/optim_test.cc.
#pragma once

#include <cstdint>

#include "bnorm/optim/optimizer.h"

namespace bnorm::optim {

struct AdamOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;
};

class Adam : public Optimizer {
 public:
  /// Throws ValueError for lr < 0 or betas outside [0, 1).
  Adam(std::vector<nn::Parameter*> params, double lr = 1e-3, AdamOptions options = {});
  void step() override;
  std::vector<std::pair<std::string, Tensor>> state() const override;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state) override;

 private:
  AdamOptions options_;
  int64_t t_ = 0;
  std::vector<std::vector<float>> m_, v_;
};

}  // namespace bnorm::optim
