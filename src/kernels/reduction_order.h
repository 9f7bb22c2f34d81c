// The canonical order in which every optimized batch-norm kernel adds up a channel, so that
// results depend on the shape alone. See Note [Canonical reduction order].
#pragma once

#include <algorithm>
#include <cstdint>

namespace bnorm::kernels {

// Note [Canonical reduction order]
// A channel is the N×HW array x(n, s). It is cut into blocks that depend only on (N, HW):
//   HW ≤ kBlockElems: blocks of R = kBlockElems / HW whole rows;
//   HW > kBlockElems: each row cut into segments of kBlockElems positions (the last shorter).
// Inside a block, element (n, s) goes to accumulator slot s mod 8; each slot adds its elements in
// ascending (n, s) order, in double. A block's value is ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7));
// the channel's value is the pairwise sum of its blocks (split at nb/2, recursively).
// Why it works for both layouts: NCHW streams a row s = s0, s0+1, … and keeps the 8 slots in
// vector lanes; NHWC streams channels and keeps 8 slot rows of per-channel accumulators; both
// add exactly the same terms to each slot in the same order. Why it is accurate: each slot adds at
// most kBlockElems/8 = 512 terms, then the tree adds log2(blocks) levels, so the rounding error is
// about (512 + log2 nb)·2^-53 relative to Σ|terms| — 1e-13 even at 1e9 elements per channel.
inline constexpr int64_t kSlots = 8;
inline constexpr int64_t kBlockElems = 4096;
static_assert(kBlockElems % kSlots == 0, "segments must start at slot 0");

struct BlockRange {
  int64_t n0, n1, s0, s1;
};

struct BlockPlan {
  int64_t rows_per_block;  // HW ≤ kBlockElems
  int64_t segs_per_row;    // HW > kBlockElems (then rows_per_block == 1)
  int64_t num_blocks;

  BlockRange range(int64_t b, int64_t hw) const {
    if (segs_per_row == 1) {
      return {b * rows_per_block, std::min(n_total, (b + 1) * rows_per_block), 0, hw};
    }
    const int64_t n = b / segs_per_row, seg = b % segs_per_row;
    return {n, n + 1, seg * kBlockElems, std::min(hw, (seg + 1) * kBlockElems)};
  }
  int64_t block_elems(int64_t hw) const {
    return segs_per_row == 1 ? rows_per_block * hw : kBlockElems;
  }
  int64_t n_total;
};

inline BlockPlan make_block_plan(int64_t n, int64_t hw) {
  BlockPlan plan{};
  plan.n_total = n;
  if (hw <= kBlockElems) {
    plan.rows_per_block = std::max<int64_t>(1, kBlockElems / std::max<int64_t>(hw, 1));
    plan.segs_per_row = 1;
    plan.num_blocks = (n + plan.rows_per_block - 1) / plan.rows_per_block;
  } else {
    plan.rows_per_block = 1;
    plan.segs_per_row = (hw + kBlockElems - 1) / kBlockElems;
    plan.num_blocks = n * plan.segs_per_row;
  }
  return plan;
}

/// ((a0+a1)+(a2+a3))+((a4+a5)+(a6+a7)).
inline double sum_slots(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/// Pairwise sum of v[0..count), split at count/2.
inline double sum_blocks(const double* v, int64_t count) {
  if (count <= 0) return 0.0;
  if (count == 1) return v[0];
  const int64_t half = count / 2;
  return sum_blocks(v, half) + sum_blocks(v + half, count - half);
}

}  // namespace bnorm::kernels
