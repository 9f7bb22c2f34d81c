// MinMaxScaler and StandardScaler. Checked by tests/data/scaler_test.cc (values from
// scikit-learn's documented examples and the definitions).
#include "bnorm/data/scaler.h"

#include <fmt/format.h>

#include <cmath>
#include <limits>

#include "bnorm/error.h"

namespace bnorm::data {

namespace {

// Checks x is (N, F) with F == expected (when expected >= 0); returns F.
int64_t check_2d(const char* fn, const Tensor& x, int64_t expected) {
  if (!x.defined() || x.dim() != 2) {
    throw ValueError(fmt::format("{}: x must be 2-d (N, F), got {}", fn,
                                 x.defined() ? shape_str(x.shape()) : "undefined"));
  }
  if (expected >= 0 && x.size(1) != expected) {
    throw ValueError(fmt::format("{}: x has {} features, but the scaler was fitted on {} features",
                                 fn, x.size(1), expected));
  }
  return x.size(1);
}

// Per feature j: x' = ((x − sub_hi[j]) − sub_lo[j])·mul[j] + add_lo[j] + add_hi[j]. A mean kept as
// hi + lo (StandardScaler's shift_ + offset_) is subtracted and added in two steps, so that x −
// mean is not limited by the mean's rounding to one double (ulp(1.7e9)/2 = 1.2e-7, 1.2e-4 standard
// deviations of timestamps with millisecond jitter).
Tensor apply(const Tensor& x, const std::vector<double>& sub_hi, const std::vector<double>& sub_lo,
             const std::vector<double>& mul, const std::vector<double>& add_lo,
             const std::vector<double>& add_hi) {
  const int64_t n = x.size(0), f = x.size(1);
  std::vector<double> v = x.to_vector();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < f; ++j) {
      double& e = v[i * f + j];
      e = (((e - sub_hi[j]) - sub_lo[j]) * mul[j] + add_lo[j]) + add_hi[j];  // NaN stays NaN
    }
  Tensor out = Tensor::from_vector({n, f}, v);
  return x.dtype() == DType::kFloat64 ? out : out.to(DType::kFloat32);
}

// sklearn's _handle_zeros_in_scale: a (near-)zero scale becomes 1.
double nonzero_scale(double s) { return s < 10 * std::numeric_limits<double>::epsilon() ? 1.0 : s; }

}  // namespace

MinMaxScaler::MinMaxScaler(double feature_min, double feature_max)
    : lo_(feature_min), hi_(feature_max) {
  if (!(feature_min < feature_max)) {
    throw ValueError(fmt::format("MinMaxScaler: feature_range min must be < max, got ({}, {})",
                                 feature_min, feature_max));
  }
}

MinMaxScaler& MinMaxScaler::fit(const Tensor& x) {
  data_min_.clear();
  data_max_.clear();
  n_samples_seen_ = 0;
  return partial_fit(x);
}

MinMaxScaler& MinMaxScaler::partial_fit(const Tensor& x) {
  const int64_t f = check_2d("MinMaxScaler.partial_fit", x,
                             data_min_.empty() ? -1 : static_cast<int64_t>(data_min_.size()));
  if (x.size(0) == 0)
    throw ValueError("MinMaxScaler.partial_fit: x must have at least 1 row, got 0");
  if (data_min_.empty()) {
    data_min_.assign(f, std::numeric_limits<double>::quiet_NaN());
    data_max_.assign(f, std::numeric_limits<double>::quiet_NaN());
  }
  const std::vector<double> v = x.to_vector();
  for (int64_t i = 0; i < x.size(0); ++i)
    for (int64_t j = 0; j < f; ++j) {
      const double e = v[i * f + j];
      if (std::isnan(e)) continue;
      if (std::isnan(data_min_[j]) || e < data_min_[j]) data_min_[j] = e;
      if (std::isnan(data_max_[j]) || e > data_max_[j]) data_max_[j] = e;
    }
  n_samples_seen_ += x.size(0);
  update_scale();
  return *this;
}

void MinMaxScaler::update_scale() {
  const std::size_t f = data_min_.size();
  scale_.assign(f, 1.0);
  min_.assign(f, lo_);
  for (std::size_t j = 0; j < f; ++j) {
    if (std::isnan(data_min_[j])) continue;  // all-NaN feature: identity shifted to lo
    scale_[j] = (hi_ - lo_) / nonzero_scale(data_max_[j] - data_min_[j]);
    min_[j] = lo_ - data_min_[j] * scale_[j];
  }
}

std::vector<double> MinMaxScaler::data_origin() const {
  std::vector<double> origin(data_min_);
  for (double& o : origin) o = std::isnan(o) ? 0.0 : o;  // all-NaN feature: x + feature_min
  return origin;
}

Tensor MinMaxScaler::transform(const Tensor& x) const {
  if (scale_.empty())
    throw ValueError("MinMaxScaler.transform: the scaler is not fitted; call fit first");
  const int64_t f = check_2d("MinMaxScaler.transform", x, static_cast<int64_t>(scale_.size()));
  // (x − data_min)·scale + feature_min, not sklearn's x·scale + min_ (min_ = feature_min −
  // data_min·scale): with data far from 0 the latter adds two large numbers that cancel, e.g.
  // 1.7e12-sized terms for timestamps 1.7e9 + [0, 1e-3], losing 2.4e-4 of the [0, 1] range.
  const std::vector<double> zeros(f, 0.0), lo(f, lo_), origin = data_origin();
  return apply(x, origin, zeros, scale_, lo, zeros);
}

Tensor MinMaxScaler::inverse_transform(const Tensor& x) const {
  if (scale_.empty())
    throw ValueError("MinMaxScaler.inverse_transform: the scaler is not fitted; call fit first");
  const int64_t f =
      check_2d("MinMaxScaler.inverse_transform", x, static_cast<int64_t>(scale_.size()));
  std::vector<double> inv(f);
  for (int64_t j = 0; j < f; ++j) inv[j] = 1.0 / scale_[j];
  const std::vector<double> zeros(f, 0.0), lo(f, lo_), origin = data_origin();
  return apply(x, lo, zeros, inv, zeros, origin);
}

StandardScaler::StandardScaler(bool with_mean, bool with_std)
    : with_mean_(with_mean), with_std_(with_std) {}

StandardScaler& StandardScaler::fit(const Tensor& x) {
  mean_.clear();
  var_.clear();
  count_.clear();
  shift_.clear();
  offset_.clear();
  return partial_fit(x);
}

StandardScaler& StandardScaler::partial_fit(const Tensor& x) {
  const int64_t f = check_2d("StandardScaler.partial_fit", x,
                             mean_.empty() ? -1 : static_cast<int64_t>(mean_.size()));
  if (x.size(0) == 0)
    throw ValueError("StandardScaler.partial_fit: x must have at least 1 row, got 0");
  if (mean_.empty()) {
    mean_.assign(f, 0.0);
    var_.assign(f, 0.0);
    count_.assign(f, 0);
    shift_.assign(f, 0.0);
    offset_.assign(f, 0.0);
  }
  const int64_t n = x.size(0);
  const std::vector<double> v = x.to_vector();
  for (int64_t j = 0; j < f; ++j) {
    // Two-pass statistics of the new rows, shifted by their first value k (a feature of mean
    // 1.7e9 and std 1e-3, Unix times, lost 1.4e-7 of its std in one fit and 1.4e-5 over ten
    // partial fits, from sums and means rounded at the mean's magnitude), then Chan's combination
    // with what was seen, whose mean is kept as shift_ + offset_ (the first rows' k and the
    // mean's distance from it), so that δ = (k − shift_) + (offset − offset_) is also at the
    // data's spread.
    int64_t nb = 0;
    double k = 0, sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = v[i * f + j];
      if (std::isnan(e)) continue;
      if (nb == 0 && std::isfinite(e)) k = e;
      sum += e - k;
      ++nb;
    }
    if (nb == 0) continue;
    const double offset = sum / static_cast<double>(nb);
    double m2b = 0;
    for (int64_t i = 0; i < n; ++i) {
      const double e = v[i * f + j];
      if (!std::isnan(e)) m2b += ((e - k) - offset) * ((e - k) - offset);
    }
    const double na = static_cast<double>(count_[j]), nbd = static_cast<double>(nb);
    const double total = na + nbd;
    if (count_[j] == 0) shift_[j] = k;
    const double delta = (k - shift_[j]) + (offset - offset_[j]);
    const double m2 = var_[j] * na + m2b + delta * delta * na * nbd / total;
    offset_[j] += delta * nbd / total;
    mean_[j] = shift_[j] + offset_[j];
    var_[j] = m2 / total;
    count_[j] += nb;
  }
  scale_.assign(f, 1.0);
  for (int64_t j = 0; j < f; ++j) scale_[j] = nonzero_scale(std::sqrt(var_[j]));
  return *this;
}

Tensor StandardScaler::transform(const Tensor& x) const {
  if (mean_.empty())
    throw ValueError("StandardScaler.transform: the scaler is not fitted; call fit first");
  const int64_t f = check_2d("StandardScaler.transform", x, static_cast<int64_t>(mean_.size()));
  const std::vector<double> zeros(f, 0.0);
  std::vector<double> mul(f, 1.0);
  for (int64_t j = 0; j < f; ++j) {
    if (with_std_) mul[j] = 1.0 / scale_[j];
  }
  return with_mean_ ? apply(x, shift_, offset_, mul, zeros, zeros)
                    : apply(x, zeros, zeros, mul, zeros, zeros);
}

Tensor StandardScaler::inverse_transform(const Tensor& x) const {
  if (mean_.empty())
    throw ValueError("StandardScaler.inverse_transform: the scaler is not fitted; call fit first");
  const int64_t f =
      check_2d("StandardScaler.inverse_transform", x, static_cast<int64_t>(mean_.size()));
  const std::vector<double> zeros(f, 0.0);
  std::vector<double> mul(f, 1.0);
  for (int64_t j = 0; j < f; ++j) {
    if (with_std_) mul[j] = scale_[j];
  }
  return with_mean_ ? apply(x, zeros, zeros, mul, offset_, shift_)
                    : apply(x, zeros, zeros, mul, zeros, zeros);
}

}  // namespace bnorm::data
