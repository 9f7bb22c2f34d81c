// CacheLineVector: every allocation, whatever its size or element type, starts on a cache line,
// also after growth and copies; the values are a std::vector's.
#include "internal/cache_line_vector.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace bnorm::detail {
namespace {

template <typename T>
bool on_cache_line(const T* p) {
  return reinterpret_cast<std::uintptr_t>(p) % kCacheLineBytes == 0;
}

TEST(CacheLineVector, EveryAllocationStartsOnACacheLine) {
  // Interleaved with small std::vector allocations, which leave malloc's heap at 16-byte steps.
  std::vector<std::vector<char>> clutter;
  std::vector<CacheLineVector<double>> kept;
  for (std::size_t n : {1u, 3u, 7u, 64u, 100u, 1000u, 4097u, 100000u}) {
    clutter.emplace_back(n % 48 + 1);
    CacheLineVector<double> v(n, 0.5);
    EXPECT_TRUE(on_cache_line(v.data())) << n;
    v.resize(3 * n + 5, 1.5);  // reallocates
    EXPECT_TRUE(on_cache_line(v.data())) << n;
    EXPECT_EQ(v[0], 0.5);
    EXPECT_EQ(v.back(), 1.5);
    const CacheLineVector<double> copy = v;
    EXPECT_TRUE(on_cache_line(copy.data())) << n;
    EXPECT_EQ(copy, v);
    kept.push_back(std::move(v));
  }
  CacheLineVector<float> f(5, 2.0f);
  EXPECT_TRUE(on_cache_line(f.data()));
  const float* d = f.data();
  const CacheLineVector<float> from_range(d, d + 5);
  EXPECT_TRUE(on_cache_line(from_range.data()));
  EXPECT_EQ(from_range, f);
}

}  // namespace
}  // namespace bnorm::detail
