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

/// A std::allocator that aligns every allocation to a cache line (C++17 aligned new).
template <typename T>
struct CacheLineAllocator {
  using value_type = T;

  CacheLineAllocator() = default;
  // Implicit, as allocators are: containers convert (rebind) them to other element types.
  template <typename U>
  CacheLineAllocator(const CacheLineAllocator<U>& /*other*/) noexcept {}  // NOLINT

  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kCacheLineBytes}));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    ::operator delete (p, n * sizeof(T), std::align_val_t{kCacheLineBytes});
  }

  template <typename U>
  bool operator==(const CacheLineAllocator<U>& /*other*/) const noexcept {
    return true;  // stateless: any instance frees any other's memory
  }
};

template <typename T>
using CacheLineVector = std::vector<T, CacheLineAllocator<T>>;

}  // namespace bnorm::detail
