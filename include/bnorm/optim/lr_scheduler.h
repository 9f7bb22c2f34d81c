// Learning-rate schedules, stepped once per epoch or per step by the caller:
// StepLR (lr·gamma every step_size) and CosineAnnealingLR (to eta_min over t_max), as PyTorch's.
#pragma once

#include <cstdint>

#include "bnorm/optim/optimizer.h"

namespace bnorm::optim {

class StepLR {
 public:
  StepLR(Optimizer& opt, int64_t step_size, double gamma = 0.1);
  /// Advances one period and sets the optimizer's lr.
  void step();

 private:
  Optimizer& opt_;
  double base_lr_;
  int64_t step_size_, t_ = 0;
  double gamma_;
};

class CosineAnnealingLR {
 public:
  CosineAnnealingLR(Optimizer& opt, int64_t t_max, double eta_min = 0);
  void step();

 private:
  Optimizer& opt_;
  double base_lr_;
  int64_t t_max_, t_ = 0;
  double eta_min_;
};

}  // namespace bnorm::optim
