// The canonical order in which every optimized batch-norm kernel adds up a channel, so that
// results depend on the shape alone. See Note [Canonical reduction order].
#pragma once

#include <algorithm>
#include <cstdint>

namespace bnorm::kernels {

// Note [Canonical reduction order]
// A channel is the N×HW array x(n, s). It is cut into blocks that depend only on (N, HW):
//   HW ≤ kBlockElems (1024): blocks of R = kBlockElems / HW whole rows;
//   HW > kBlockElems: each row cut into segments of kBlockElems positions (the last shorter).
// 1024 positions keep an NHWC block of 64 float channels at 256 KiB (L2) and an NCHW block at
// 4 KiB (L1) for the statistics' second sweep.
// Inside a block, element (n, s) goes to accumulator slot s mod 32 (the block-relative linear index
// mod 32 when HW < 32, see slot_of); each slot adds its elements in
// ascending (n, s) order, in double. A block's value is the pairwise sum of its 32 slots;
// the channel's value is the pairwise sum of its blocks (split at nb/2, recursively).
// Statistics use the same blocks: per block, a first sweep adds x − K (K = the block's first
// element, (n0, s0)) to get the block mean, a second sweep over the same block — still in cache —
// adds (x − mean)²; blocks merge with Chan's formula (merge_moments) in the
// same pairwise tree. So x is read from memory once, yet every variance is a two-pass one.
// Why it works for both layouts: NCHW streams a row s = s0, s0+1, … and keeps the 32 slots in
// vector lanes (32 slots = 4 independent AVX-512 add chains, enough to hide the add latency);
// NHWC streams channels and keeps 32 slot rows of per-channel accumulators; both
// add exactly the same terms to each slot in the same order. Why it is accurate: each slot adds at
// most kBlockElems/32 = 32 terms, then the tree adds log2(blocks) levels, so the rounding error is
// about (32 + 5 + log2 nb)·2^-53 relative to Σ|terms| — 1e-13 even at 1e9 elements per channel.
inline constexpr int64_t kSlots = 32;
inline constexpr int64_t kBlockElems = 1024;
static_assert(kBlockElems % kSlots == 0, "segments must start at slot 0");

/// The accumulator slot of element (n, s) of a block starting at row n0: s mod 32 for rows of at
/// least 32 positions; for shorter rows (HW < 32, never cut into segments) the block-relative
/// linear index (n − n0)·HW + s mod 32, so that 2-d input (HW = 1) still spreads over 32
/// independent slots instead of one long dependency chain.
inline int64_t slot_of(int64_t hw, int64_t n_rel, int64_t s) {
  return hw >= kSlots ? (s & (kSlots - 1)) : ((n_rel * hw + s) & (kSlots - 1));
}

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

/// Count, mean and sum of squared deviations of one block (or of a merge of blocks).
struct BlockMoments {
  double count, mean, m2;
};

/// Merges blocks v[0..count) pairwise (split at count/2) with Chan et al.'s update:
/// n = na + nb, δ = mean_b − mean_a, mean = mean_a + δ·nb/n, m2 = m2_a + m2_b + δ²·na·nb/n.
/// Equal means (a constant channel) merge to exactly that mean and m2 = 0.
inline BlockMoments merge_moments(const BlockMoments* v, int64_t count) {
  if (count == 1) return v[0];
  const int64_t half = count / 2;
  const BlockMoments a = merge_moments(v, half), b = merge_moments(v + half, count - half);
  const double n = a.count + b.count;
  const double delta = b.mean - a.mean;
  return {n, a.mean + delta * (b.count / n), a.m2 + b.m2 + delta * delta * (a.count * b.count / n)};
}

/// Pairwise sum of v[0..count), split at count/2.
inline double sum_blocks(const double* v, int64_t count) {
  if (count <= 0) return 0.0;
  if (count == 1) return v[0];
  const int64_t half = count / 2;
  return sum_blocks(v, half) + sum_blocks(v + half, count - half);
}

/// The pairwise sum of the kSlots accumulators of a block: the same tree as sum_blocks(a, 32)
/// (adjacent pairs, then pairs of pairs, …), written as levels so it inlines (it runs per block
/// and channel).
inline double sum_slots(const double* a) {
  static_assert(kSlots == 32, "the unrolled tree below assumes 32 slots");
  double t[16];
  for (int i = 0; i < 16; ++i) t[i] = a[2 * i] + a[2 * i + 1];
  for (int i = 0; i < 8; ++i) t[i] = t[2 * i] + t[2 * i + 1];
  for (int i = 0; i < 4; ++i) t[i] = t[2 * i] + t[2 * i + 1];
  for (int i = 0; i < 2; ++i) t[i] = t[2 * i] + t[2 * i + 1];
  return t[0] + t[1];
}

}  // namespace bnorm::kernels
