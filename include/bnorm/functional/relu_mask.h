// The mask a fused BN + ReLU forward leaves for its backward: one bit per element.
#pragma once

#include <cstdint>
#include <vector>

namespace bnorm {

/// The ReLU mask of batch_norm_add_relu_forward_*: one bit per element of x in x's memory order
/// (element i is bit i mod 8 of byte i / 8), set where the ReLU let its input through (input > 0).
/// 1/32 of a float32 tensor, so the backward reads it instead of y (or a byte per element). Bits
/// past size() in the last byte are 0, so two masks of the same elements compare equal.
class ReluMask {
 public:
  ReluMask() = default;
  /// `size` elements, all clear. Throws ValueError for a negative size.
  explicit ReluMask(int64_t size);

  /// Elements (bits), not bytes.
  int64_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  /// Whether element i (memory order) passed the ReLU; no bounds check.
  bool operator[](int64_t i) const {
    return (bits_[static_cast<std::size_t>(i >> 3)] >> (i & 7)) & 1;
  }
  /// Resizes to `size` elements, all clear (the forward overwrites every bit).
  void resize(int64_t size);

  /// The packed bits: num_bytes() = (size() + 7) / 8 bytes.
  const uint8_t* data() const { return bits_.data(); }
  uint8_t* data() { return bits_.data(); }
  int64_t num_bytes() const { return static_cast<int64_t>(bits_.size()); }

  bool operator==(const ReluMask&) const = default;

 private:
  int64_t size_ = 0;
  std::vector<uint8_t> bits_;
};

}  // namespace bnorm
