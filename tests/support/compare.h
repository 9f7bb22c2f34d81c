// Tolerance checks that print the worst element, both values and the bound on failure.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

namespace bnorm::test {

/// Checks |actual − expected| <= atol + rtol·|expected| element-wise (NaN matches NaN, Inf
/// matches the same Inf); on failure reports the worst element.
inline ::testing::AssertionResult all_close(const std::vector<double>& actual,
                                            const std::vector<double>& expected, double atol,
                                            double rtol) {
  if (actual.size() != expected.size()) {
    return ::testing::AssertionFailure()
           << "size " << actual.size() << " vs expected " << expected.size();
  }
  double worst_excess = 0;
  long worst = -1;
  for (std::size_t i = 0; i < actual.size(); ++i) {
    const double a = actual[i], e = expected[i];
    if (std::isnan(e) && std::isnan(a)) continue;
    if (std::isinf(e) && a == e) continue;
    const double bound = atol + rtol * std::fabs(e);
    const double err = std::fabs(a - e);
    if (!(err <= bound)) {
      const double excess = std::isnan(err) ? INFINITY : err - bound;
      if (worst < 0 || excess > worst_excess) {
        worst_excess = excess;
        worst = static_cast<long>(i);
      }
    }
  }
  if (worst < 0) return ::testing::AssertionSuccess();
  const double a = actual[worst], e = expected[worst];
  return ::testing::AssertionFailure()
         << "worst element " << worst << ": got " << a << ", expected " << e << ", |diff| "
         << std::fabs(a - e) << " > bound " << atol + rtol * std::fabs(e) << " (atol " << atol
         << ", rtol " << rtol << ")";
}

/// Largest |a − b| over all elements.
inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
    m = std::fmax(m, std::fabs(a[i] - b[i]));
  return m;
}

/// Whether the two vectors are bit-identical (as doubles; NaN payloads compared by bits).
inline bool bit_identical(const std::vector<double>& a, const std::vector<double>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0) return false;
  }
  return true;
}

}  // namespace bnorm::test
