// Tensor's storage cache (src/internal/storage_cache.h): freed storage of at least 64 KiB is kept
// for the next tensor of the same size, within the limit, oldest first out; small blocks and
// blocks over the limit go back to malloc. Off under AddressSanitizer (which must see frees).
#include "internal/storage_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include <unistd.h>

#include "bnorm/tensor.h"

namespace bnorm {
namespace {

using detail::StorageCache;

std::size_t cached() { return StorageCache::instance().cached_bytes(); }

// Restores the default limit (and an empty cache) when a test ends.
struct CacheLimit {
  explicit CacheLimit(std::size_t bytes) {
    set_tensor_cache_limit(0);
    set_tensor_cache_limit(bytes);
  }
  ~CacheLimit() {
    set_tensor_cache_limit(0);
    set_tensor_cache_limit(default_limit());
  }
  static std::size_t default_limit() {
    return StorageCache::kOffByDefault ? 0 : StorageCache::default_limit();
  }
};

TEST(TensorStorageCache, DefaultLimit) {
  // An eighth of the physical memory, at least 256 MiB; 0 under AddressSanitizer.
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  ASSERT_GT(pages, 0);
  const std::size_t eighth = static_cast<std::size_t>(pages) * static_cast<std::size_t>(page) / 8;
  const std::size_t expected = std::max(std::size_t{256} << 20, eighth);
  EXPECT_EQ(tensor_cache_limit(), StorageCache::kOffByDefault ? 0 : expected);
}

TEST(TensorStorageCache, FreedStorageServesTheNextTensorOfItsSize) {
  CacheLimit limit(std::size_t{64} << 20);
  const std::size_t mib = std::size_t{1} << 20;
  { Tensor a = Tensor::empty({256, 1024}); }  // 1 MiB of float32
  EXPECT_EQ(cached(), mib);
  {
    Tensor other = Tensor::empty({256, 1023});  // another size: a fresh block
    EXPECT_EQ(cached(), mib);
    Tensor b = Tensor::empty({128, 1024}, DType::kFloat64);  // the same bytes: the kept block
    EXPECT_EQ(cached(), 0u);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(b.raw_data()) % 64, 0u);
    b.fill(2.5);
    EXPECT_EQ(b.item({127, 1023}), 2.5);
  }
  EXPECT_EQ(cached(), mib + 256 * 1023 * 4);
  { Tensor small = Tensor::empty({1000}); }  // 4000 bytes: malloc's heap reuses those
  EXPECT_EQ(cached(), mib + 256 * 1023 * 4);
}

TEST(TensorStorageCache, LimitEvictsTheOldestAndZeroTurnsItOff) {
  const std::size_t mib = std::size_t{1} << 20;
  CacheLimit limit(3 * mib);
  {
    std::vector<Tensor> ts;
    for (int64_t i = 0; i < 5; ++i) ts.push_back(Tensor::empty({256 * (i + 1), 256}));
  }  // freed in order: 256, 512, 768, 1024, 1280 KiB; the 1280 evicts the 256 and the 512
  EXPECT_EQ(cached(), 3 * mib);                     // 768 + 1024 + 1280 KiB
  { Tensor big = Tensor::empty({4 * 256, 1024}); }  // 4 MiB: over the limit, not kept
  EXPECT_EQ(cached(), 3 * mib);
  { Tensor again = Tensor::empty({256 * 2, 256}); }  // 512 KiB: evicts the 768, the oldest
  EXPECT_EQ(cached(), std::size_t{1024 + 1280 + 512} << 10);
  set_tensor_cache_limit(0);
  EXPECT_EQ(cached(), 0u);
  { Tensor a = Tensor::empty({256, 1024}); }
  EXPECT_EQ(cached(), 0u);
}

TEST(TensorStorageCache, ThreadsAllocateAndFreeConcurrently) {
  const std::size_t limit_bytes = std::size_t{8} << 20;
  CacheLimit limit(limit_bytes);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t] {
      for (int i = 0; i < 2000; ++i) {
        Tensor a = Tensor::full({64 + (i + t) % 7, 1024}, static_cast<double>(t));
        if (a.item({63, 1023}) != static_cast<double>(t)) ADD_FAILURE() << "corrupt block";
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_LE(cached(), limit_bytes);
}

}  // namespace
}  // namespace bnorm
