// Data normalization before training, with scikit-learn's semantics: MinMaxScaler (to a
// feature range, [0, 1] by default) and StandardScaler (z-score: mean 0, std 1). Fit on
// training data, apply to new data. A constant feature gets scale 1; the std is biased (1/n);
// NaN is ignored in fit and kept in transform. Checked by tests/data/scaler_test.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::data {

/// x' = (x − data_min)/(data_max − data_min)·(max − min) + min, per feature (column).
/// sklearn.preprocessing.MinMaxScaler (same fitted attributes; transform subtracts data_min
/// first instead of adding sklearn's min_ = min − data_min·scale, which cancels for data far from
/// 0).
class MinMaxScaler {
 public:
  /// Throws ValueError unless min < max.
  explicit MinMaxScaler(double feature_min = 0.0, double feature_max = 1.0);
  /// Forgets previous data and fits x: (N, F), float32 or float64.
  MinMaxScaler& fit(const Tensor& x);
  /// Updates the fit with more rows (streaming).
  MinMaxScaler& partial_fit(const Tensor& x);
  /// Returns the scaled copy (same dtype). Throws ValueError before fit or for another F.
  Tensor transform(const Tensor& x) const;
  Tensor fit_transform(const Tensor& x) { return fit(x).transform(x); }
  Tensor inverse_transform(const Tensor& x) const;

  const std::vector<double>& data_min() const { return data_min_; }
  const std::vector<double>& data_max() const { return data_max_; }
  const std::vector<double>& scale() const { return scale_; }
  const std::vector<double>& min() const { return min_; }
  int64_t n_samples_seen() const { return n_samples_seen_; }

 private:
  // data_min_, with 0 for an all-NaN feature: what transform subtracts before scaling.
  std::vector<double> data_origin() const;

  double lo_, hi_;
  std::vector<double> data_min_, data_max_, scale_, min_;
  int64_t n_samples_seen_ = 0;
  void update_scale();
};

/// x' = (x − mean)/std per feature, std biased. sklearn.preprocessing.StandardScaler.
class StandardScaler {
 public:
  explicit StandardScaler(bool with_mean = true, bool with_std = true);
  StandardScaler& fit(const Tensor& x);
  /// Updates mean and variance with more rows (Chan et al.'s parallel update).
  StandardScaler& partial_fit(const Tensor& x);
  Tensor transform(const Tensor& x) const;
  Tensor fit_transform(const Tensor& x) { return fit(x).transform(x); }
  Tensor inverse_transform(const Tensor& x) const;

  const std::vector<double>& mean() const { return mean_; }
  const std::vector<double>& var() const { return var_; }
  const std::vector<double>& scale() const { return scale_; }
  /// Per feature: the non-NaN values seen.
  const std::vector<int64_t>& n_samples_seen() const { return count_; }

 private:
  bool with_mean_, with_std_;
  std::vector<double> mean_, var_, scale_;
  std::vector<int64_t> count_;
  // mean_ = shift_ + offset_ (a value of the data and the mean's distance from it), kept apart
  // between partial fits (see partial_fit) and subtracted in two steps by transform, so that
  // x − mean is not limited by the mean's rounding to one double.
  std::vector<double> shift_, offset_;
};

}  // namespace bnorm::data
