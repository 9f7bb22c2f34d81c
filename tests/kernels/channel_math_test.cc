// The op layer's per-channel arithmetic (kernels/channel_math.h): the SIMD functions against
// their scalar definitions, bit for bit, on every instruction set this machine supports, over
// ranges that start and end off a vector boundary, with the values that take special paths
// (var = 0 with eps = 0 and eps > 0, −0, NaN, ±inf, huge and tiny values).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "kernels/channel_math.h"
#include "support/fills.h"

namespace bnorm::kernels {
namespace {

constexpr int64_t kChannels = 203;  // several vectors of every width, and a tail

// Random values with the special ones planted at fixed channels.
std::vector<double> with_specials(uint64_t seed, double mean, double stddev) {
  std::vector<double> v = test::randn(kChannels, seed, mean, stddev);
  const double inf = std::numeric_limits<double>::infinity();
  const double specials[] = {0.0, -0.0, std::nan(""), inf, -inf, 1e300, 1e-300, 0.0};
  for (std::size_t i = 0; i < std::size(specials); ++i) v[3 + 17 * i] = specials[i];
  return v;
}

// Variances: non-negative, with zeros (the eps = 0 rule), NaN and inf.
std::vector<double> variances(uint64_t seed) {
  std::vector<double> v = with_specials(seed, 0, 2);
  for (double& x : v) x = std::fabs(x);
  v[10] = v[11] = v[200] = 0.0;
  return v;
}

// Bit for bit, except that a NaN matches any NaN: from two NaN operands x86 returns the first
// one's sign and payload, and a compiler may order a product's operands either way (the scalar
// −s2·is of NaNs gave −NaN, the AVX-512 lanes +NaN), so NaN bits are not part of the contract.
::testing::AssertionResult same_values(const std::vector<double>& a, const std::vector<double>& b) {
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::isnan(a[i]) && std::isnan(b[i])) continue;
    if (std::memcmp(&a[i], &b[i], sizeof(double)) != 0) {
      return ::testing::AssertionFailure() << "channel " << i << ": " << a[i] << " vs " << b[i];
    }
  }
  return ::testing::AssertionSuccess();
}

template <typename F>
void on_every_target(F check) {
  int tested = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    check();
    ++tested;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(tested, 1);
}

const std::pair<int64_t, int64_t> kRanges[] = {{0, kChannels}, {1, 200}, {5, 6}, {7, 7}, {0, 3}};

TEST(ChannelMath, ForwardCoefficientsMatchTheScalarDefinition) {
  const std::vector<double> var = variances(1), weight = with_specials(2, 1, 1);
  on_every_target([&] {
    for (double eps : {1e-5, 0.0, 1e-300}) {
      for (const auto& [c0, c1] : kRanges) {
        SCOPED_TRACE("eps=" + std::to_string(eps) + " range " + std::to_string(c0) + ".." +
                     std::to_string(c1));
        std::vector<double> is1(kChannels, -7), sc1(kChannels, -7), is2 = is1, sc2 = sc1;
        forward_coefficients(var.data(), weight.data(), eps, c0, c1, is1.data(), sc1.data());
        reference::forward_coefficients(var.data(), weight.data(), eps, c0, c1, is2.data(),
                                        sc2.data());
        EXPECT_TRUE(same_values(is1, is2));
        EXPECT_TRUE(same_values(sc1, sc2));
      }
    }
  });
  // The eps = 0 rule itself: a zero variance gives 0, not inf.
  std::vector<double> is(kChannels), sc(kChannels);
  forward_coefficients(var.data(), weight.data(), 0.0, 0, kChannels, is.data(), sc.data());
  EXPECT_EQ(is[10], 0.0);
  EXPECT_EQ(is[200], 0.0);
}

TEST(ChannelMath, BackwardCoefficientsMatchTheScalarDefinition) {
  const std::vector<double> invstd = with_specials(3, 1, 0.5), weight = with_specials(4, 1, 1);
  const std::vector<double> s1 = with_specials(5, 0, 100), s2 = with_specials(6, 0, 100);
  on_every_target([&] {
    for (bool train : {true, false}) {
      for (double n : {2.0, 3.0, 12345.0}) {
        for (const auto& [c0, c1] : kRanges) {
          SCOPED_TRACE("train=" + std::to_string(train) + " n=" + std::to_string(n) + " range " +
                       std::to_string(c0) + ".." + std::to_string(c1));
          std::vector<double> a1(kChannels, -7), a2(kChannels, -7), a3(kChannels, -7);
          std::vector<double> b1 = a1, b2 = a2, b3 = a3;
          backward_coefficients(invstd.data(), weight.data(), s1.data(), s2.data(), n, train, c0,
                                c1, a1.data(), a2.data(), a3.data());
          reference::backward_coefficients(invstd.data(), weight.data(), s1.data(), s2.data(), n,
                                           train, c0, c1, b1.data(), b2.data(), b3.data());
          EXPECT_TRUE(same_values(a1, b1));
          EXPECT_TRUE(same_values(a2, b2));
          EXPECT_TRUE(same_values(a3, b3));
        }
      }
    }
  });
}

TEST(ChannelMath, RunningStatsUpdateMatchesTheScalarDefinition) {
  const std::vector<double> mean = with_specials(7, 3, 10), var = variances(8);
  const std::vector<double> rm0 = with_specials(9, 0, 1), rv0 = variances(10);
  on_every_target([&] {
    for (double momentum : {0.1, 0.0, 1.0, 0.37}) {
      for (int64_t c : {kChannels, int64_t{7}, int64_t{1}, int64_t{0}}) {
        SCOPED_TRACE("momentum=" + std::to_string(momentum) + " c=" + std::to_string(c));
        std::vector<double> rm1 = rm0, rv1 = rv0, rm2 = rm0, rv2 = rv0;
        update_running_stats(mean.data(), var.data(), 60.0, momentum, c, rm1.data(), rv1.data());
        reference::update_running_stats(mean.data(), var.data(), 60.0, momentum, c, rm2.data(),
                                        rv2.data());
        EXPECT_TRUE(same_values(rm1, rm2));
        EXPECT_TRUE(same_values(rv1, rv2));
      }
    }
  });
}

}  // namespace
}  // namespace bnorm::kernels
