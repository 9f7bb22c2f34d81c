// Gradients vs central finite differences in float64, training and eval mode, both layouts.
// The loss is L = Σ y·g for a fixed random g, so dL/dy = g.
#include <gtest/gtest.h>

#include "bnorm/bnorm.h"
#include "support/compare.h"
#include "support/fills.h"

namespace bnorm::test {
namespace {

double loss(const Tensor& y, const std::vector<double>& g) {
  const auto v = y.to_vector();
  double s = 0;
  for (std::size_t i = 0; i < v.size(); ++i) s += v[i] * g[i];
  return s;
}

void gradcheck(const Shape& shape, MemoryFormat fmt, bool train) {
  SCOPED_TRACE(shape_str(shape) + (train ? " train " : " eval ") + memory_format_name(fmt));
  const DType dt = DType::kFloat64;
  const int64_t C = shape[1];
  const std::size_t count = static_cast<std::size_t>(shape[0] * C * spatial_size(shape));
  const auto xv = randn(count, 11, 0.5, 2.0);
  const auto g = randn(count, 12);
  Tensor w = make_tensor({C}, randn(C, 13, 1.0, 0.5), dt);
  Tensor b = make_tensor({C}, randn(C, 14), dt);
  Tensor rm = make_tensor({C}, randn(C, 15), dt);
  Tensor rv = make_tensor({C}, randn(C, 16, 2.0, 0.1), dt);
  const double eps = 1e-3;
  auto forward = [&](const Tensor& x, const Tensor& ww, const Tensor& bb) {
    return train ? batch_norm_forward_train(x, ww, bb, Tensor(), Tensor(), 0.1, eps).y
                 : batch_norm_forward_infer(x, ww, bb, rm, rv, eps);
  };
  Tensor x = make_tensor(shape, xv, dt, fmt);
  Tensor dy = make_tensor(shape, g, dt, fmt);
  BatchNormForwardResult f = batch_norm_forward_train(x, w, b, Tensor(), Tensor(), 0.1, eps);
  BatchNormBackwardResult an =
      batch_norm_backward(dy, x, w, rm, rv, f.save_mean, f.save_invstd, train, eps);
  const double h = 1e-6;
  std::vector<double> num_dx(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto xp = xv, xm = xv;
    xp[i] += h;
    xm[i] -= h;
    num_dx[i] = (loss(forward(make_tensor(shape, xp, dt, fmt), w, b), g) -
                 loss(forward(make_tensor(shape, xm, dt, fmt), w, b), g)) /
                (2 * h);
  }
  EXPECT_TRUE(all_close(an.dx.to_vector(), num_dx, 1e-6, 1e-6));
  std::vector<double> num_dw(C), num_db(C);
  for (int64_t c = 0; c < C; ++c) {
    for (int which = 0; which < 2; ++which) {
      Tensor p = (which == 0 ? w : b).clone(), m = (which == 0 ? w : b).clone();
      p.set_item({c}, p.item({c}) + h);
      m.set_item({c}, m.item({c}) - h);
      const double d = which == 0
                           ? (loss(forward(x, p, b), g) - loss(forward(x, m, b), g)) / (2 * h)
                           : (loss(forward(x, w, p), g) - loss(forward(x, w, m), g)) / (2 * h);
      (which == 0 ? num_dw : num_db)[c] = d;
    }
  }
  EXPECT_TRUE(all_close(an.dweight.to_vector(), num_dw, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(an.dbias.to_vector(), num_db, 1e-6, 1e-6));
}

TEST(BatchNormGradcheck, TrainingMode2d) { gradcheck({6, 3}, MemoryFormat::kContiguous, true); }
TEST(BatchNormGradcheck, TrainingMode3d) { gradcheck({3, 2, 5}, MemoryFormat::kContiguous, true); }
TEST(BatchNormGradcheck, TrainingMode4dChannelsLast) {
  gradcheck({2, 3, 3, 2}, MemoryFormat::kChannelsLast, true);
}
TEST(BatchNormGradcheck, TrainingMode5d) {
  gradcheck({2, 2, 2, 2, 3}, MemoryFormat::kContiguous, true);
}
TEST(BatchNormGradcheck, EvalMode4d) { gradcheck({2, 3, 2, 3}, MemoryFormat::kContiguous, false); }
TEST(BatchNormGradcheck, EvalMode4dChannelsLast) {
  gradcheck({2, 3, 2, 3}, MemoryFormat::kChannelsLast, false);
}

}  // namespace
}  // namespace bnorm::test
