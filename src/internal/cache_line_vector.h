// CacheLineVector: a std::vector whose elements start on a 64-byte boundary.
//
// The per-channel arrays (mean, scale, shift, the backward coefficients) that the dispatcher
// hands to the kernels are read as whole SIMD vectors along NHWC rows and 2-d (N, C) inputs. At
// malloc's 16-byte alignment a 64-byte (AVX-512) load of them straddles two cache lines, which
// the core serves as two loads. Zen 5, kernel entries with the arrays 16–48 bytes off a line
// against aligned, one process each, one run: NHWC normalize 32×512×28×28 1.46
// → 1.16 ms, 32×64×112×112 3.62 → 3.05; dx 2.31 → 1.81 and 6.26 → 4.92 (rows of 4 KiB and
// more, whose coefficient loads serve 4 rows, the same). Through the public API (its
// arrays 16 bytes off against aligned, alternating blocks, 2 runs): training forward 32×64×112×112
// NHWC 10.2–10.4 → 9.5–9.8 ms, 32×512×28×28 NHWC 4.7–4.9 → 4.4–4.7, 65536×256 6.1–6.3 → 5.9;
// backward 32×512×28×28 NHWC 7.6–7.9 → 7.2–7.3, 65536×256 9.7–9.9 → 9.4–9.6.
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace bnorm::detail {

inline constexpr std::size_t kCacheLineBytes = 64;

// Blocks this thread freed, kept for its next allocation of the same byte size. The op layer
// allocates its per-channel arrays (6–9 of C doubles) on every call, and on a small call glibc's
// malloc cost more than some of the arithmetic: 8×1024 training forward and backward, perf, 9%
// of the samples in malloc_consolidate (each freed small chunk makes the next large request
// sweep the fast bins) and 4.5% in malloc and free. Exact sizes only, so that the sized delete
// that finally frees a block gets the size it was allocated with; up to kBlocks blocks of at
// most kMaxBytes each per thread, freed when the thread ends.
class ThreadBlockCache {
 public:
  static constexpr std::size_t kBlocks = 16;
  static constexpr std::size_t kMaxBytes = std::size_t{1} << 20;

  /// This thread's cache, or null once it has been destroyed (objects freed late in a thread's
  /// or the program's exit go straight to the heap).
  static ThreadBlockCache* of_thread() {
    if (destroyed()) return nullptr;
    thread_local ThreadBlockCache cache;
    return &cache;
  }

  /// A kept block of exactly `bytes`, or null.
  void* take(std::size_t bytes) {
    for (std::size_t i = count_; i-- > 0;) {
      if (blocks_[i].bytes != bytes) continue;
      void* p = blocks_[i].p;
      blocks_[i] = blocks_[--count_];
      return p;
    }
    return nullptr;
  }
  /// Keeps the block if there is room; false when the caller must free it.
  bool keep(void* p, std::size_t bytes) {
    if (bytes > kMaxBytes || count_ == kBlocks) return false;
    blocks_[count_++] = {p, bytes};
    return true;
  }

  ThreadBlockCache(const ThreadBlockCache&) = delete;
  ThreadBlockCache& operator=(const ThreadBlockCache&) = delete;
  ~ThreadBlockCache() {
    destroyed() = true;
    for (std::size_t i = 0; i < count_; ++i) {
      ::operator delete (blocks_[i].p, blocks_[i].bytes, std::align_val_t{kCacheLineBytes});
    }
  }

 private:
  ThreadBlockCache() = default;
  static bool& destroyed() {
    thread_local bool flag = false;  // trivially destructible: readable until the thread ends
    return flag;
  }
  struct Block {
    void* p;
    std::size_t bytes;
  };
  Block blocks_[kBlocks] = {};
  std::size_t count_ = 0;
};

/// A std::allocator that aligns every allocation to a cache line (C++17 aligned new), reusing
/// blocks the same thread freed (ThreadBlockCache).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;

  CacheLineAllocator() = default;
  // Implicit, as allocators are: containers convert (rebind) them to other element types.
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>& /*other*/) noexcept {}  // NOLINT

  T* allocate(std::size_t n) {
    const std::size_t bytes = n * sizeof(T);
    if (ThreadBlockCache* cache = ThreadBlockCache::of_thread()) {
      if (void* p = cache->take(bytes)) return static_cast<T*>(p);
    }
    return static_cast<T*>(::operator new (bytes, std::align_val_t{kCacheLineBytes}));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    const std::size_t bytes = n * sizeof(T);
    ThreadBlockCache* cache = ThreadBlockCache::of_thread();
    if (cache && cache->keep(p, bytes)) return;
    ::operator delete (p, bytes, std::align_val_t{kCacheLineBytes});
  }

  template <typename U>
  bool operator==(const CacheLineAllocator<U>& /*other*/) const noexcept {
    return true;  // stateless: any instance frees any other's memory
  }
};

template <typename T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace bnorm::detail
