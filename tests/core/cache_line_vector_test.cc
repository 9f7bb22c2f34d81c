// CacheLineVector: every allocation, whatever its size or element type, starts on a cache line,
// also after growth and copies; the values are a std::vector's; freed blocks are reused.
#include "internal/cache_line_vector.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
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

// A freed block comes back to the next allocation of the same size on the same thread, not to
// one of another size; each thread keeps its own blocks; values are never carried over.
TEST(CacheLineVector, ReusesAFreedBlockOfTheSameSize) {
  const double* first = nullptr;
  {
    CacheLineVector<double> v(1000, 1.0);
    first = v.data();
  }
  CacheLineVector<double> same(1000, 2.0);
  EXPECT_EQ(same.data(), first);
  EXPECT_EQ(same.front(), 2.0);
  EXPECT_EQ(same.back(), 2.0);
  const double* small = nullptr;
  {
    CacheLineVector<double> kept_small(10, 3.0);
    small = kept_small.data();
  }
  {
    CacheLineVector<double> other(1001, 3.0);  // not the 80-byte block just kept
    EXPECT_NE(other.data(), small);
    EXPECT_TRUE(on_cache_line(other.data()));
  }
  const double* in_thread = nullptr;
  std::thread([&] {
    CacheLineVector<double> v(1000, 4.0);  // `same` still holds the main thread's block
    in_thread = v.data();
    EXPECT_TRUE(on_cache_line(in_thread));
  }).join();
  EXPECT_NE(in_thread, same.data());
  // More blocks than a thread keeps, and one larger than it keeps: all freed, none reused twice.
  std::vector<CacheLineVector<float>> many;
  for (std::size_t i = 0; i < 2 * ThreadBlockCache::kBlocks; ++i) many.emplace_back(64, 1.0f);
  many.emplace_back(ThreadBlockCache::kMaxBytes, 1.0f);
  many.clear();
  std::vector<const float*> seen;
  for (std::size_t i = 0; i < ThreadBlockCache::kBlocks + 2; ++i) {
    many.emplace_back(64, 5.0f);
    for (const float* p : seen) EXPECT_NE(p, many.back().data());
    seen.push_back(many.back().data());
    EXPECT_EQ(many.back()[63], 5.0f);
  }
}

}  // namespace
}  // namespace bnorm::detail
