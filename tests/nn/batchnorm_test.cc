// BatchNorm1d/2d/3d: PyTorch's defaults, names, momentum None, track_running_stats off,
// train/eval switching, gradient accumulation, and the module-level errors. Values over several
// steps are checked against PyTorch in tests/functional/batch_norm_golden_test.cc.
#include "bnorm/nn/batchnorm.h"

#include <gtest/gtest.h>

#include "support/compare.h"
#include "support/fills.h"

namespace bnorm::nn {
namespace {

using test::make_tensor;
using test::randn;

TEST(BatchNormModule, PyTorchDefaultsAndNames) {
  BatchNorm2d bn(4);
  EXPECT_EQ(bn.repr(),
            "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)");
  EXPECT_TRUE(bn.is_training());
  auto params = bn.named_parameters();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0].first, "weight");
  EXPECT_EQ(params[1].first, "bias");
  EXPECT_EQ(bn.weight().value.to_vector(), std::vector<double>(4, 1.0));
  EXPECT_EQ(bn.bias().value.to_vector(), std::vector<double>(4, 0.0));
  auto buffers = bn.named_buffers();
  ASSERT_EQ(buffers.size(), 2u);
  EXPECT_EQ(buffers[0].first, "running_mean");
  EXPECT_EQ(buffers[1].first, "running_var");
  EXPECT_EQ(bn.running_mean().to_vector(), std::vector<double>(4, 0.0));
  EXPECT_EQ(bn.running_var().to_vector(), std::vector<double>(4, 1.0));
  EXPECT_EQ(bn.num_batches_tracked(), 0);
}

TEST(BatchNormModule, MomentumNoneIsACumulativeAverage) {
  BatchNormOptions o;
  o.momentum = std::nullopt;
  BatchNorm1d bn(1, o);
  // Batches with means 1, 2, 3, 4: the cumulative average of the means is 2.5.
  for (int k = 1; k <= 4; ++k) {
    bn.forward(
        Tensor::from_vector<float>({2, 1}, {static_cast<float>(k) - 1, static_cast<float>(k) + 1}));
  }
  EXPECT_EQ(bn.num_batches_tracked(), 4);
  EXPECT_NEAR(bn.running_mean().item({0}), 2.5, 1e-6);
  EXPECT_NEAR(bn.running_var().item({0}), 2.0, 1e-6);  // unbiased var of {k−1, k+1} is 2
}

TEST(BatchNormModule, EvalUsesRunningStatsUnlessNotTracking) {
  Tensor x = make_tensor({6, 2}, randn(12, 1, 3.0, 2.0), DType::kFloat32);
  BatchNorm1d tracked(2);
  tracked.eval();
  // Fresh buffers: mean 0, var 1, so eval is y ≈ x / sqrt(1 + eps).
  EXPECT_TRUE(test::all_close(
      tracked.forward(x).to_vector(),
      [&] {
        auto v = x.to_vector();
        for (double& e : v) e /= std::sqrt(1 + 1e-5);
        return v;
      }(),
      1e-6, 1e-6));
  EXPECT_EQ(tracked.num_batches_tracked(), 0);
  BatchNormOptions o;
  o.track_running_stats = false;
  BatchNorm1d untracked(2, o);
  untracked.eval();
  Tensor y = untracked.forward(x);
  double mean = 0;
  for (int64_t i = 0; i < 6; ++i) mean += y.item({i, 0});
  EXPECT_NEAR(mean, 0.0, 1e-5);  // batch statistics in eval
  EXPECT_TRUE(untracked.named_buffers().empty());
}

TEST(BatchNormModule, GradientsAccumulateUntilZeroGrad) {
  BatchNorm1d bn(3);
  Tensor x = make_tensor({5, 3}, randn(15, 2), DType::kFloat32);
  Tensor dy = make_tensor({5, 3}, randn(15, 3), DType::kFloat32);
  bn.forward(x);
  bn.backward(dy);
  const auto once = bn.bias().grad.to_vector();
  bn.forward(x);
  bn.backward(dy);
  auto twice = bn.bias().grad.to_vector();
  for (std::size_t i = 0; i < once.size(); ++i) EXPECT_NEAR(twice[i], 2 * once[i], 1e-5);
  bn.zero_grad();
  EXPECT_EQ(bn.bias().grad.to_vector(), std::vector<double>(3, 0.0));
}

TEST(BatchNormModule, NoAffineHasNoParameters) {
  BatchNormOptions o;
  o.affine = false;
  BatchNorm2d bn(2, o);
  EXPECT_TRUE(bn.named_parameters().empty());
  Tensor x = make_tensor({2, 2, 3, 3}, randn(36, 4), DType::kFloat32);
  Tensor dx = bn.backward((bn.forward(x), Tensor::ones({2, 2, 3, 3})));
  for (double v : dx.to_vector()) EXPECT_NEAR(v, 0.0, 1e-5);  // d/dx Σ x̂ = 0
}

TEST(BatchNormModule, Errors) {
  auto expect_msg = [](auto fn, const std::string& text) {
    try {
      fn();
      ADD_FAILURE() << "expected: " << text;
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos) << e.what();
    }
  };
  BatchNorm2d bn2(4);
  expect_msg(
      [&] {
        bn2.forward(Tensor::ones({2, 4, 3}));
      },
      "BatchNorm2d: expected 4D input (got 3D input)");
  expect_msg(
      [&] {
        bn2.forward(Tensor::ones({2, 5, 3, 3}));
      },
      "BatchNorm2d: input must have C=num_features=4 channels, got 5");
  BatchNorm1d bn1(4);
  expect_msg(
      [&] {
        bn1.forward(Tensor::ones({2, 4, 3, 3}));
      },
      "BatchNorm1d: expected 2D or 3D input (got 4D input)");
  expect_msg(
      [&] {
        bn1.forward(Tensor::ones({1, 4}));
      },
      "Expected more than 1 value per channel when training, got input size (1, 4)");
  EXPECT_EQ(bn1.num_batches_tracked(), 0);  // a rejected batch is not counted
  BatchNorm3d bn3(4);
  expect_msg(
      [&] {
        bn3.forward(Tensor::ones({2, 4, 3, 3}));
      },
      "BatchNorm3d: expected 5D input (got 4D input)");
  expect_msg(
      [&] {
        bn3.backward(Tensor::ones({2, 4, 3, 3, 3}));
      },
      "BatchNorm3d: backward called before forward");
  expect_msg([] { BatchNorm1d bad(0); }, "num_features must be >= 1, got 0");
  expect_msg(
      [] {
        BatchNormOptions o;
        o.momentum = 2.0;
        BatchNorm1d bad(3, o);
      },
      "momentum must be in [0, 1] or None, got 2");
}

}  // namespace
}  // namespace bnorm::nn
