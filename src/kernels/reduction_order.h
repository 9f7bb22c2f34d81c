// The canonical order in which every optimized batch-norm kernel adds up a channel, so that
// results depend on the shape alone; block_sums_scalar is its executable definition.
// See Note [Canonical reduction order].
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/relu_mask_bits.h"

namespace bnorm::kernels {

// Note [Canonical reduction order]
// A channel is the N×HW array x(n, s). It is cut into blocks that depend only on (N, HW):
//   HW ≤ kBlockElems (1024): blocks of R = kBlockElems / HW whole rows;
//   HW > kBlockElems: each row cut into segments of kBlockElems positions (the last shorter).
// Inside a block, element (n, s) goes to accumulator slot s mod 8 (for HW ≥ 8; segments start at
// multiples of 1024, so that is also the segment-relative index mod 8), or the block-relative
// linear index (n − n0)·HW + s mod 8 (HW < 8, so that 2-d input, HW = 1, still spreads over 8
// slots). Each slot adds its terms in ascending (n, s) order, in double; a block's value is the
// pairwise tree of its 8 slots ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)); the channel's
// value is the pairwise sum of its blocks (split at nb/2, recursively).
//
// Statistics: per block, one sweep adds d = x − K and d² (K = the block's first element, (n0, s0),
// or 0 if that is not finite: block_shift), so x is read once; the block's mean is K + Σd/L (kept
// as the pair K, Σd/L until the channel's mean is final) and its m2 = Σd² − (Σd)²/L (L elements);
// blocks merge with Chan's formula (merge_moments) in the same pairwise tree, δ taken from the
// pairs so that a huge mean costs no accuracy. Why one sweep is accurate:
// K is an element of the block, so (mean − K)² ≤ m2 and Σd² ≤ (L + 1)·m2; the cancellation in
// Σd² − (Σd)²/L costs at most a factor L + 1 on the rounding of Σd² (each slot adds L/8 ≤ 128
// terms): a relative error below 128·1025·2^-53 ≈ 1.5e-11 in the worst case (a block whose first
// element is an outlier), ~1e-15 on ordinary data, far below float32's 6e-8. A constant block has
// d = 0: mean exactly K, m2 exactly 0.
//
// Why 8 slots, and why the order serves both layouts: NCHW streams a row s = s0, s0 + 1, … and
// keeps the 8 slots in the 8 double lanes of one AVX-512 vector (2 AVX2, 4 SSE4 vectors); the
// add latency is hidden by interleaving 4 channels (independent chains), not by more slots. NHWC
// walks down the positions of a block with SIMD lanes over channels and keeps a channel vector's
// 8 slots (× 2 sums) in 16 registers: the per-channel state stays in registers, where 32 slots
// (this note's previous choice) forced it through L1 on every element. Both add exactly the
// same terms to each slot in the same order.
inline constexpr int64_t kSlots = 8;
inline constexpr int64_t kBlockElems = 1024;
static_assert(kBlockElems % kSlots == 0, "segments must start at slot 0");

/// The accumulator slot of element (n, s) of a block starting at row n0: s mod 8 for rows of at
/// least 8 positions; for shorter rows (HW < 8, never cut into segments) the block-relative
/// linear index (n − n0)·HW + s mod 8.
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

/// Count, mean and sum of squared deviations of one block (or of a merge of blocks). The mean is
/// kept as shift + offset (shift: the first block's K, offset: the mean's distance from it), and
/// mean() rounds the two together only at the end: Chan's δ between two blocks is then the
/// difference of two shifts (elements of the data, each exact) plus that of two offsets (of the
/// data's spread), so its rounding error scales with the spread, not with |mean|. With means
/// rounded to double first, a float64 channel of mean 1e12 and standard deviation 1 lost
/// ulp(1e12) ≈ 1.2e-4 on every δ, and 1.5e-6 of its invstd (64×8×100; the two-pass reference:
/// 1e-9). See Note [Canonical reduction order].
struct BlockMoments {
  double count, shift, offset, m2;
  double mean() const { return shift + offset; }
};

/// The pairwise tree of the kSlots accumulators of a block: (a0 + a1) + (a2 + a3), … .
inline double sum_slots(const double* a) {
  static_assert(kSlots == 8, "the unrolled tree below assumes 8 slots");
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

/// The statistics' shift K of a block whose first element is `first`: that element, or 0 when
/// it is ±inf or NaN (x − inf would turn an infinite channel's mean into NaN; with K = 0 it is
/// ±inf, as PyTorch's Σx/n).
inline double block_shift(double first) { return std::isfinite(first) ? first : 0.0; }

/// A block's moments from its shifted sums: k = its first element, s1 = Σ(x − k),
/// s2 = Σ(x − k)² (each the tree of its slots). m2 is clamped at 0 against rounding, but a NaN
/// stays NaN (an infinite x gives s2 − s1²/L = inf − inf: the variance is NaN, as in PyTorch).
/// When Σd² overflows (|x| ≳ 1e154 in float64) with a finite Σd, m2 is +inf, not inf − inf: the
/// two-pass variance and PyTorch's overflow to inf there too (then invstd = 0, y = bias).
inline BlockMoments block_moments(double count, double k, double s1, double s2) {
  double m2 = s2 - s1 * (s1 / count);
  if (std::isinf(s2) && std::isfinite(s1)) m2 = s2;
  return {count, k, s1 / count, m2 < 0 ? 0.0 : m2};
}

/// Merges blocks v[0..count) pairwise (split at count/2) with Chan et al.'s update:
/// n = na + nb, δ = mean_b − mean_a = (shift_b − shift_a) + (offset_b − offset_a),
/// mean = mean_a + δ·nb/n (kept as shift_a + (offset_a + δ·nb/n)), m2 = m2_a + m2_b + δ²·na·nb/n.
/// A constant channel (every shift the constant, every offset 0) merges to exactly that mean and
/// m2 = 0.
inline BlockMoments merge_moments(const BlockMoments* v, int64_t count) {
  if (count == 1) return v[0];
  const int64_t half = count / 2;
  const BlockMoments a = merge_moments(v, half), b = merge_moments(v + half, count - half);
  const double n = a.count + b.count;
  const double mean_a = a.mean(), mean_b = b.mean();
  double delta = (b.shift - a.shift) + (b.offset - a.offset);
  // A non-finite mean (an infinite or NaN element): δ from the means, 0 when they are equal, also
  // when both are the same infinity (inf − inf would make the mean NaN where PyTorch's Σx/n is
  // inf).
  if (!std::isfinite(mean_a) || !std::isfinite(mean_b)) {
    delta = mean_b == mean_a ? 0.0 : mean_b - mean_a;
  }
  return {n, a.shift, a.offset + delta * (b.count / n),
          a.m2 + b.m2 + delta * delta * (a.count * b.count / n)};
}

/// v, or the one quiet NaN with a clear sign bit where v is any NaN. The finish steps give every
/// per-channel result through it: the sign and payload of a NaN sum depend on which operand was
/// NaN first (x86 keeps the first operand's NaN; inf + (−inf) makes a negative one), i.e. on the
/// order the code and the compiler chose, which differs between NCHW and NHWC paths (found by a
/// random-shape comparison: a channel holding ±inf and NaN had mean nan in one layout and −nan
/// in the other). With one NaN, a NaN channel's mean, variance and sums are the same bits in every
/// layout and for every thread count, and so are the NaN outputs they make.
inline double canonical_nan(double v) {
  return std::isnan(v) ? std::numeric_limits<double>::quiet_NaN() : v;
}

/// Pairwise sum of v[0..count), split at count/2.
inline double sum_blocks(const double* v, int64_t count) {
  if (count <= 0) return 0.0;
  if (count == 1) return v[0];
  const int64_t half = count / 2;
  return sum_blocks(v, half) + sum_blocks(v + half, count - half);
}

/// The two sums of one (channel, block) in the canonical order, and the shift they used.
struct BlockSums {
  double sum[2];
  double shift;
};

/// A channel's mean and biased variance from the BlockSums of its nb blocks (statistics: shift
/// = block_shift of the block's first element); `scratch` holds nb BlockMoments.
inline void finish_stats(const BlockPlan& plan, int64_t hw, const BlockSums* sums, int64_t nb,
                         BlockMoments* scratch, double* mean, double* var) {
  for (int64_t b = 0; b < nb; ++b) {
    const BlockRange r = plan.range(b, hw);
    const double count = static_cast<double>((r.n1 - r.n0) * (r.s1 - r.s0));
    scratch[b] = block_moments(count, sums[b].shift, sums[b].sum[0], sums[b].sum[1]);
  }
  const BlockMoments all = merge_moments(scratch, nb);
  *mean = canonical_nan(all.mean());
  *var = canonical_nan(all.m2 / all.count);
}

/// A channel's two backward sums from the BlockSums of its nb blocks; `scratch` holds nb doubles.
inline void finish_sums(const BlockSums* sums, int64_t nb, double* scratch, double* sum1,
                        double* sum2) {
  for (int j = 0; j < 2; ++j) {
    for (int64_t b = 0; b < nb; ++b) scratch[b] = sums[b].sum[j];
    *(j == 0 ? sum1 : sum2) = canonical_nan(sum_blocks(scratch, nb));
  }
}

/// The two sums of one block of one channel in the canonical order, element (n, s) at
/// x[n·stride_n + s·stride_s] (stride_n = C·HW and stride_s = 1 for NCHW, HW·C and C for NHWC):
///   Backward = false: out = {Σ(x − shift), Σ(x − shift)²}        (statistics; shift = K)
///   Backward = true:  out = {Σg, Σg·(x − shift)}                 (backward; shift = mean)
/// with g = dy, or 0 where a ReLU mask is given and the bit of memory index mask_base + i is clear
/// (x[i] and dy[i] as above; see BackwardReduceFn).
/// The executable definition of Note [Canonical reduction order]: the portable implementation
/// and the SIMD kernels' scalar leftovers call it, and the SIMD paths must match it bit for bit.
template <bool Backward, typename T>
void block_sums_scalar(const T* x, const T* dy, int64_t stride_n, int64_t stride_s, int64_t hw,
                       const BlockRange& r, double shift, double out[2],
                       const uint8_t* mask = nullptr, int64_t mask_base = 0) {
  double a1[kSlots] = {}, a2[kSlots] = {};
  for (int64_t n = r.n0; n < r.n1; ++n) {
    for (int64_t s = r.s0; s < r.s1; ++s) {
      const int64_t i = n * stride_n + s * stride_s;
      const int64_t slot = slot_of(hw, n - r.n0, s);
      const double d = static_cast<double>(x[i]) - shift;
      if constexpr (Backward) {
        const double g =
            mask && !relu_mask_bit(mask, mask_base + i) ? 0.0 : static_cast<double>(dy[i]);
        a1[slot] += g;
        a2[slot] += g * d;
      } else {
        a1[slot] += d;
        a2[slot] += d * d;
      }
    }
  }
  out[0] = sum_slots(a1);
  out[1] = sum_slots(a2);
}

}  // namespace bnorm::kernels
