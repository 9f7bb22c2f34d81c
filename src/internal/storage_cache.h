// StorageCache: the storage of freed tensors, kept for the next tensor of the same size.
//
// A fresh block of more than malloc's mmap threshold (128 KiB to 32 MiB, glibc moves it) comes
// from mmap and is given back by munmap when freed, so every new large tensor pays a page fault
// per 4 KiB page on first touch. A training step allocates and frees the same activation and
// gradient sizes again and again: `bnorm train --model cnn --steps 100` (batch 60, with its
// final evaluation) took 25.4–26.0 s with 2.21 million page faults, 9.2–9.3 s with 0.39 million
// under glibc tunables that keep freed memory in the heap (GLIBC_TUNABLES raising
// glibc.malloc.mmap_threshold and glibc.malloc.trim_threshold); and a 256×1024
// nn::BatchNorm1d forward + backward took 1.5–1.8 + 1.6–1.9 ms with 400 page faults per step,
// 0.053–0.056 + 0.080–0.087 ms when malloc happened to reuse its blocks (and with this cache). The
// cache does that for tensors only, within a limit, instead of changing the process's malloc (with
// Conv2d's scratch as tensors too: the CNN's 90 steps 26.1–26.3 → 7.5–8.3 s, 0.33 million faults;
// training 21–22 → 31 steps/s). Off under AddressSanitizer by default, which must see freed blocks.
// Checked by tests/core/storage_cache_test.cc.
#pragma once

#include <cstddef>
#include <mutex>
#include <vector>

namespace bnorm::detail {

// Not CacheLineVector's ThreadBlockCache: that one keeps ≤ 16 blocks of ≤ 1 MiB per thread,
// unlocked, for the op layer's per-channel arrays; tensors are MiB to GiB and are freed on any
// thread, so this cache is process-wide, locked, and bounded in bytes.
class StorageCache {
 public:
  /// Smaller blocks come from malloc's heap, whose freed chunks it reuses without page faults.
  static constexpr std::size_t kMinBytes = std::size_t{64} << 10;
  static constexpr std::size_t kMaxBlocks = 64;
  /// Under AddressSanitizer the limit starts at 0: ASan must see freed blocks to report their use.
#if defined(__SANITIZE_ADDRESS__)
  static constexpr bool kOffByDefault = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
  static constexpr bool kOffByDefault = true;
#else
  static constexpr bool kOffByDefault = false;
#endif
#else
  static constexpr bool kOffByDefault = false;
#endif
  /// The default limit: an eighth of the physical memory, at least 256 MiB. The cache holds what
  /// the program freed and will likely allocate again; `bnorm train --model cnn` evaluates in
  /// chunks of 1000 images whose convolution scratch alone is 226 MiB, and under a 256 MiB limit
  /// those blocks evicted each other (90 steps and the evaluation 15.5 s, 1 GiB 8.1 s).
  static std::size_t default_limit();

  /// The process's cache. Never destroyed: tensors may be freed during static destruction.
  static StorageCache& instance();

  /// A kept block of exactly `bytes`, or null.
  void* take(std::size_t bytes);
  /// Keeps the block (from std::aligned_alloc, `bytes` long) for reuse when it is at least
  /// kMinBytes and fits under the limit, first freeing the oldest kept blocks to make room;
  /// otherwise frees it.
  void release(void* block, std::size_t bytes);

  /// Frees kept blocks until at most `bytes` are kept; 0 turns the cache off.
  void set_limit(std::size_t bytes);
  std::size_t limit() const;
  /// Bytes kept now.
  std::size_t cached_bytes() const;

 private:
  StorageCache();
  struct Block {
    void* p;
    std::size_t bytes;
  };
  // Frees the oldest blocks until `incoming` more bytes and one more block fit; the caller holds
  // mu_ and frees `evicted` after releasing it.
  void evict_for(std::size_t incoming, std::vector<void*>& evicted);

  mutable std::mutex mu_;
  std::vector<Block> blocks_;  // oldest first
  std::size_t cached_ = 0;
  std::size_t limit_;
};

}  // namespace bnorm::detail
