// Every bad-input rule of the functional API: the exception type, the message (argument,
// expected, given), and that nothing was written (outputs and running buffers untouched).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <string>

#include "bnorm/bnorm.h"
#include "support/expect_error.h"
#include "support/fills.h"

namespace bnorm {
namespace {

template <typename Fn>
void expect_error(Fn fn, const std::string& text) {
  test::expect_error<ValueError>(fn, text);
}

struct Fixture {
  Tensor x = Tensor::full({4, 3, 2, 2}, 1.5);
  Tensor w = Tensor::ones({3}), b = Tensor::zeros({3});
  Tensor rm = Tensor::full({3}, 0.25), rv = Tensor::full({3}, 2.0);
};

TEST(BatchNormBadInput, Rank) {
  Fixture f;
  expect_error(
      [&] { batch_norm_forward_train(Tensor::ones({5}), f.w, f.b, f.rm, f.rv); },
      "batch_norm_forward_train: x must have 2 to 5 dims (N, C, spatial...), got 1-d (5,)");
  expect_error(
      [&] {
        batch_norm_forward_infer(Tensor::ones({1, 3, 1, 1, 1, 2}), f.w, f.b, f.rm, f.rv);
      },
      "got 6-d");
  expect_error([&] { batch_norm_forward_train(Tensor(), f.w, f.b, f.rm, f.rv); },
               "x must be defined");
}

TEST(BatchNormBadInput, ChannelMismatchNamesTheArgument) {
  Fixture f;
  expect_error([&] { batch_norm_forward_train(f.x, Tensor::ones({4}), f.b, f.rm, f.rv); },
               "batch_norm_forward_train: weight must have C=3 elements, got 4");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, Tensor::ones({2}), f.rm, f.rv); },
               "bias must have C=3 elements, got 2");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, Tensor::ones({5}), f.rv); },
               "running_mean must have C=3 elements, got 5");
  expect_error([&] { batch_norm_forward_infer(f.x, f.w, f.b, f.rm, Tensor::ones({1})); },
               "batch_norm_forward_infer: running_var must have C=3 elements, got 1");
  expect_error(
      [&] {
        batch_norm_forward_train(f.x, Tensor::ones({3, 1}), f.b, f.rm, f.rv);
      },
      "weight must be 1-d with C=3 elements, got shape (3, 1)");
}

TEST(BatchNormBadInput, OneValuePerChannelInTraining) {
  Fixture f;
  expect_error(
      [&] {
        batch_norm_forward_train(Tensor::ones({1, 3}), f.w, f.b, f.rm, f.rv);
      },
      "Expected more than 1 value per channel when training, got input size (1, 3)");
  expect_error(
      [&] {
        batch_norm_forward_train(Tensor::ones({1, 3, 1, 1}), f.w, f.b, f.rm, f.rv);
      },
      "Expected more than 1 value per channel when training, got input size (1, 3, 1, 1)");
  // Eval mode accepts a single sample.
  EXPECT_NO_THROW(batch_norm_forward_infer(Tensor::ones({1, 3}), f.w, f.b, f.rm, f.rv));
}

TEST(BatchNormBadInput, EmptyBatch) {
  Fixture f;
  expect_error(
      [&] {
        batch_norm_forward_train(Tensor::ones({0, 3, 2, 2}), f.w, f.b, f.rm, f.rv);
      },
      "x must not be empty (an empty batch has no statistics), got shape (0, 3, 2, 2)");
  expect_error(
      [&] {
        batch_norm_forward_infer(Tensor::ones({0, 3}), f.w, f.b, f.rm, f.rv);
      },
      "x must not be empty");
}

TEST(BatchNormBadInput, EpsAndMomentum) {
  Fixture f;
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, f.rm, f.rv, 0.1, -1e-5); },
               "eps must be finite and >= 0, got -1e-05");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, f.rm, f.rv, 0.1, NAN); },
               "eps must be finite and >= 0, got nan");
  expect_error([&] { batch_norm_forward_infer(f.x, f.w, f.b, f.rm, f.rv, INFINITY); },
               "eps must be finite and >= 0, got inf");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, f.rm, f.rv, 1.5); },
               "momentum must be in [0, 1], got 1.5");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, f.rm, f.rv, -0.1); },
               "momentum must be in [0, 1], got -0.1");
}

TEST(BatchNormBadInput, DtypeMismatch) {
  Fixture f;
  expect_error([&] { batch_norm_forward_train(f.x, f.w.to(DType::kFloat64), f.b, f.rm, f.rv); },
               "weight must have x's dtype float32, got float64");
  Tensor dy = Tensor::ones({4, 3, 2, 2}, DType::kFloat64);
  auto r = batch_norm_forward_train(f.x, f.w, f.b, Tensor(), Tensor());
  expect_error(
      [&] { batch_norm_backward(dy, f.x, f.w, f.rm, f.rv, r.save_mean, r.save_invstd, true); },
      "dy must have x's dtype float32, got float64");
  // The statistics may be float64 for a float32 x (unrounded), not narrower than x.
  Tensor sm = Tensor::empty({3}, DType::kFloat64), si = Tensor::empty({3}, DType::kFloat64);
  Tensor y = Tensor::empty(f.x.shape());
  batch_norm_forward_train_out(f.x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, y, sm, si);
  Tensor x64 = f.x.to(DType::kFloat64);
  Tensor y64 = Tensor::empty(f.x.shape(), DType::kFloat64);
  Tensor sm32 = Tensor::empty({3}), si32 = Tensor::empty({3});
  expect_error(
      [&] {
        batch_norm_forward_train_out(x64, f.w.to(DType::kFloat64), Tensor(), Tensor(), Tensor(),
                                     0.1, 1e-5, y64, sm32, si);
      },
      "save_mean must have x's dtype float64, got float32");
  batch_norm_backward(dy.to(DType::kFloat32), f.x, f.w, Tensor(), Tensor(), sm, si, true);
  expect_error(
      [&] { batch_norm_backward(dy, x64, Tensor(), Tensor(), Tensor(), sm, r.save_invstd, true); },
      "save_invstd must have x's dtype float64, got float32");
}

TEST(BatchNormBadInput, RunningBuffersInEvalAndPairs) {
  Fixture f;
  expect_error([&] { batch_norm_forward_infer(f.x, f.w, f.b, Tensor(), f.rv); },
               "running_mean must be defined in evaluation mode");
  expect_error([&] { batch_norm_forward_infer(f.x, f.w, f.b, f.rm, Tensor()); },
               "running_var must be defined in evaluation mode");
  expect_error([&] { batch_norm_forward_train(f.x, f.w, f.b, f.rm, Tensor()); },
               "running_mean and running_var must be both defined or both undefined");
  Tensor dy = Tensor::ones(f.x.shape());
  expect_error([&] { batch_norm_backward(dy, f.x, f.w, f.rm, f.rv, Tensor(), Tensor(), true); },
               "batch_norm_backward: save_mean must be defined in training mode");
  expect_error(
      [&] { batch_norm_backward(dy, f.x, f.w, Tensor(), Tensor(), Tensor(), Tensor(), false); },
      "running_mean must be defined in evaluation mode");
}

TEST(BatchNormBadInput, BackwardShapeAndLayout) {
  Fixture f;
  auto r = batch_norm_forward_train(f.x, f.w, f.b, Tensor(), Tensor());
  expect_error(
      [&] {
        batch_norm_backward(Tensor::ones({4, 3, 2, 3}), f.x, f.w, f.rm, f.rv, r.save_mean,
                            r.save_invstd, true);
      },
      "dy must have x's shape (4, 3, 2, 2), got (4, 3, 2, 3)");
  Tensor x3 = Tensor::ones({4, 3, 2, 3});
  Tensor dy_cl = Tensor::ones({4, 3, 2, 3}, DType::kFloat32, MemoryFormat::kChannelsLast);
  expect_error(
      [&] { batch_norm_backward(dy_cl, x3, f.w, f.rm, f.rv, r.save_mean, r.save_invstd, true); },
      "dy must have x's memory format contiguous");
}

TEST(BatchNormBadInput, AliasingOutputs) {
  Fixture f;
  Tensor x = f.x.clone();
  Tensor sm = Tensor::empty({3}), si = Tensor::empty({3});
  // In place is allowed.
  Tensor y = x;
  EXPECT_NO_THROW(batch_norm_forward_train_out(x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, y, sm, si));
  // An output may not partially overlap x: y is x shifted by one element.
  Tensor storage = Tensor::zeros({2 * 3 * 2 * 2 + 1});
  Tensor base = storage.reshape({25});
  Tensor xs = Tensor::zeros({4, 3});
  expect_error(
      [&] {
        Tensor w3 = Tensor::ones({3});
        batch_norm_forward_train_out(xs, f.w, f.b, Tensor(), Tensor(), 0.1, 1e-5, xs, w3, w3);
      },
      "save_mean must not overlap save_invstd");
  expect_error(
      [&] { batch_norm_forward_train_out(f.x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, y, f.rm, si); },
      "save_mean must not overlap running_mean");
  expect_error(
      [&] {
        Tensor yy = Tensor::empty({4, 3, 2, 2});
        batch_norm_forward_train_out(f.x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, yy, f.w, si);
      },
      "save_mean must not overlap weight");
  expect_error(
      [&] {
        Tensor y2 = x.clone(MemoryFormat::kChannelsLast);
        batch_norm_forward_train_out(x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, y2, sm, si);
      },
      "y must have x's memory format contiguous");
  Tensor dy = Tensor::ones(f.x.shape());
  auto r = batch_norm_forward_train(f.x, f.w, f.b, Tensor(), Tensor());
  expect_error(
      [&] {
        Tensor dx = f.x, dw = Tensor::empty({3}), db = Tensor::empty({3});
        batch_norm_backward_out(dy, f.x, f.w, Tensor(), Tensor(), r.save_mean, r.save_invstd, true,
                                1e-5, {true, true, true}, dx, dw, db);
      },
      "dx must not overlap x");
  (void)base;
}

TEST(BatchNormBadInput, NothingIsWrittenOnError) {
  Fixture f;
  Tensor y = Tensor::full(f.x.shape(), 7.0), sm = Tensor::full({3}, 7.0),
         si = Tensor::full({3}, 7.0);
  EXPECT_THROW(
      batch_norm_forward_train_out(f.x, f.w, Tensor::ones({2}), f.rm, f.rv, 0.1, 1e-5, y, sm, si),
      ValueError);
  for (double v : y.to_vector()) EXPECT_EQ(v, 7.0);
  EXPECT_EQ(sm.to_vector(), std::vector<double>(3, 7.0));
  EXPECT_EQ(f.rm.to_vector(), std::vector<double>(3, 0.25));
  EXPECT_EQ(f.rv.to_vector(), std::vector<double>(3, 2.0));
}

TEST(BatchNormBadInput, NonFiniteDataPropagatesByDefault) {
  Fixture f;
  Tensor x = f.x.clone();
  x.set_item({1, 2, 0, 1}, NAN);
  auto r = batch_norm_forward_train(x, f.w, f.b, f.rm, f.rv);
  EXPECT_TRUE(std::isnan(r.y.item({0, 2, 0, 0})));  // channel 2 is NaN, as in PyTorch
  EXPECT_FALSE(std::isnan(r.y.item({0, 1, 0, 0})));
  EXPECT_TRUE(std::isnan(f.rm.item({2})));
}

// An infinite value makes its channel's mean ±inf and its variance NaN, so the whole channel
// normalizes to NaN, as in PyTorch 1.13 (native_batch_norm on the same input: save_mean inf,
// save_invstd nan, y nan, running_mean inf, running_var nan); other channels are untouched. Every
// implementation, both layouts, float32 and float64.
TEST(BatchNormBadInput, InfiniteDataPropagatesAsInPyTorch) {
  for (const char* impl : {"", "cpu:blocked", "ref"}) {
    setenv("BNORM_IMPL", impl, 1);
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
        for (double inf : {INFINITY, -INFINITY}) {
          SCOPED_TRACE(std::string(impl) + " " + dtype_name(dt) + " " + memory_format_name(fmt));
          Tensor x = test::make_tensor({4, 3, 2, 2}, test::randn(48, 5), dt, fmt);
          x.set_item({1, 1, 0, 1}, inf);
          Tensor rm = Tensor::zeros({3}, dt), rv = Tensor::ones({3}, dt);
          auto r = batch_norm_forward_train(x, Tensor(), Tensor(), rm, rv, 0.1, 1e-5);
          EXPECT_EQ(r.save_mean.item({1}), inf);
          EXPECT_TRUE(std::isnan(r.save_invstd.item({1})));
          for (int64_t n = 0; n < 4; ++n) EXPECT_TRUE(std::isnan(r.y.item({n, 1, 1, 0})));
          EXPECT_EQ(rm.item({1}), inf);
          EXPECT_TRUE(std::isnan(rv.item({1})));
          EXPECT_TRUE(std::isfinite(r.y.item({0, 0, 0, 0})));
          EXPECT_TRUE(std::isfinite(rv.item({2})));
          // The same infinity in two reduction blocks (600 rows of HW = 4: 3 blocks): inf.
          Tensor x2 = test::make_tensor({600, 2, 2, 2}, test::randn(4800, 6), dt, fmt);
          x2.set_item({0, 1, 0, 0}, inf);
          x2.set_item({599, 1, 1, 1}, inf);
          auto r2 = batch_norm_forward_train(x2, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
          EXPECT_EQ(r2.save_mean.item({1}), inf);
          EXPECT_TRUE(std::isnan(r2.save_invstd.item({1})));
          EXPECT_TRUE(std::isfinite(r2.save_invstd.item({0})));
        }
      }
    }
  }
  unsetenv("BNORM_IMPL");
}

TEST(BatchNormBadInput, EvalBackwardDxDoesNotReadX) {
  // In evaluation PyTorch's dx is dy·invstd·weight, finite where x is ±inf or NaN; through the
  // training formula k_dy·dy + 0·(x − mean) + 0 it was NaN there. Also the fused BN + Add + ReLU
  // backward (dx = k_dy·g, dz = g, g = dy where the mask is set).
  for (const char* impl : {"", "cpu:blocked", "ref"}) {
    setenv("BNORM_IMPL", impl, 1);
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
        SCOPED_TRACE(std::string(impl) + " " + dtype_name(dt) + " " + memory_format_name(fmt));
        const Shape shape{5, 3, 4, 6};
        Tensor x = test::make_tensor(shape, test::randn(360, 31), dt, fmt);
        x.set_item({0, 0, 1, 2}, INFINITY);
        x.set_item({3, 1, 0, 0}, -INFINITY);
        x.set_item({4, 2, 3, 5}, NAN);
        Tensor dy = test::make_tensor(shape, test::randn(360, 32), dt, fmt);
        Tensor w = test::make_tensor({3}, {0.5, -1.25, 2.0}, dt);
        Tensor rm = test::make_tensor({3}, {0.1, -0.2, 0.3}, dt);
        Tensor rv = test::make_tensor({3}, {0.9, 1.7, 0.4}, dt);
        const double eps = 1e-5;
        auto expected = [&](const std::vector<int64_t>& i, double g) {
          const int64_t c = i[1];
          const double k = 1.0 / std::sqrt(rv.item({c}) + eps) * w.item({c});
          return dt == DType::kFloat32 ? static_cast<double>(static_cast<float>(g * k)) : g * k;
        };
        BatchNormBackwardResult r = batch_norm_backward(dy, x, w, rm, rv, Tensor(), Tensor(), false,
                                                        eps, {true, true, true});
        ReluMask mask;
        Tensor y = Tensor::empty(shape, dt, fmt);
        batch_norm_add_relu_forward_infer_out(x, Tensor(), w, Tensor(), rm, rv, eps, y, mask);
        Tensor dx = Tensor::empty(shape, dt, fmt), dz = Tensor::empty(shape, dt, fmt);
        Tensor dw = Tensor::empty({3}, dt), db = Tensor::empty({3}, dt);
        batch_norm_add_relu_backward_out(dy, x, w, rm, rv, Tensor(), Tensor(), mask, false, eps,
                                         {true, false, false}, dx, dz, dw, db);
        for (int64_t n = 0; n < 5; ++n) {
          for (int64_t c = 0; c < 3; ++c) {
            for (int64_t h = 0; h < 4; ++h) {
              for (int64_t v = 0; v < 6; ++v) {
                const std::vector<int64_t> i{n, c, h, v};
                ASSERT_EQ(r.dx.item(i), expected(i, dy.item(i))) << n << c << h << v;
                const double g = y.item(i) > 0 ? dy.item(i) : 0.0;
                ASSERT_EQ(dz.item(i), g) << n << c << h << v;
                ASSERT_EQ(dx.item(i), expected(i, g)) << n << c << h << v;
              }
            }
          }
        }
        // dbias = Σdy is finite; dweight = Σdy·(x − mean)·invstd is not in the non-finite channels
        // (as PyTorch's).
        for (int64_t c = 0; c < 3; ++c) EXPECT_TRUE(std::isfinite(r.dbias.item({c})));
        for (int64_t c = 0; c < 3; ++c) EXPECT_FALSE(std::isfinite(r.dweight.item({c})));
      }
    }
  }
  unsetenv("BNORM_IMPL");
}

TEST(BatchNormBadInput, NonFiniteDataThrowsUnderThePolicy) {
  Fixture f;
  set_nonfinite_policy(NonFinitePolicy::kThrow);
  Tensor x = f.x.clone();
  x.set_item({1, 1, 0, 1}, INFINITY);
  Tensor y = Tensor::full(x.shape(), 7.0), sm = Tensor::empty({3}), si = Tensor::empty({3});
  expect_error([&] { batch_norm_forward_train_out(x, f.w, f.b, f.rm, f.rv, 0.1, 1e-5, y, sm, si); },
               "x has NaN or Inf in channel 1");
  for (double v : y.to_vector()) EXPECT_EQ(v, 7.0);
  EXPECT_EQ(f.rm.to_vector(), std::vector<double>(3, 0.25));
  Tensor dy = Tensor::ones(f.x.shape());
  dy.set_item({0, 0, 0, 0}, NAN);
  auto r = batch_norm_forward_train(f.x, f.w, f.b, Tensor(), Tensor());
  expect_error(
      [&] {
        batch_norm_backward(dy, f.x, f.w, Tensor(), Tensor(), r.save_mean, r.save_invstd, true);
      },
      "dy or x has NaN or Inf in channel 0");
  Tensor bad_rv = f.rv.clone();
  bad_rv.set_item({2}, NAN);
  expect_error([&] { batch_norm_forward_infer(f.x, f.w, f.b, f.rm, bad_rv); },
               "running_mean/running_var has NaN or Inf in channel 2");
  set_nonfinite_policy(NonFinitePolicy::kPropagate);
}

}  // namespace
}  // namespace bnorm
