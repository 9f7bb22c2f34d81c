// MinMaxScaler and StandardScaler with scikit-learn's semantics (values from its documented
// examples), partial_fit, constant features, NaN handling, inverse, errors.
#include "bnorm/data/scaler.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "support/compare.h"

namespace bnorm::data {
namespace {

Tensor mat(int64_t r, int64_t c, std::vector<double> v) { return Tensor::from_vector({r, c}, v); }

TEST(Scaler, MinMaxMatchesScikitLearnExample) {
  // sklearn docs: data [[-1, 2], [-0.5, 6], [0, 10], [1, 18]] → [[0, 0], [0.25, 0.25], [0.5, 0.5],
  // [1, 1]].
  MinMaxScaler s;
  Tensor x = mat(4, 2, {-1, 2, -0.5, 6, 0, 10, 1, 18});
  EXPECT_TRUE(test::all_close(s.fit_transform(x).to_vector(), {0, 0, 0.25, 0.25, 0.5, 0.5, 1, 1},
                              1e-15, 0));
  EXPECT_TRUE(test::all_close(s.transform(mat(1, 2, {2, 2})).to_vector(), {1.5, 0}, 1e-15, 0));
  EXPECT_TRUE(
      test::all_close(s.inverse_transform(s.transform(x)).to_vector(), x.to_vector(), 1e-14, 0));
  MinMaxScaler r(-1, 1);
  EXPECT_TRUE(
      test::all_close(r.fit_transform(x).to_vector(), {-1, -1, -0.5, -0.5, 0, 0, 1, 1}, 1e-15, 0));
}

TEST(Scaler, StandardMatchesScikitLearnExample) {
  // sklearn docs: [[0, 0], [0, 0], [1, 1], [1, 1]] → mean [0.5, 0.5], transform [[2, 2]] → [[3,
  // 3]].
  StandardScaler s;
  s.fit(mat(4, 2, {0, 0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(s.mean(), (std::vector<double>{0.5, 0.5}));
  EXPECT_EQ(s.var(), (std::vector<double>{0.25, 0.25}));  // biased
  EXPECT_TRUE(test::all_close(s.transform(mat(1, 2, {2, 2})).to_vector(), {3, 3}, 1e-15, 0));
}

TEST(Scaler, BikeFeaturesOfWildlyDifferentRanges) {
  // Age 0–20 years and distance 0–300,000 km end up on the same scale.
  Tensor x = mat(4, 2, {0, 0, 5, 60000, 10, 150000, 20, 300000});
  MinMaxScaler mm;
  const auto y = mm.fit_transform(x).to_vector();
  EXPECT_TRUE(test::all_close(y, {0, 0, 0.25, 0.2, 0.5, 0.5, 1, 1}, 1e-15, 0));
  StandardScaler z;
  Tensor zt = z.fit_transform(x);
  for (int64_t j = 0; j < 2; ++j) {
    double m = 0, v = 0;
    for (int64_t i = 0; i < 4; ++i) m += zt.item({i, j}) / 4;
    for (int64_t i = 0; i < 4; ++i) v += (zt.item({i, j}) - m) * (zt.item({i, j}) - m) / 4;
    EXPECT_NEAR(m, 0, 1e-12);
    EXPECT_NEAR(v, 1, 1e-12);
  }
}

TEST(Scaler, PartialFitEqualsFit) {
  Tensor all = mat(6, 2, {1, 10, 2, 20, 3, 35, 4, 41, 5, 55, 9, 60});
  StandardScaler a, b;
  a.fit(all);
  b.partial_fit(mat(2, 2, {1, 10, 2, 20})).partial_fit(mat(4, 2, {3, 35, 4, 41, 5, 55, 9, 60}));
  EXPECT_TRUE(test::all_close(b.mean(), a.mean(), 1e-13, 1e-13));
  EXPECT_TRUE(test::all_close(b.var(), a.var(), 1e-12, 1e-12));
  MinMaxScaler c, d;
  c.fit(all);
  d.partial_fit(mat(3, 2, {1, 10, 2, 20, 3, 35})).partial_fit(mat(3, 2, {4, 41, 5, 55, 9, 60}));
  EXPECT_EQ(c.data_min(), d.data_min());
  EXPECT_EQ(c.data_max(), d.data_max());
}

TEST(Scaler, LargeMeanOverStdKeepsTheStdExact) {
  // Unix times in seconds with millisecond jitter: mean 1.7e9, std 1e-3, a ratio of 1.7e12. Sums
  // and means rounded at 1.7e9 (ulp 2.4e-7) cost 1.4e-7 of the std in one fit and 1.4e-5 over ten
  // partial fits, and put the mean 2 ulps off; shifted sums and a mean kept as shift + offset keep
  // both to 1e-12 of a long-double oracle shifted by the first value.
  const int64_t n = 1000;
  std::mt19937_64 rng(3);
  std::normal_distribution<double> normal;
  std::vector<double> v(n);
  for (double& e : v) e = 1.7e9 + 1e-3 * normal(rng);
  long double sum = 0, sq = 0;
  for (double e : v) sum += e - v[0];
  const long double mean = v[0] + sum / n;
  for (double e : v) sq += (e - mean) * (e - mean);
  const double std_true = std::sqrt(static_cast<double>(sq / n));
  StandardScaler all, parts;
  all.fit(Tensor::from_vector({n, 1}, v));
  for (int64_t b = 0; b < 10; ++b) {
    parts.partial_fit(Tensor::from_vector(
        {n / 10, 1}, std::vector<double>(v.begin() + b * n / 10, v.begin() + (b + 1) * n / 10)));
  }
  EXPECT_NEAR(all.scale()[0] / std_true, 1.0, 1e-12);
  EXPECT_NEAR(parts.scale()[0] / std_true, 1.0, 1e-12);
  // The mean itself is a double: within one ulp of 1.7e9 (2.4e-7) of the oracle's.
  EXPECT_NEAR(all.mean()[0], static_cast<double>(mean), 2.4e-7);
  EXPECT_NEAR(parts.mean()[0], static_cast<double>(mean), 2.4e-7);
  // The z-scores: x − mean with the mean rounded to a double is up to ulp(1.7e9)/2 = 1.2e-7 off,
  // 1.2e-4 standard deviations; (x − shift) − offset keeps them to 1e-9.
  const std::vector<double> z = all.transform(Tensor::from_vector({n, 1}, v)).to_vector();
  double worst = 0;
  for (int64_t i = 0; i < n; ++i) {
    const long double exact = ((v[i] - v[0]) - sum / n) / std_true;  // mean − v[0] unrounded
    worst = std::fmax(worst, std::fabs(static_cast<double>(z[i] - exact)));
  }
  EXPECT_LT(worst, 1e-9);
  // And back: inverse_transform(z) within an ulp or two of x.
  const std::vector<double> back =
      all.inverse_transform(Tensor::from_vector({n, 1}, z)).to_vector();
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(back[i], v[i], 5e-7) << i;
}

TEST(Scaler, MinMaxOfLargeOffsetsKeepsTheRangeExact) {
  // Timestamps 1.7e9 + [0, 1e-3]: x·scale + min_ (sklearn's form) adds two numbers of 1.7e12
  // that cancel to [0, 1], losing ulp(1.7e12) = 2.4e-4; (x − data_min)·scale + lo keeps 1e-12.
  const int64_t n = 101;
  std::vector<double> v(n);
  for (int64_t i = 0; i < n; ++i) v[i] = 1.7e9 + 1e-5 * static_cast<double>((i * 37) % n);
  MinMaxScaler s;
  const std::vector<double> t = s.fit_transform(Tensor::from_vector({n, 1}, v)).to_vector();
  const double lo = 1.7e9, range = 1.7e9 + 1e-5 * (n - 1) - lo;
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(t[i], (v[i] - lo) / range, 1e-12) << i;
  const std::vector<double> back = s.inverse_transform(Tensor::from_vector({n, 1}, t)).to_vector();
  for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(back[i], v[i], 5e-7) << i;
}

TEST(Scaler, ConstantFeatureAndNaN) {
  Tensor x = mat(3, 2, {7, 1, 7, NAN, 7, 3});
  StandardScaler s;
  Tensor y = s.fit_transform(x);
  EXPECT_EQ(s.scale()[0], 1.0);  // constant → scale 1
  EXPECT_EQ(y.item({0, 0}), 0.0);
  EXPECT_EQ(s.mean()[1], 2.0);  // NaN ignored in fit
  EXPECT_EQ(s.n_samples_seen()[1], 2);
  EXPECT_TRUE(std::isnan(y.item({1, 1})));  // NaN kept in transform
  MinMaxScaler m;
  Tensor ym = m.fit_transform(x);
  EXPECT_EQ(ym.item({0, 0}), 0.0);
  EXPECT_TRUE(std::isnan(ym.item({1, 1})));
  EXPECT_EQ(ym.item({2, 1}), 1.0);
}

TEST(Scaler, Errors) {
  StandardScaler s;
  EXPECT_THROW(s.transform(mat(1, 2, {1, 2})), ValueError);
  s.fit(mat(2, 2, {1, 2, 3, 4}));
  try {
    s.transform(mat(1, 3, {1, 2, 3}));
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(
        std::string(e.what()).find("x has 3 features, but the scaler was fitted on 2 features"),
        std::string::npos);
  }
  EXPECT_THROW(MinMaxScaler(1, 0), ValueError);
  EXPECT_THROW(s.fit(Tensor::ones({4})), ValueError);
}

}  // namespace
}  // namespace bnorm::data
