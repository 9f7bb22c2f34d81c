// Reading and writing the packed ReLU mask (bnorm::ReluMask's layout: element i is bit i mod 8
// of byte i / 8) inside the kernels.
#pragma once

#include <cstdint>

namespace bnorm::kernels {

/// Whether element i's bit is set.
inline bool relu_mask_bit(const uint8_t* mask, int64_t i) { return (mask[i >> 3] >> (i & 7)) & 1; }

/// The bits of elements e … e + n − 1 (0 ≤ n ≤ 8) in the low n bits; reads only the bytes they
/// occupy, so a run ending at the last element never reads past the mask.
inline unsigned relu_mask_bits(const uint8_t* mask, int64_t e, int64_t n) {
  if (n <= 0) return 0;
  const uint8_t* b = mask + (e >> 3);
  const int64_t shift = e & 7;
  unsigned w = b[0];
  if (shift + n > 8) w |= static_cast<unsigned>(b[1]) << 8;
  return (w >> shift) & ((1u << n) - 1);
}

/// Appends bits to a mask from a byte boundary on, a byte at a time, so that threads writing
/// byte-aligned element ranges never share a byte. finish() writes the last partial byte (its
/// bits past the range are 0).
class ReluMaskWriter {
 public:
  explicit ReluMaskWriter(uint8_t* byte) : p_(byte) {}
  /// Appends the low k ≤ 8 bits of `bits`.
  void put(unsigned bits, int64_t k) {
    acc_ |= bits << count_;
    count_ += static_cast<unsigned>(k);
    if (count_ >= 8) {
      *p_++ = static_cast<uint8_t>(acc_);
      acc_ >>= 8;
      count_ -= 8;
    }
  }
  void finish() {
    if (count_ > 0) *p_++ = static_cast<uint8_t>(acc_);
    acc_ = count_ = 0;
  }

 private:
  uint8_t* p_;
  unsigned acc_ = 0, count_ = 0;
};

/// Runs (NCHW planes of HW elements, NHWC rows of C) per group such that a group boundary is a
/// byte boundary of the mask: 8 / gcd(len, 8).
inline int64_t runs_per_mask_byte(int64_t len) {
  int64_t g = 8;
  while (len % g != 0) g /= 2;
  return 8 / g;
}

}  // namespace bnorm::kernels
