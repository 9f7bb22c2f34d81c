// The seed article's example as a seeded synthetic data set: bikes with an age of 0–20 years and
// a distance of 0–300,000 km, and their price. Checked by tests/data/data_test.cc.
#pragma once

#include <cstdint>

#include "bnorm/tensor.h"

namespace bnorm::data {

struct Bikes {
  Tensor features;  ///< (N, 2) float32: age [years], distance [km]
  Tensor price;     ///< (N, 1) float32: price [EUR]
};

/// Draws n bikes: age ~ U(0, 20); distance ≈ 12,000 km per year of age ± 25,000, clipped to
/// [0, 300,000]; price = 200 + 1,800·exp(−0.12·age) − 0.002·distance ± 60, at least 50.
/// Throws ValueError for n < 1.
Bikes make_bikes(int64_t n, uint64_t seed);

}  // namespace bnorm::data
