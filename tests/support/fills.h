// Seeded input builders for tests: random tensors in either format, logical-order access.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::test {

/// Normal(mean, stddev) values in logical order, seeded.
inline std::vector<double> randn(std::size_t count, uint64_t seed, double mean = 0,
                                 double stddev = 1) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, stddev);
  std::vector<double> v(count);
  for (double& x : v) x = d(rng);
  return v;
}

/// A tensor of `dtype` and `format` holding `values` (logical order), rounded to dtype.
inline Tensor make_tensor(const Shape& shape, const std::vector<double>& values, DType dtype,
                          MemoryFormat format = MemoryFormat::kContiguous) {
  Tensor t = Tensor::from_vector(shape, values, format);
  return dtype == DType::kFloat64 ? t : t.to(DType::kFloat32);
}

/// Rounds values to float when dtype is float32 (so an oracle sees exactly what bnorm sees).
inline std::vector<double> round_to(const std::vector<double>& v, DType dtype) {
  if (dtype == DType::kFloat64) return v;
  std::vector<double> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = static_cast<float>(v[i]);
  return r;
}

/// The product of dims 2.. (1 for 2-d).
inline int64_t spatial_size(const Shape& s) {
  int64_t hw = 1;
  for (std::size_t d = 2; d < s.size(); ++d) hw *= s[d];
  return hw;
}

}  // namespace bnorm::test
