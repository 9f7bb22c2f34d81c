// Every nn layer's backward vs central finite differences (float32 layers, so steps of 1e-2 and
// tolerances of a few 1e-3 relative), plus shapes, PyTorch names and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "bnorm/nn/activation.h"
#include "bnorm/nn/batchnorm.h"
#include "bnorm/nn/conv2d.h"
#include "bnorm/nn/dropout.h"
#include "bnorm/nn/flatten.h"
#include "bnorm/nn/linear.h"
#include "bnorm/nn/loss.h"
#include "bnorm/nn/maxpool2d.h"
#include "bnorm/nn/sequential.h"
#include "bnorm/random.h"
#include "support/fills.h"

namespace bnorm::nn {
namespace {

using test::make_tensor;
using test::randn;

double weighted_sum(const Tensor& y, const std::vector<double>& g) {
  const auto v = y.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < v.size(); ++i) s += v[i] * g[i];
  return s;
}

// Checks dx and every parameter grad of `m` at x against central differences of L = Σ y·g.
void check_gradients(Module& m, const Tensor& x, double h = 1e-2, double tol = 5e-3) {
  m.zero_grad();
  Tensor y = m.forward(x);
  const auto g = randn(static_cast<std::size_t>(y.numel()), 99);
  Tensor dx = m.backward(make_tensor(y.shape(), g, DType::kFloat32));
  auto numeric = [&](float* p) {
    const float orig = *p;
    *p = static_cast<float>(orig + h);
    const double lp = weighted_sum(m.forward(x), g);
    *p = static_cast<float>(orig - h);
    const double lm = weighted_sum(m.forward(x), g);
    *p = orig;
    return (lp - lm) / (2 * h);
  };
  auto close = [&](double a, double n) { return std::fabs(a - n) <= tol * (1 + std::fabs(n)); };
  Tensor xc = x;
  const int64_t stride_x = std::max<int64_t>(1, x.numel() / 25);
  for (int64_t i = 0; i < x.numel(); i += stride_x) {
    const double n = numeric(xc.data<float>() + i);
    const double a = dx.to_vector()[i];
    EXPECT_TRUE(close(a, n)) << m.repr() << " dx[" << i << "]: analytic " << a << " numeric " << n;
  }
  for (auto& [name, p] : m.named_parameters()) {
    const auto grad = p->grad.to_vector();
    const int64_t stride = std::max<int64_t>(1, p->value.numel() / 15);
    for (int64_t i = 0; i < p->value.numel(); i += stride) {
      const double n = numeric(p->value.data<float>() + i);
      EXPECT_TRUE(close(grad[i], n))
          << m.repr() << " d" << name << "[" << i << "]: analytic " << grad[i] << " numeric " << n;
    }
  }
}

TEST(Layers, LinearGradientsAndInit) {
  manual_seed(1);
  Linear lin(7, 5);
  for (double w : lin.weight().value.to_vector()) EXPECT_LE(std::fabs(w), 1 / std::sqrt(7.0));
  check_gradients(lin, make_tensor({4, 7}, randn(28, 1), DType::kFloat32));
  Linear nobias(7, 5, /*bias=*/false);
  EXPECT_EQ(nobias.named_parameters().size(), 1u);
  check_gradients(nobias, make_tensor({3, 7}, randn(21, 2), DType::kFloat32));
}

TEST(Layers, ActivationGradients) {
  Tensor x = make_tensor({3, 6}, randn(18, 3, 0.0, 2.0), DType::kFloat32);
  Sigmoid s;
  check_gradients(s, x);
  Tanh t;
  check_gradients(t, x);
  ReLU r;
  check_gradients(r, x, 1e-3);
}

TEST(Layers, Conv2dGradientsAndOracle) {
  manual_seed(2);
  Conv2d conv(2, 3, 3, /*stride=*/2, /*padding=*/1);
  Tensor x = make_tensor({2, 2, 5, 6}, randn(120, 4), DType::kFloat32);
  Tensor y = conv.forward(x);
  ASSERT_EQ(y.shape(), (Shape{2, 3, 3, 3}));
  // Direct convolution oracle.
  const Tensor& w = conv.weight().value;
  const Tensor& b = conv.bias().value;
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t co = 0; co < 3; ++co)
      for (int64_t oy = 0; oy < 3; ++oy)
        for (int64_t ox = 0; ox < 3; ++ox) {
          double s = b.item({co});
          for (int64_t ci = 0; ci < 2; ++ci)
            for (int64_t ky = 0; ky < 3; ++ky)
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx;
                if (iy >= 0 && iy < 5 && ix >= 0 && ix < 6)
                  s += w.item({co, ci, ky, kx}) * x.item({n, ci, iy, ix});
              }
          EXPECT_NEAR(y.item({n, co, oy, ox}), s, 1e-5);
        }
  check_gradients(conv, x);
}

TEST(Layers, MaxPoolFlattenDropout) {
  MaxPool2d pool(2);
  Tensor x = make_tensor({2, 3, 4, 4}, randn(96, 5), DType::kFloat32);
  EXPECT_EQ(pool.forward(x).shape(), (Shape{2, 3, 2, 2}));
  check_gradients(pool, x, 1e-3);
  Flatten f;
  EXPECT_EQ(f.forward(x).shape(), (Shape{2, 48}));
  EXPECT_EQ(f.backward(Tensor::ones({2, 48})).shape(), x.shape());
  manual_seed(3);
  Dropout d(0.5);
  Tensor ones = Tensor::ones({100, 100});
  Tensor y = d.forward(ones);
  double kept = 0;
  for (double v : y.to_vector()) {
    EXPECT_TRUE(v == 0.0 || v == 2.0);
    kept += v > 0;
  }
  EXPECT_NEAR(kept / 1e4, 0.5, 0.03);
  d.eval();
  EXPECT_EQ(d.forward(ones).to_vector(), ones.to_vector());
  EXPECT_THROW(Dropout(1.0), ValueError);
}

TEST(Layers, SequentialWithBatchNormNamesAndGradients) {
  manual_seed(4);
  Sequential net;
  net.add(std::make_unique<Linear>(6, 4, false));
  net.add(std::make_unique<BatchNorm1d>(4));
  net.add(std::make_unique<Sigmoid>());
  net.add(std::make_unique<Linear>(4, 3));
  std::vector<std::string> names;
  for (auto& [n, p] : net.named_parameters()) names.push_back(n);
  EXPECT_EQ(names,
            (std::vector<std::string>{"0.weight", "1.weight", "1.bias", "3.weight", "3.bias"}));
  EXPECT_EQ(net.named_buffers()[0].first, "1.running_mean");
  EXPECT_EQ(net.named_int_buffers()[0].first, "1.num_batches_tracked");
  check_gradients(net, make_tensor({8, 6}, randn(48, 6), DType::kFloat32));
}

TEST(Layers, CrossEntropyMatchesDefinitionAndGradient) {
  Tensor z = make_tensor({3, 4}, {1, 2, 3, 4, 0, 0, 0, 0, 1000, -1000, 0, 0}, DType::kFloat32);
  CrossEntropyLoss ce;
  const double loss = ce.forward(z, {3, 1, 0});
  const double l0 = std::log(std::exp(1) + std::exp(2) + std::exp(3) + std::exp(4)) - 4;
  const double l1 = std::log(4.0);
  EXPECT_NEAR(loss, (l0 + l1 + 0.0) / 3, 1e-6);  // the 1000 row does not overflow
  EXPECT_EQ(ce.correct(), 2);
  Tensor g = ce.backward();
  EXPECT_NEAR(g.item({1, 1}), (0.25 - 1) / 3, 1e-6);
  EXPECT_THROW(ce.forward(z, {0, 1}), ValueError);
  EXPECT_THROW(ce.forward(z, {0, 1, 4}), ValueError);
  MSELoss mse;
  EXPECT_NEAR(mse.forward(Tensor::ones({2, 2}), Tensor::zeros({2, 2})), 1.0, 1e-12);
  EXPECT_NEAR(mse.backward().item({0, 0}), 0.5, 1e-7);
}

TEST(Layers, BadInput) {
  Linear lin(4, 2);
  EXPECT_THROW(lin.forward(Tensor::ones({3, 5})), ValueError);
  EXPECT_THROW(lin.forward(Tensor::ones({3, 4}, DType::kFloat64)), ValueError);
  EXPECT_THROW(lin.backward(Tensor::ones({3, 2})), ValueError);  // before forward
  lin.forward(Tensor::ones({3, 4}));
  EXPECT_THROW(lin.backward(Tensor::ones({2, 2})), ValueError);
  Conv2d conv(1, 2, 3);
  EXPECT_THROW(conv.forward(Tensor::ones({1, 2, 5, 5})), ValueError);
  EXPECT_THROW(conv.forward(Tensor::ones({1, 1, 2, 2})), ValueError);
  EXPECT_THROW(Linear(0, 3), ValueError);
}

}  // namespace
}  // namespace bnorm::nn
