// The synthetic bike data set. Checked by tests/data/data_test.cc.
#include "bnorm/data/bikes.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "bnorm/error.h"

namespace bnorm::data {

Bikes make_bikes(int64_t n, uint64_t seed) {
  if (n < 1) throw ValueError(fmt::format("make_bikes: n must be >= 1, got {}", n));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> age(0.0, 20.0);
  std::normal_distribution<double> km_noise(0.0, 25000.0), price_noise(0.0, 60.0);
  Bikes b;
  b.features = Tensor::empty({n, 2});
  b.price = Tensor::empty({n, 1});
  float* f = b.features.data<float>();
  float* p = b.price.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    const double a = age(rng);
    const double km = std::clamp(a * 12000.0 + km_noise(rng), 0.0, 300000.0);
    const double price =
        std::max(50.0, 200.0 + 1800.0 * std::exp(-0.12 * a) - 0.002 * km + price_noise(rng));
    f[2 * i] = static_cast<float>(a);
    f[2 * i + 1] = static_cast<float>(km);
    p[i] = static_cast<float>(price);
  }
  return b;
}

}  // namespace bnorm::data
