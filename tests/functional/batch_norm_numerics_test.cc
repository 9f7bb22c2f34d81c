// The numerics claims of doc/batch_norm.md, each a known failure of a widely used library:
//   constant channels give exactly 0 (pytorch#5410, #8283, caffe#3963); mean/std = 1e6 keeps
//   float32 within 1e-3 of float64; |x| up to 1e30 does not overflow (pytorch#162489); channels
//   of more than 1e8 elements stay accurate. BNORM_TEST_QUICK=1 (the sanitized run) uses 1e7.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <random>

#include <fmt/format.h>

#include "bnorm/bnorm.h"
#include "support/compare.h"
#include "support/fills.h"
#include "support/oracle.h"

namespace bnorm::test {
namespace {

bool quick() { return std::getenv("BNORM_TEST_QUICK") != nullptr; }

TEST(BatchNormNumerics, ConstantChannelNormalizesToExactlyZero) {
  for (DType dt : {DType::kFloat32, DType::kFloat64}) {
    for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
      for (double value : {0.0, 1.0, -3.25, 100.0, 1e7, 123456.789, 1e30, -1e30}) {
        for (double eps : {1e-5, 0.0}) {
          SCOPED_TRACE(fmt::format("{} {} value={} eps={}", dtype_name(dt), memory_format_name(fmt),
                                   value, eps));
          Tensor x = Tensor::full({5, 3, 7, 9}, value, dt, fmt);
          BatchNormForwardResult r =
              batch_norm_forward_train(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, eps);
          for (double y : r.y.to_vector()) ASSERT_EQ(y, 0.0);
          EXPECT_EQ(r.save_mean.item({0}),
                    static_cast<double>(value == 0 ? 0 : x.item({0, 0, 0, 0})));
          if (eps == 0) {
            EXPECT_EQ(r.save_invstd.item({1}), 0.0);  // PyTorch's InvStd rule
          }
        }
      }
    }
  }
}

TEST(BatchNormNumerics, LargeMeanOverStdKeepsFloat32Accurate) {
  // mean/std = 1e6: one-pass float formulas lose everything here; bnorm must stay within 1e-3
  // of the float64 computation on the same float32 input.
  const Shape shape{8, 4, 16, 16};
  const int64_t N = 8, C = 4, HW = 256;
  const std::size_t count = static_cast<std::size_t>(N * C * HW);
  std::vector<double> xv = round_to(randn(count, 3, 0.0, 1.0), DType::kFloat32);
  for (double& v : xv) v = static_cast<float>(1e6 + v);  // std ~1, mean 1e6
  const OracleForward ref = oracle_forward_train(xv, N, C, HW, {}, {}, {}, {}, 0.1, 1e-5);
  for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
    Tensor x = make_tensor(shape, xv, DType::kFloat32, fmt);
    BatchNormForwardResult r =
        batch_norm_forward_train(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
    EXPECT_TRUE(all_close(r.y.to_vector(), ref.y, 1e-6, 1e-3));
  }
  // The same data through the textbook one-pass float32 formula E[x²] − E[x]² is garbage, so this
  // test can tell a robust implementation from a naive one.
  float s = 0, sq = 0;
  for (int64_t i = 0; i < N * HW; ++i) {
    const float v = static_cast<float>(xv[(i / HW * C) * HW + i % HW]);
    s += v;
    sq += v * v;
  }
  const float naive_var = sq / static_cast<float>(N * HW) - (s / (N * HW)) * (s / (N * HW));
  EXPECT_GT(std::fabs(naive_var - 1.0f), 0.5f);
}

TEST(BatchNormNumerics, LargeMeanOverStdKeepsFloat32BackwardAccurate) {
  // float32 save_mean is the mean rounded to float: at mean 1e6 ± 0.3 its rounding (up to
  // 0.03) is a tenth of a standard deviation, and a backward that subtracted it put that into
  // every x − mean (here dx 0.017 off at a terms' scale of 20, dweight 3.6% off). The backward
  // recovers the double mean when save_mean is its float rounding. Checked against the
  // double-precision oracle given the double mean and the float save_invstd the backward receives,
  // for every implementation, both layouts, the plain and the fused (mask) backward; and a
  // save_mean that is not the rounded batch mean is used as given.
  const int64_t N = 16, C = 4, HW = 49;
  const Shape shape{N, C, 7, 7};
  const std::size_t count = static_cast<std::size_t>(N * C * HW);
  std::vector<double> xv = randn(count, 43, 0.0, 0.3);
  for (std::size_t i = 0; i < xv.size(); ++i) {
    const int64_t c = static_cast<int64_t>(i) / HW % C;
    xv[i] = static_cast<float>(xv[i] + (c == 3 ? 0.0 : (c == 1 ? -1e6 : 1e6 * (c + 1))));
  }
  const std::vector<double> dyv = round_to(randn(count, 44), DType::kFloat32);
  const std::vector<double> wv = {0.5, -1.5, 2.0, 1.0};
  const OracleForward exact = oracle_forward_train(xv, N, C, HW, wv, {}, {}, {}, 0.1, 1e-5);
  for (const char* impl : {"", "cpu:blocked", "ref"}) {
    for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
      SCOPED_TRACE(fmt::format("BNORM_IMPL='{}' {}", impl, memory_format_name(fmt)));
      setenv("BNORM_IMPL", impl, 1);
      Tensor x = make_tensor(shape, xv, DType::kFloat32, fmt);
      Tensor dy = make_tensor(shape, dyv, DType::kFloat32, fmt);
      Tensor w = make_tensor({C}, wv, DType::kFloat32);
      BatchNormForwardResult f =
          batch_norm_forward_train(x, w, Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
      const std::vector<double> invstd = f.save_invstd.to_vector();
      const OracleBackward ref = oracle_backward(dyv, xv, N, C, HW, wv, exact.mean, invstd, true);
      double dx_scale = 0;  // |dy|·invstd·|w|: the size of dx's terms, which cancel
      for (std::size_t i = 0; i < count; ++i) {
        const std::size_t c = i / HW % C;
        dx_scale = std::fmax(dx_scale, std::fabs(dyv[i] * invstd[c] * wv[c]));
      }
      BatchNormBackwardResult g = batch_norm_backward(
          dy, x, w, Tensor(), Tensor(), f.save_mean, f.save_invstd, true, 1e-5, {true, true, true});
      EXPECT_LE(max_abs_diff(g.dx.to_vector(), ref.dx), 1e-6 * dx_scale);
      EXPECT_TRUE(all_close(g.dweight.to_vector(), ref.dweight, 1e-6, 1e-6));
      // The fused backward with every mask bit set is the plain one.
      ReluMask mask(static_cast<int64_t>(count));
      std::fill(mask.data(), mask.data() + mask.num_bytes(), uint8_t{0xff});
      Tensor dx = Tensor::empty(shape, DType::kFloat32, fmt), dw = Tensor::empty({C});
      Tensor db = Tensor::empty({C}), dz;
      batch_norm_add_relu_backward_out(dy, x, w, Tensor(), Tensor(), f.save_mean, f.save_invstd,
                                       mask, true, 1e-5, {true, true, true}, dx, dz, dw, db);
      EXPECT_EQ(dx.to_vector(), g.dx.to_vector());
      EXPECT_EQ(dw.to_vector(), g.dweight.to_vector());
      // A save_mean one float step off the rounded batch mean (channel 0) is not recovered: the
      // backward of that mean, as PyTorch computes it.
      Tensor other_mean = f.save_mean.clone();
      std::vector<double> other = other_mean.to_vector();
      other[0] = std::nextafter(static_cast<float>(other[0]), 1e30f);
      other_mean.copy_from(make_tensor({C}, other, DType::kFloat32));
      std::vector<double> given_mean = exact.mean;  // the other channels are still recovered
      given_mean[0] = other[0];
      const OracleBackward as_given =
          oracle_backward(dyv, xv, N, C, HW, wv, given_mean, invstd, true);
      BatchNormBackwardResult h = batch_norm_backward(
          dy, x, w, Tensor(), Tensor(), other_mean, f.save_invstd, true, 1e-5, {true, true, true});
      EXPECT_LE(max_abs_diff(h.dx.to_vector(), as_given.dx), 1e-6 * dx_scale);
      EXPECT_GT(max_abs_diff(h.dx.to_vector(), ref.dx), 1e-4 * dx_scale);
      // float64 statistics for the float32 x: the same y, the mean unrounded (its rounding is
      // save_mean), and a backward as accurate without the recovery pass.
      Tensor y = Tensor::empty(shape, DType::kFloat32, fmt);
      Tensor mean64 = Tensor::empty({C}, DType::kFloat64);
      Tensor invstd64 = Tensor::empty({C}, DType::kFloat64);
      batch_norm_forward_train_out(x, w, Tensor(), Tensor(), Tensor(), 0.1, 1e-5, y, mean64,
                                   invstd64);
      EXPECT_EQ(y.to_vector(), f.y.to_vector());
      EXPECT_EQ(round_to(mean64.to_vector(), DType::kFloat32), f.save_mean.to_vector());
      BatchNormBackwardResult g64 = batch_norm_backward(dy, x, w, Tensor(), Tensor(), mean64,
                                                        invstd64, true, 1e-5, {true, true, true});
      const OracleBackward ref64 =
          oracle_backward(dyv, xv, N, C, HW, wv, exact.mean, invstd64.to_vector(), true);
      EXPECT_LE(max_abs_diff(g64.dx.to_vector(), ref64.dx), 1e-6 * dx_scale);
      // nn::BatchNorm2d keeps its statistics in float64: its backward is that one, bit for bit.
      nn::BatchNorm2d bn(C);
      bn.weight().value.copy_from(w);
      Tensor y_module = bn.forward(x);
      EXPECT_EQ(y_module.to_vector(), f.y.to_vector());
      EXPECT_EQ(bn.backward(dy).to_vector(), g64.dx.to_vector());
    }
  }
  unsetenv("BNORM_IMPL");
}

TEST(BatchNormNumerics, LargeMeanOverStdKeepsFloat64VarianceExact) {
  // float64, mean/std = 1e12 (e.g. Unix times in seconds with millisecond jitter, 1.7e9 ± 1e-3,
  // is 1.7e12): the channel's 6400 values span 7 blocks, whose merge must not take δ from means
  // rounded at ulp(1e12) ≈ 1.2e-4 (that cost 1.5e-6 of invstd; the two-pass reference, which
  // subtracted the rounded mean, 1e-9). invstd against a long-double two-pass oracle shifted by the
  // channel's first element (unshifted, its own Σx at 6e15 is off by ~1e-11), to 1e-12; both the
  // default implementation and the reference.
  const int64_t N = 64, C = 3, HW = 100;
  const Shape shape{N, C, 10, 10};
  std::vector<double> xv = randn(static_cast<std::size_t>(N * C * HW), 41);
  for (std::size_t i = 0; i < xv.size(); ++i) xv[i] += (i / HW % C == 1 ? -1e12 : 1e12);
  std::vector<long double> invstd(C);
  for (int64_t c = 0; c < C; ++c) {
    const long double k = xv[c * HW];
    long double s = 0, q = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < HW; ++j) s += xv[(n * C + c) * HW + j] - k;
    const long double mean = k + s / (N * HW);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t j = 0; j < HW; ++j) {
        const long double d = xv[(n * C + c) * HW + j] - mean;
        q += d * d;
      }
    invstd[c] = 1 / std::sqrt(q / (N * HW) + 1e-5L);
  }
  for (const char* impl : {"", "ref"}) {
    for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
      SCOPED_TRACE(fmt::format("BNORM_IMPL='{}' {}", impl, memory_format_name(fmt)));
      setenv("BNORM_IMPL", impl, 1);
      Tensor x = make_tensor(shape, xv, DType::kFloat64, fmt);
      BatchNormForwardResult r =
          batch_norm_forward_train(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
      for (int64_t c = 0; c < C; ++c) {
        EXPECT_NEAR(r.save_invstd.item({c}) / static_cast<double>(invstd[c]), 1.0, 1e-12)
            << "channel " << c;
      }
    }
  }
  unsetenv("BNORM_IMPL");
}

TEST(BatchNormNumerics, HugeMagnitudesDoNotOverflow) {
  // |x| ~ 1e30: (x − mean)² ~ 1e60 overflows float32 (pytorch#162489); bnorm squares in double.
  const Shape shape{4, 3, 5, 5};
  const std::size_t count = 4 * 3 * 25;
  std::vector<double> xv = randn(count, 5);
  for (double& v : xv) v = static_cast<float>(v * 1e30);
  for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
    Tensor x = make_tensor(shape, xv, DType::kFloat32, fmt);
    BatchNormForwardResult r =
        batch_norm_forward_train(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
    const OracleForward ref = oracle_forward_train(xv, 4, 3, 25, {}, {}, {}, {}, 0.1, 1e-5);
    EXPECT_TRUE(all_close(r.y.to_vector(), ref.y, 1e-6, 1e-6));
    for (double v : r.save_invstd.to_vector()) {
      EXPECT_TRUE(std::isfinite(v));
      EXPECT_GT(v, 0);
    }
  }
}

TEST(BatchNormNumerics, Float64VarianceOverflowIsInfiniteAsInPyTorch) {
  // |x| ~ 1e200 in float64: Σ(x − mean)² overflows. PyTorch 1.13 (native_batch_norm on randn·1e200,
  // float64): save_invstd 0, y 0. The one-sweep block sums must give +inf there, not inf − inf.
  const Shape shape{4, 2, 3, 1};
  std::vector<double> xv = randn(24, 8);
  for (double& v : xv) v *= 1e200;
  for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
    Tensor x = make_tensor(shape, xv, DType::kFloat64, fmt);
    BatchNormForwardResult r =
        batch_norm_forward_train(x, Tensor(), Tensor(), Tensor(), Tensor(), 0.1, 1e-5);
    for (double v : r.save_invstd.to_vector()) EXPECT_EQ(v, 0.0);
    for (double v : r.y.to_vector()) EXPECT_EQ(v, 0.0);
    for (double v : r.save_mean.to_vector()) EXPECT_TRUE(std::isfinite(v));
  }
}

TEST(BatchNormNumerics, ReductionsOverMoreThan1e8ElementsStayAccurate) {
  // One channel of N·HW = 100,000,002 values (10,000,002 in quick mode) around 1000: a float
  // accumulator stops growing at 2^24·ulp; bnorm's blocked double sums stay within 1e-12.
  const int64_t hw = quick() ? 5'000'001 : 50'000'001;
  const int64_t n = 2;
  Tensor x = Tensor::empty({n, 1, hw}, DType::kFloat32);
  float* p = x.data<float>();
  std::mt19937 rng(9);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < n * hw; ++i) p[i] = 1000.0f + u(rng);
  // Oracle: long double with Neumaier compensation.
  auto compensated_sum = [&](auto term) {
    long double s = 0, comp = 0;
    for (int64_t i = 0; i < n * hw; ++i) {
      const long double t = term(static_cast<long double>(p[i]));
      const long double u2 = s + t;
      comp += std::fabs(s) >= std::fabs(t) ? (s - u2) + t : (t - u2) + s;
      s = u2;
    }
    return s + comp;
  };
  const long double count = static_cast<long double>(n * hw);
  const long double mean = compensated_sum([](long double v) { return v; }) / count;
  const long double var =
      compensated_sum([&](long double v) { return (v - mean) * (v - mean); }) / count;
  Tensor rm = Tensor::zeros({1}), rv = Tensor::ones({1});
  BatchNormForwardResult r = batch_norm_forward_train(x, Tensor(), Tensor(), rm, rv, 1.0, 0.0);
  EXPECT_NEAR(r.save_mean.item({0}), static_cast<double>(mean), 1e-12 * 1000 + 6.2e-5);
  // save_mean is float32: compare the unrounded statistics through the running buffers too.
  EXPECT_NEAR(r.save_invstd.item({0}), 1.0 / std::sqrt(static_cast<double>(var)),
              1e-6 / std::sqrt(static_cast<double>(var)));
  EXPECT_NEAR(rv.item({0}), static_cast<double>(var * count / (count - 1)), 1e-6 * var);
  // The float32 accumulator this guards against is far off.
  float naive = 0;
  for (int64_t i = 0; i < n * hw; ++i) naive += p[i];
  EXPECT_GT(std::fabs(naive / static_cast<float>(count) - static_cast<float>(mean)), 1.0f);
}

}  // namespace
}  // namespace bnorm::test
