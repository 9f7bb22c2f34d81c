// SGD (momentum, Nesterov, weight decay) and Adam against values computed by hand from
// torch.optim's update rules; schedules.
#include <gtest/gtest.h>

#include <cmath>

#include "bnorm/optim/adam.h"
#include "bnorm/optim/lr_scheduler.h"
#include "bnorm/optim/sgd.h"

namespace bnorm::optim {
namespace {

nn::Parameter param(float value, float grad) {
  return {Tensor::from_vector<float>({1}, {value}), Tensor::from_vector<float>({1}, {grad})};
}

TEST(Optim, SgdMomentumNesterovWeightDecay) {
  nn::Parameter p = param(1.0f, 0.5f);
  SGD plain({&p}, 0.1);
  plain.step();
  EXPECT_FLOAT_EQ(p.value.item({0}), 0.95f);
  nn::Parameter q = param(1.0f, 0.5f);
  SGD mom({&q}, 0.1, {.momentum = 0.9, .weight_decay = 0.1});
  mom.step();  // d = 0.5 + 0.1 = 0.6, b = 0.6, p = 1 − 0.06
  EXPECT_FLOAT_EQ(q.value.item({0}), 0.94f);
  mom.step();  // d = 0.5 + 0.094 = 0.594, b = 0.54 + 0.594 = 1.134, p = 0.94 − 0.1134
  EXPECT_NEAR(q.value.item({0}), 0.8266, 1e-6);
  nn::Parameter r = param(1.0f, 0.5f);
  SGD nest({&r}, 0.1, {.momentum = 0.9, .nesterov = true});
  nest.step();  // b = 0.5, d = 0.5 + 0.45 = 0.95
  EXPECT_FLOAT_EQ(r.value.item({0}), 0.905f);
  EXPECT_THROW(SGD({&r}, 0.1, {.nesterov = true}), ValueError);
  EXPECT_THROW(SGD({&r}, -1), ValueError);
}

TEST(Optim, AdamFirstStepsAreLrTimesSign) {
  nn::Parameter p = param(1.0f, 0.5f);
  Adam adam({&p}, 0.01);
  adam.step();  // m̂ = g, v̂ = g² → step lr·g/(|g| + eps)
  EXPECT_NEAR(p.value.item({0}), 0.99, 1e-6);
  adam.step();
  EXPECT_NEAR(p.value.item({0}), 0.98, 1e-6);
}

TEST(Optim, Schedules) {
  nn::Parameter p = param(1.0f, 0.0f);
  SGD opt({&p}, 1.0);
  StepLR step(opt, 2, 0.5);
  step.step();
  EXPECT_DOUBLE_EQ(opt.lr(), 1.0);
  step.step();
  EXPECT_DOUBLE_EQ(opt.lr(), 0.5);
  SGD opt2({&p}, 1.0);
  CosineAnnealingLR cos(opt2, 4);
  cos.step();
  cos.step();
  EXPECT_NEAR(opt2.lr(), 0.5, 1e-12);
  cos.step();
  cos.step();
  EXPECT_NEAR(opt2.lr(), 0.0, 1e-12);
}

}  // namespace
}  // namespace bnorm::optim
