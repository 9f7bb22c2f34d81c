// "cpu:hwy": the batch-norm kernels with Highway SIMD (compiled for every x86 target Highway
// knows, chosen at run time with HWY_DYNAMIC_DISPATCH), threads through parallel_for. Same
// blocks, slots and per-element operations as "cpu:blocked" (Note [Canonical reduction order]),
// so its results are bit-identical to it, to itself across thread counts, and across layouts;
// tests/kernels/batch_norm_impls_test.cc checks that. Per-element math is in double lanes:
// x is promoted, y demoted, never fused multiply-add (its rounding would differ from the scalar
// path). Variants: stats (one sweep of x: shifted Σd and Σd² per block), normalize, backward
// reduce (Σdy and Σdy·(x − mean) in one sweep), backward dx; NCHW reductions interleave channels,
// NHWC ones walk positions with a channel vector's slots in registers.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/batch_norm_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// foreach_target must come first.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <fmt/format.h>

#include "bnorm/error.h"
#include "bnorm/parallel.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "kernels/batch_norm_impls.h"
#include "kernels/reduction_order.h"
#include "kernels/relu_mask_bits.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::cpu_hwy {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Up to 8 double lanes: the 8 slots are then 1 vector (AVX-512), 2 (AVX2) or 4 (SSE4).
using DD = hn::CappedTag<double, 8>;
using VD = hn::Vec<DD>;
constexpr int64_t kLanes = static_cast<int64_t>(hn::MaxLanes(DD()));
constexpr int64_t kSlotVecs = kSlots / kLanes;
static_assert(kSlots % kLanes == 0, "slots must fill whole vectors");

// Elements per elementwise chunk; see batch_norm_cpu_blocked.cc.
constexpr int64_t kElementwiseGrain = 32768;

// Tensors of at most this many elements run their plain passes on one thread. On the Zen 5 host an
// OpenMP region costs ~3.7 µs (parallel_for of 2 empty chunks, 2 threads, median of 20000; a
// cache line takes ~240 ns from one core to the other), and a training forward or backward has
// two regions and hands per-channel arrays from one core to the other between them. Public API,
// one process, blocks of 200 calls alternating 1 and 2 threads, medians of 12 blocks (µs):
// training forward 1024×64 17.7 vs 21.4, 16×64×8×8 NCHW 17.5 vs 22.4, NHWC 18.6 vs 22.1,
// 256×256 19.8 vs 26.1, 128×512 22.2 vs 28.0, 64×1024 28.7 vs 34.5; inference 1024×64 7.2 vs
// 8.8, 64×1024 9.6 vs 10.0; backward 1024×64 24.6 vs 27.0, 256×256 32.7 vs 35.4, 128×512 37.9
// vs 37.1, 64×1024 48.3 vs 46.6. From 131072 elements two threads win (128×1024: training
// forward 52.8 vs 46.9, inference 20.3 vs 15.4, backward 96.1 vs 71.4; 32×64×8×8 NHWC 36.7 vs
// 32.1 forward); at 98304 (96×1024) the forward still ran faster on one (39.1 vs 42.4) but the
// backward on two (74.1 vs 64.0).
// The fused ops' passes (the ReLU mask's bits: the epilogue, the masked backward) do more per
// element and gain from two threads at these sizes, so grain_for keeps their chunks (BN + Add +
// ReLU forward 1024×64 35.3 vs 30.0 µs, 16×64×8×8 NCHW 37.6 vs 32.0; its backward 37.9 vs 36.5,
// 37.2 vs 33.6, 64×1024 63.9 vs 58.7).
constexpr int64_t kSerialMaxElems = 65536;
// A grain no loop reaches: one chunk, so parallel_for runs it on the calling thread.
constexpr int64_t kWholeLoop = int64_t{1} << 40;
// Indices per parallel chunk of a pass over p whose indices cover `per_index` elements each
// (planes, rows, runs, work items): `chunk_elems` elements' worth (kElementwiseGrain unless the
// pass needs more), or the whole loop for a small p unless the pass is `masked`.
inline int64_t grain_for(const BatchNormProblem& p, int64_t per_index, bool masked,
                         int64_t chunk_elems = kElementwiseGrain) {
  if (!masked && p.n * p.c * p.hw <= kSerialMaxElems) return kWholeLoop;
  return std::max<int64_t>(1, chunk_elems / std::max<int64_t>(per_index, 1));
}

HWY_INLINE VD load_d(DD dd, const float* p) {
  const hn::Rebind<float, DD> df;
  return hn::PromoteTo(dd, hn::LoadU(df, p));
}
HWY_INLINE VD load_d(DD dd, const double* p) { return hn::LoadU(dd, p); }
HWY_INLINE void store_d(DD /*dd*/, VD v, float* p) {
  const hn::Rebind<float, DD> df;
  hn::StoreU(hn::DemoteTo(df, v), df, p);
}
HWY_INLINE void store_d(DD dd, VD v, double* p) { hn::StoreU(v, dd, p); }

// Loads the first min(n, kLanes) elements at p (n ≥ 0) and zeros in the other lanes, never
// reading past them: a fault-suppressing masked load on AVX2/AVX-512, a copy elsewhere (Highway's
// MaskedLoad on SSE4 reads the whole vector).
template <typename T>
HWY_INLINE VD load_first(DD dd, const T* HWY_RESTRICT p, int64_t n) {
  const hn::Rebind<T, DD> dt;
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
  const auto v = hn::MaskedLoad(hn::FirstN(dt, static_cast<size_t>(n)), dt, p);
#else
  HWY_ALIGN T buf[kLanes] = {};
  for (int64_t i = 0; i < std::min(n, kLanes); ++i) buf[i] = p[i];
  const auto v = hn::Load(dt, buf);
#endif
  if constexpr (std::is_same_v<T, float>) {
    return hn::PromoteTo(dd, v);
  } else {
    return v;
  }
}

// The gradient the backward reads (see BackwardReduceFn): dy, and with Masked, 0 where the ReLU
// mask's bit is clear (IfThenElseZero gives +0.0, as the masked copy of dy would hold). Loads
// take memory indices e, from which the mask's bit offsets follow.
template <bool Masked, typename T>
struct Grad {
  const T* HWY_RESTRICT dy;
  const uint8_t* HWY_RESTRICT mask;

  HWY_INLINE double at(int64_t e) const {
    return Masked && !relu_mask_bit(mask, e) ? 0.0 : static_cast<double>(dy[e]);
  }
  // kLanes gradients from index e.
  HWY_INLINE VD load(DD dd, int64_t e) const {
    const VD v = load_d(dd, dy + e);
    if constexpr (Masked) {
      const uint8_t bits = static_cast<uint8_t>(relu_mask_bits(mask, e, kLanes));
      return hn::IfThenElseZero(hn::LoadMaskBits(dd, &bits), v);
    } else {
      return v;
    }
  }
  // The first min(n, kLanes) gradients from index e, zeros in the other lanes (load_first).
  HWY_INLINE VD load_first(DD dd, int64_t e, int64_t n) const {
    const VD v = kernels::cpu_hwy::HWY_NAMESPACE::load_first(dd, dy + e, n);
    if constexpr (Masked) {
      const uint8_t bits = static_cast<uint8_t>(relu_mask_bits(mask, e, std::min(n, kLanes)));
      return hn::IfThenElseZero(hn::LoadMaskBits(dd, &bits), v);
    } else {
      return v;
    }
  }
};

// Passes over tensors at least this large (two cores' L2; not tuned) prefetch their inputs
// kAheadBytes ahead into L2: the elementwise passes (x, and dy or z) and the NCHW reductions'
// long-row segments. With the per-element double arithmetic in the loop, the out-of-order window
// holds too few loads in flight for the hardware prefetchers to keep up with memory. A
// two-thread stream of 103 MB, y = (x − m)·k1 + k2 in double with 64-byte non-temporal stores:
// 7.4–8.3 ms; 5.6–5.95 with prefetcht1 4–16 KiB ahead (1 KiB ahead, or prefetcht0 2–4 KiB ahead:
// 6.2–6.7; a float FMA without prefetch: 6.1–6.9). A read-only Σd, Σd² in double, in ms:
// 5.7–6.0 → 2.9–3.8.
constexpr std::size_t kPrefetchMinBytes = std::size_t{4} << 20;
constexpr int64_t kAheadBytes = 4096;

// Prefetches the line at p into L2 (prefetcht1 on x86; hwy::Prefetch goes to L1).
template <typename T>
HWY_INLINE void prefetch_l2(const T* p) {
  __builtin_prefetch(p, /*rw=*/0, /*locality=*/2);
}

// Prefetches (into L2: prefetcht1 on x86) the line `ahead` elements past p when p is in the
// first `step` elements of its cache line, so that a loop advancing `step` elements at a time
// issues one prefetch per line; nothing with ahead = 0.
template <typename T>
HWY_INLINE void prefetch_ahead(const T* p, int64_t ahead, int64_t step) {
  if (ahead != 0 &&
      reinterpret_cast<uintptr_t>(p) % 64 < static_cast<uintptr_t>(step) * sizeof(T)) {
    prefetch_l2(p + ahead);
  }
}

// The prefetch distance of an elementwise pass over p (elements; 0: no prefetch): the first
// multiple of `group` elements at least kAheadBytes ahead, so that a loop visiting `group`
// consecutive elements in some order prefetches the same element of a later group.
template <typename T>
int64_t prefetch_distance(const BatchNormProblem& p, int64_t group) {
  if (static_cast<std::size_t>(p.n * p.c * p.hw) * sizeof(T) < kPrefetchMinBytes) return 0;
  const int64_t elems = kAheadBytes / static_cast<int64_t>(sizeof(T));
  group = std::max<int64_t>(group, 1);
  return (elems + group - 1) / group * group;
}

// ---- reductions: statistics and the backward sums, one sweep each --------------------------
//
// Both compute, per (channel, block), the two sums of block_sums_scalar (reduction_order.h) with
// the same per-element operations in double lanes (no FMA: its rounding would differ from the
// scalar definition): d = x − shift, then d and d² (statistics, shift = the block's first
// element) or dy and dy·d (backward, shift = mean[c]).

template <bool Backward>
HWY_INLINE void add_terms(VD xv, VD gv, VD sh, VD& a1, VD& a2) {
  const VD d = hn::Sub(xv, sh);
  if constexpr (Backward) {
    a1 = hn::Add(a1, gv);
    a2 = hn::Add(a2, hn::Mul(gv, d));
  } else {
    a1 = hn::Add(a1, d);
    a2 = hn::Add(a2, hn::Mul(d, d));
  }
}

// The same for lanes where m is set; the others add +0.0, which leaves an accumulator's bits
// unchanged (accumulators start at +0.0 and never become −0.0 under round-to-nearest).
template <bool Backward, class M>
HWY_INLINE void add_terms_masked(M m, VD xv, VD gv, VD sh, VD& a1, VD& a2) {
  const VD d = hn::Sub(xv, sh);
  a1 = hn::Add(a1, hn::IfThenElseZero(m, Backward ? gv : d));
  a2 = hn::Add(a2, hn::IfThenElseZero(m, Backward ? hn::Mul(gv, d) : hn::Mul(d, d)));
}

// Channels the NCHW reduction interleaves: independent add chains that hide the add latency
// (3–4 cycles) behind each other. AVX-512: 4 channels × 2 sums = 8 accumulator registers;
// AVX2: 2 channels × 2 sums × 2 vectors; SSE4: 1 × 2 × 4.
constexpr int64_t kGroup = kLanes >= 8 ? 4 : (kLanes >= 4 ? 2 : 1);

// The sums of block r for the G channels c0 … c0 + G − 1 of an NCHW tensor with HW ≥ 8: rows are
// streamed with slot s mod 8 in lane s mod 8; the last HW mod 8 positions of a row go through a
// masked load (load_first) and a lane mask. out[g] holds channel c0 + g's shift and receives its
// sums.
template <int64_t G, bool Backward, bool Masked, typename T>
HWY_NOINLINE void nchw_block_sums(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                  const Grad<Masked, T> grad, int64_t c0, const BlockRange r,
                                  BlockSums* HWY_RESTRICT out) {
  const DD dd;
  const int64_t hw = p.hw;
  VD a1[G][kSlotVecs], a2[G][kSlotVecs], sh[G];
  for (int64_t g = 0; g < G; ++g) {
    sh[g] = hn::Set(dd, out[g].shift);
    for (int64_t v = 0; v < kSlotVecs; ++v) a1[g][v] = a2[g][v] = hn::Zero(dd);
  }
  const int64_t full = r.s0 + (r.s1 - r.s0) / kSlots * kSlots;
  const int64_t tail = r.s1 - full;
  // Blocks of whole rows: while row n is read, the group's next row (n + 1, C·HW elements on:
  // the next row of this block or the first of the next block, which its caller reads next) is
  // prefetched, as many lines per step as the step reads. The hardware prefetchers start each
  // such G·HW-element chunk cold (medians of 2 × 10 calls: backward sums 32×512×28×28 5.5 →
  // 3.7 ms, 32×1024×14×14 1.24 → 0.99; statistics 64×512×28×28 7.2 → 4.5–5.6 ms). Segments of
  // long rows continue their streams, which the hardware follows, but for large tensors not
  // fast enough (below).
  const bool whole_rows = r.s0 == 0 && r.s1 == hw;
  constexpr int64_t kLineElems = 64 / static_cast<int64_t>(sizeof(T));
  constexpr int64_t kLinesPerStep = G * kSlots / kLineElems;
  const int64_t seg_ahead = whole_rows ? 0 : prefetch_distance<T>(p, 1);
  // The steps of one row, prefetching per step (compile-time, so that the loop tests nothing):
  // the next row's lines (kNextRow), the line kAheadBytes further along each channel's segment
  // (kSegment: long rows of large tensors, where the hardware alone fell behind the double
  // arithmetic: 32×64×112×112 statistics 2.7–4.1 → 2.3–2.6 ms, backward sums 6.8–7.4 →
  // 5.9–6.2), or nothing.
  enum Ahead { kNone, kNextRow, kSegment };
  auto steps = [&](auto mode, int64_t row, int64_t next) {
    constexpr int kMode = decltype(mode)::value;
    const T* HWY_RESTRICT xr = x + row;
    for (int64_t s = r.s0; s < full; s += kSlots) {
      if constexpr (kMode == kNextRow) {
        for (int64_t l = 0; l < kLinesPerStep; ++l) {
          hwy::Prefetch(x + next + s * G + l * kLineElems);
          if (Backward) hwy::Prefetch(grad.dy + next + s * G + l * kLineElems);
        }
      } else if constexpr (kMode == kSegment) {
        for (int64_t g = 0; g < G; ++g) {
          prefetch_ahead(xr + g * hw + s, seg_ahead, kSlots);
          if (Backward) prefetch_ahead(grad.dy + row + g * hw + s, seg_ahead, kSlots);
        }
      }
      for (int64_t g = 0; g < G; ++g) {
        for (int64_t v = 0; v < kSlotVecs; ++v) {
          const int64_t o = g * hw + s + v * kLanes;
          add_terms<Backward>(load_d(dd, xr + o), Backward ? grad.load(dd, row + o) : sh[g], sh[g],
                              a1[g][v], a2[g][v]);
        }
      }
    }
  };
  for (int64_t n = r.n0; n < r.n1; ++n) {
    const int64_t row = (n * p.c + c0) * hw;  // memory index of the first channel's row
    if (whole_rows && n + 1 < p.n) {
      steps(std::integral_constant<int, kNextRow>{}, row, row + p.c * hw);
    } else if (seg_ahead != 0) {
      steps(std::integral_constant<int, kSegment>{}, row, 0);
    } else {
      steps(std::integral_constant<int, kNone>{}, row, 0);
    }
    if (tail == 0) continue;
    for (int64_t g = 0; g < G; ++g) {
      for (int64_t v = 0; v < kSlotVecs; ++v) {
        const int64_t o = g * hw + full + v * kLanes;
        const int64_t left = std::max<int64_t>(0, tail - v * kLanes);
        add_terms_masked<Backward>(
            hn::FirstN(dd, static_cast<size_t>(left)), load_first(dd, x + row + o, left),
            Backward ? grad.load_first(dd, row + o, left) : sh[g], sh[g], a1[g][v], a2[g][v]);
      }
    }
  }
  for (int64_t g = 0; g < G; ++g) {
    HWY_ALIGN double s1[kSlots], s2[kSlots];
    for (int64_t v = 0; v < kSlotVecs; ++v) {
      hn::Store(a1[g][v], dd, s1 + v * kLanes);
      hn::Store(a2[g][v], dd, s2 + v * kLanes);
    }
    out[g].sum[0] = sum_slots(s1);
    out[g].sum[1] = sum_slots(s2);
  }
}

// The sums of block r for channels [c0, c0 + cw) of an NCHW tensor with HW < 8, on targets whose
// vector holds the 8 slots (AVX-512). Row n of the block starts at slot o = (n − n0)·HW mod 8,
// and its HW ≤ 7 elements go to slots o, o + 1, … (mod 8), all different: so each row is one
// masked load rotated by o into the slot lanes, and each slot still adds its terms in ascending
// order. The range's cw·HW elements of a sample are contiguous, so the block is read sample by
// sample in sequential stretches; each channel's 8 slots × 2 sums stay in `acc` (2·cw vectors,
// in L1), loaded and stored once per sample, and the next sample's stretch is prefetched, a line
// per line read. The scalar definition, element by element with rows C·HW apart, ran at 6–30
// cycles per element; rotated loads of 4 channels at a time (the NCHW work items) at 5–13,
// waiting on rows C·HW elements apart (driver, medians of 20 calls: 8192×256×4 statistics
// 10.2 → 5.3 → 2.1 ms, backward sums 14.4 → 14.5 → 3.4; 4096×512×2 backward sums
// 14.9 → 6.6 → 2.8).
template <bool Backward, bool Masked, typename T>
HWY_NOINLINE void nchw_short_range_sums(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                        const Grad<Masked, T> grad, const double* HWY_RESTRICT mean,
                                        int64_t c0, int64_t cw, const BlockRange r,
                                        double* HWY_RESTRICT acc, BlockSums* HWY_RESTRICT out) {
  static_assert(kLanes == kSlots || sizeof(T) == 0, "the 8 slots must be one vector");
  const DD dd;
  const int64_t hw = p.hw, stride = p.c * hw;
  using TI = hwy::MakeSigned<double>;
  HWY_ALIGN TI table[kSlots][kSlots];  // rotation by o: lane l takes lane (l − o) mod 8
  uint8_t bits[kSlots];                // lanes o … o + HW − 1 (mod 8)
  const unsigned ones = (1u << hw) - 1;
  for (int64_t o = 0; o < kSlots; ++o) {
    for (int64_t l = 0; l < kSlots; ++l) table[o][l] = static_cast<TI>((l - o + kSlots) % kSlots);
    bits[o] = static_cast<uint8_t>((ones << o) | (ones >> (kSlots - o)));
  }
  for (int64_t i = 0; i < cw; ++i) {
    out[i].shift =
        Backward ? mean[c0 + i] : block_shift(static_cast<double>(x[(r.n0 * p.c + c0 + i) * hw]));
  }
  double* HWY_RESTRICT acc2 = acc + cw * kSlots;
  std::fill(acc, acc + 2 * cw * kSlots, 0.0);
  constexpr int64_t kLineElems = 64 / static_cast<int64_t>(sizeof(T));
  int64_t o = 0;
  for (int64_t n = r.n0; n < r.n1; ++n) {
    const int64_t row = (n * p.c + c0) * hw;  // memory index of the range's first element
    const bool ahead = n + 1 < p.n;
    const auto idx = hn::SetTableIndices(dd, table[o]);
    const auto m = hn::LoadMaskBits(dd, &bits[o]);
    for (int64_t i = 0; i < cw; ++i) {
      const int64_t e = row + i * hw;
      if (ahead && (e & (kLineElems - 1)) < hw) {  // the first channel starting in its line
        hwy::Prefetch(x + e + stride);
        if (Backward) hwy::Prefetch(grad.dy + e + stride);
      }
      const VD sh = hn::Set(dd, out[i].shift);
      const VD xv = hn::TableLookupLanes(load_first(dd, x + e, hw), idx);
      const VD gv = Backward ? hn::TableLookupLanes(grad.load_first(dd, e, hw), idx) : sh;
      VD a1 = hn::Load(dd, acc + i * kSlots), a2 = hn::Load(dd, acc2 + i * kSlots);
      add_terms_masked<Backward>(m, xv, gv, sh, a1, a2);
      hn::Store(a1, dd, acc + i * kSlots);
      hn::Store(a2, dd, acc2 + i * kSlots);
    }
    o = (o + hw) & (kSlots - 1);
  }
  for (int64_t i = 0; i < cw; ++i) {
    out[i].sum[0] = sum_slots(acc + i * kSlots);
    out[i].sum[1] = sum_slots(acc2 + i * kSlots);
  }
}

// NHWC work items are (block, range of channels); a block's positions are one contiguous range
// of memory rows, read in units of kWalk positions: for each unit and slot, groups of up to 4
// channel vectors of the range in turn walk the unit's positions of that slot (nhwc_slot_walk),
// each slot's 2 sums per vector in registers (loaded from and stored to `acc`, which holds the
// range's accumulators, once per slot and unit), while the next unit is prefetched.
// (An earlier version read small tensors and rows of ≤ 64 channels row by row, every channel's
// 8 slots × 2 sums in L1. Against the slot-by-slot walks it lost everywhere, medians of 2 × 300
// calls: 256×1024 statistics 35 → 28 µs, backward sums 53 → 44 µs; 8×2048×7×7 backward sums
// 200 → 168 µs; 32×64×112×112 statistics 7.1 → 4.1 ms, backward sums 9.3 → 7.4 ms: 7019291,
// an earlier host and walks. On Zen 5 against today's walks, whole rows of at most 128
// channels read from memory faster row by row: nhwc_row_order_sums.)

// Channels per range for tensors up to 4 MiB (likely in cache): more, smaller work items share
// small problems better between threads.
constexpr int64_t kSmallRangeChannels = 128;
inline bool nhwc_small(const BatchNormProblem& p, std::size_t elem_size) {
  return p.n * p.c * p.hw * static_cast<int64_t>(elem_size) <= (int64_t{4} << 20);
}

// Positions per walk unit (at least; whole short rows are grouped up to kWalk or more). With
// the slot-by-slot walks, 64 against 128 (medians of 2 × 20 calls): statistics 32×64×112×112
// 3.20 → 2.72 ms, 32×512×28×28 1.48 → 1.32 ms; backward sums 32×512×28×28 3.97 → 3.53 ms,
// 4096×1024 1.11 → 0.92 ms, 32×2048×7×7 0.91 → 0.82 ms; 256: 5–25% slower than 128; 32: mixed
// (statistics up to 15% slower than 64).
constexpr int64_t kWalk = 64;
static_assert(kWalk % kSlots == 0, "walks must start at slot 0");

// Positions per walk unit for rows of `row_bytes` (C·sizeof(T)) and `tensors` inputs (x, and
// dy for the backward): kWalk, fewer where rows are far apart. A unit and the next one,
// prefetched, must share the core's L2 with each other: with rows R bytes apart (R a power of two
// of 4 KiB or more), the same column of every row maps to only L2/(16·R) groups of sets of a
// 16-way L2 of 64-byte lines, which hold L2/R rows of the column; P ≤ L2/(4·R·tensors), a multiple
// of 8, keeps the 2 units' 2·P·tensors rows at half of that. L2 is l2_cache_bytes(). Measured on
// a 2 MiB L2 (Intel; driver, medians of 50–100 calls, 3 alternating runs): 32×2048×7×7 backward
// sums 0.79–0.83 → 0.66–0.71 ms with 1-row units (49 positions) instead of 2 (98); 8×2048×14×14
// backward sums 0.81–0.94 → 0.73–0.80 with 32-position pieces; 32×2048×7×7 statistics (one
// tensor: 2 rows still fit, and are kept) 0.42–0.46 ms with 2-row units, 0.41–0.48 with 1-row
// units. On a 1 MiB L2 (AMD Zen 5, the bound of 2 MiB before: medians of 60 alternating calls, 2
// runs) the halved units took backward sums of 32×1024×14×14 from 1.54–1.70 to 1.19–1.31 ms and
// of 4096×1024 from 0.78–0.79 to 0.66–0.68; 32×2048×7×7 0.67–0.72 → 0.66–0.71, 8×2048×14×14
// 0.58–0.74 → 0.63–0.71 (mixed), 256×1024 0.042 → 0.044–0.045 ms.
inline int64_t walk_positions(int64_t row_bytes, int64_t tensors) {
  const int64_t p =
      static_cast<int64_t>(l2_cache_bytes() / 4) / std::max<int64_t>(1, row_bytes * tensors);
  return std::clamp<int64_t>(p / kSlots * kSlots, kSlots, kWalk);
}

// Channels rounded up to whole 64-byte vectors of double: the row stride of NHWC accumulators.
inline int64_t padded_channels(int64_t cw) { return (cw + 7) / 8 * 8; }

// Prefetches the cache lines of one walk unit in memory order, one per call to step(): rows
// `rows[0..count)`, each `lines` lines from its pointer. Into L2, not L1 (a walk's lines share
// few L1 sets; medians of 15 calls, statistics 32×64×112×112 5.2–5.5 → 3.5–4.9 ms, 32×512×28×28
// 1.52 → 1.42; other shapes the same).
template <typename T>
struct UnitPrefetcher {
  const T* rows[2 * kWalk];  // units: short rows < 2·kWalk positions, pieces ≤ kWalk + 16
  int64_t count = 0, lines = 0, k = 0, line = 0;
  static constexpr int64_t kLineElems = 64 / static_cast<int64_t>(sizeof(T));
  HWY_INLINE void step() {
    if (k == count) return;
// rows[k] is read only below count, which plan_prefetch sets with the rows; GCC 12 cannot follow
// that through the slot-major walks of nhwc_block_sums and warns.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
    prefetch_l2(rows[k] + line * kLineElems);
#pragma GCC diagnostic pop
    if (++line == lines) {
      line = 0;
      ++k;
    }
  }
};

// The walk after this one in the same unit, whose lines a walk prefetches into L1, position for
// position: memory channel `ch`, slot j + dj, `lines` cache lines per position (0: none).
struct NextWalk {
  int64_t ch = 0, dj = 0, lines = 0;
};

// Adds the terms (add_terms) of V channel vectors from memory channel ch over the runs
// [row0, row1) of a unit (positions q0 ≤ q < q1 of each, q0 a multiple of 8) for slot j: the
// positions q ≡ j (mod 8) of each run in order. Each slot adds its terms in
// ascending position order, as Note [Canonical reduction order] asks, and only 2·V accumulators
// are live, so V = 4 fits in registers and a float walk reads whole cache lines per position.
// (The previous walk kept one vector's 8 slots × 2 sums in registers and so read half a line
// per position; with C a multiple of 1024 floats every position of a walk maps to one L1 set,
// and the line's second half, read one channel vector later, had always been evicted.) The
// prefetchers advance one line of each tensor per line read, and `next` names the walk whose
// lines to bring into L1 meanwhile.
// With `fresh` (the block's first unit), the sums start at +0.0 instead of being loaded.
// With Tail (V = 1), the vector holds only the first `tail` < kLanes channels (the range's last,
// past its whole vectors): loads are masked (load_first), the other lanes add 0 − 0 to
// accumulators nobody reads. The same terms in the same order as the scalar definition, which
// read those channels one by one, strided, at 5–12 cycles per element (C = 2, 3, 7: every
// channel; C = 100: 4 of each row's 100 channels, 1.03 against 0.72 cycles per element for
// C = 96).
template <int64_t V, bool Backward, bool Masked, typename T, bool Tail = false>
HWY_INLINE void nhwc_slot_walk(const T* HWY_RESTRICT x, const Grad<Masked, T> grad, int64_t start,
                               int64_t stride, int64_t c, int64_t ch, int64_t row0, int64_t row1,
                               int64_t q0, int64_t q1, int64_t j, double* HWY_RESTRICT acc1,
                               double* HWY_RESTRICT acc2, int64_t cs,
                               const double* HWY_RESTRICT shift, bool fresh, UnitPrefetcher<T>& px,
                               UnitPrefetcher<T>& pg, UnitPrefetcher<uint8_t>& pm,
                               const NextWalk& next, int64_t tail = kLanes) {
  static_assert(!Tail || V == 1, "a tail is one partial vector");
  const DD dd;
  constexpr int64_t kLinesPerStep =
      std::max<int64_t>(1, V * kLanes * static_cast<int64_t>(sizeof(T)) / 64);
  VD sh[V];
  for (int64_t v = 0; v < V; ++v) {
    sh[v] = Tail ? load_first(dd, shift, tail) : hn::Load(dd, shift + v * kLanes);
  }
  {
    VD a1[V], a2[V];
    for (int64_t v = 0; v < V; ++v) {
      a1[v] = fresh ? hn::Zero(dd) : hn::Load(dd, acc1 + j * cs + v * kLanes);
      a2[v] = fresh ? hn::Zero(dd) : hn::Load(dd, acc2 + j * cs + v * kLanes);
    }
    for (int64_t rr = row0; rr < row1; ++rr) {
      const int64_t pos = start + rr * stride;
      for (int64_t q = q0 + j; q < q1; q += kSlots) {
        for (int64_t l = 0; l < kLinesPerStep; ++l) {
          px.step();
          if (Backward) pg.step();
        }
        if (Masked) pm.step();
        if (q + next.dj < q1) {
          const int64_t en = (pos + q + next.dj) * c + next.ch;
          for (int64_t l = 0; l < next.lines; ++l) {
            hwy::Prefetch(x + en + l * UnitPrefetcher<T>::kLineElems);
            if (Backward) hwy::Prefetch(grad.dy + en + l * UnitPrefetcher<T>::kLineElems);
          }
        }
        const int64_t e = (pos + q) * c + ch;
        for (int64_t v = 0; v < V; ++v) {
          const int64_t ev = e + v * kLanes;
          if constexpr (Tail) {
            add_terms<Backward>(load_first(dd, x + ev, tail),
                                Backward ? grad.load_first(dd, ev, tail) : sh[v], sh[v], a1[v],
                                a2[v]);
          } else {
            add_terms<Backward>(load_d(dd, x + ev), Backward ? grad.load(dd, ev) : sh[v], sh[v],
                                a1[v], a2[v]);
          }
        }
      }
    }
    for (int64_t v = 0; v < V; ++v) {
      hn::Store(a1[v], dd, acc1 + j * cs + v * kLanes);
      hn::Store(a2[v], dd, acc2 + j * cs + v * kLanes);
    }
  }
}

// Whole rows of at most this many channels are read in memory order (nhwc_row_order_sums): their
// 8 slots × 2 sums, 16 KiB of double, stay in L1 beside the data (a third of a 48 KiB L1).
// Rows of 256 channels (32 KiB of sums) read that way lost to the walks (Zen 5, registry
// entries, 3 alternating runs: 16×256×56×56 statistics 1.15–1.33 → 2.50–2.76 ms, 65536×256
// 1.36–1.70 → 3.50–3.70).
constexpr int64_t kRowOrderChannels = 128;
// The sums of the runs of a block (`rows` runs of `len` positions, the first at position
// `start`, `stride` positions apart, each run's slots counting up from 0) for channels
// [c0, c0 + cw), reading each position's cw channels in memory order and adding them to the
// accumulators of its slot in `acc1`/`acc2` (8 rows of cs doubles each), which stay in L1. Each
// slot still adds its terms in ascending position order (Note [Canonical reduction order]);
// the first slot cycle starts the sums at +0.0 instead of loading them.
// Why: the walks read a unit column by column, 8 positions apart, which the hardware
// prefetchers follow poorly from memory, and their software prefetch of the next unit does not
// make up for it; rows read in order are one sequential stream, at the price of each vector's
// two sums going through L1 (two loads and two stores) instead of registers. Zen 5, 2 threads,
// registry entries, medians of 15–30 calls, 3–4 runs alternating with the walks:
// 32×64×112×112 statistics 2.37–3.04 → 1.96–2.23 ms, backward sums 3.68–4.06 → 3.32–3.80;
// 16×64×56×56 0.26–0.28 → 0.22–0.24 and 0.42–0.44 → 0.28–0.29; 32×128×28×28 0.25–0.27 →
// 0.22–0.24 and 0.49–0.50 → 0.28–0.32; 131072×64 0.70–0.77 → 0.61–0.71 and 1.26–1.37 →
// 1.01–1.09. Slower, in a model loop of the same arithmetic: prefetching 64 rows ahead
// (32×64×112×112 backward sums 2.7 → 3.1–3.8 ms); and in the kernel, adding K = 2 or 4 slot
// cycles per load of the sums (statistics 2.0–2.1 → 3.5–4.4 ms: rows 8 apart again).
template <bool Backward, bool Masked, typename T>
HWY_NOINLINE void nhwc_row_order_sums(const T* HWY_RESTRICT x, const Grad<Masked, T> grad,
                                      int64_t start, int64_t stride, int64_t c, int64_t c0,
                                      int64_t cw, int64_t rows, int64_t len,
                                      double* HWY_RESTRICT acc1, double* HWY_RESTRICT acc2,
                                      int64_t cs, const double* HWY_RESTRICT shift) {
  const DD dd;
  const int64_t cv = cw / kLanes * kLanes;
  if (rows * len < kSlots) {  // slots no position reaches keep +0.0 for the tree
    std::fill(acc1, acc1 + kSlots * cs, 0.0);
    std::fill(acc2, acc2 + kSlots * cs, 0.0);
  }
  auto position = [&](int64_t e, int64_t j, auto fresh) {
    constexpr bool kFresh = decltype(fresh)::value;
    double* HWY_RESTRICT a1 = acc1 + j * cs;
    double* HWY_RESTRICT a2 = acc2 + j * cs;
    int64_t i = 0;
    for (; i < cv; i += kLanes) {
      VD s1 = kFresh ? hn::Zero(dd) : hn::Load(dd, a1 + i);
      VD s2 = kFresh ? hn::Zero(dd) : hn::Load(dd, a2 + i);
      const VD sh = hn::Load(dd, shift + i);
      add_terms<Backward>(load_d(dd, x + e + i), Backward ? grad.load(dd, e + i) : sh, sh, s1, s2);
      hn::Store(s1, dd, a1 + i);
      hn::Store(s2, dd, a2 + i);
    }
    if (i < cw) {  // the tail vector: other lanes add 0 − 0 to sums nobody reads
      const int64_t n = cw - i;
      VD s1 = kFresh ? hn::Zero(dd) : hn::Load(dd, a1 + i);
      VD s2 = kFresh ? hn::Zero(dd) : hn::Load(dd, a2 + i);
      const VD sh = load_first(dd, shift + i, n);
      add_terms<Backward>(load_first(dd, x + e + i, n),
                          Backward ? grad.load_first(dd, e + i, n) : sh, sh, s1, s2);
      hn::Store(s1, dd, a1 + i);
      hn::Store(s2, dd, a2 + i);
    }
  };
  for (int64_t rr = 0; rr < rows; ++rr) {
    const int64_t e0 = (start + rr * stride) * c + c0;
    int64_t q = 0;
    if (rr == 0) {
      for (; q < std::min(len, kSlots); ++q) position(e0 + q * c, q, std::true_type{});
    }
    for (; q < len; ++q) position(e0 + q * c, q & (kSlots - 1), std::false_type{});
  }
}

// Each channel's slot tree from a range's accumulators (8 rows of cs doubles per sum, see
// nhwc_block_sums), kLanes channels at a time: sum_slots's additions lane by lane (sum_slots
// itself cannot take the vectors: reduction_order.h is compiled without the SIMD target's
// attributes, so Highway's operators would not inline there).
HWY_INLINE void store_slot_trees(const double* HWY_RESTRICT acc, const double* HWY_RESTRICT acc2,
                                 int64_t cs, int64_t cw, BlockSums* HWY_RESTRICT out) {
  const DD dd;
  auto tree = [&](const double* HWY_RESTRICT a, int64_t i) {
    VD t[kSlots];
    for (int64_t j = 0; j < kSlots; ++j) t[j] = hn::Load(dd, a + j * cs + i);
    return hn::Add(hn::Add(hn::Add(t[0], t[1]), hn::Add(t[2], t[3])),
                   hn::Add(hn::Add(t[4], t[5]), hn::Add(t[6], t[7])));
  };
  static_assert(kSlots == 8, "the tree above assumes 8 slots");
  HWY_ALIGN double s1[kLanes], s2[kLanes];
  for (int64_t i = 0; i < cw; i += kLanes) {  // the last vector may be the tail's
    hn::Store(tree(acc, i), dd, s1);
    hn::Store(tree(acc2, i), dd, s2);
    for (int64_t l = 0; l < std::min(kLanes, cw - i); ++l) {
      out[i + l].sum[0] = s1[l];
      out[i + l].sum[1] = s2[l];
    }
  }
}

// The sums of block r of an NHWC tensor of C < 8 channels (whole rows). Eight consecutive
// positions of a run (slots 0–7) are 8·C consecutive elements, element k of them belonging to
// slot k / C of channel k mod C: so the 8·C accumulators of the block, laid out in that order,
// are C·8 / kLanes vectors that add whole vectors of memory, every lane one (channel, slot) in
// the canonical order. A run's last len mod 8 positions fill the first lanes (masked). Walking
// such rows with one channel vector per position used C of its 8 lanes (and before that, the
// scalar definition: 1M×3 statistics 2.4 ms, 6 cycles per element).
template <int64_t C, bool Backward, bool Masked, typename T>
HWY_NOINLINE void nhwc_narrow_block_sums(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                         const Grad<Masked, T> grad,
                                         const double* HWY_RESTRICT mean, const BlockRange r,
                                         BlockSums* HWY_RESTRICT out) {
  static_assert(C < kSlots, "rows of fewer than 8 channels");
  constexpr int64_t kVecs = C * kSlots / kLanes, kChunk = C * kSlots;
  const DD dd;
  const int64_t hw = p.hw;
  const int64_t first = r.n0 * hw + r.s0;  // position of element (n0, s0)
  HWY_ALIGN double lanes[kChunk];
  for (int64_t ch = 0; ch < C; ++ch) {
    const double shift = Backward ? mean[ch] : block_shift(static_cast<double>(x[first * C + ch]));
    out[ch].shift = shift;
    for (int64_t j = 0; j < kSlots; ++j) lanes[j * C + ch] = shift;
  }
  VD sh[kVecs], a1[kVecs], a2[kVecs];
  for (int64_t v = 0; v < kVecs; ++v) {
    sh[v] = hn::Load(dd, lanes + v * kLanes);
    a1[v] = a2[v] = hn::Zero(dd);
  }
  // Runs as in nhwc_block_sums: each row segment, or the whole block when HW < 8.
  const bool linear = hw < kSlots;
  const int64_t rows = linear ? 1 : r.n1 - r.n0, len = linear ? (r.n1 - r.n0) * hw : r.s1 - r.s0;
  for (int64_t rr = 0; rr < rows; ++rr) {
    int64_t e = (first + rr * hw) * C;
    const int64_t end = e + len / kSlots * kChunk;
    for (; e < end; e += kChunk) {
      for (int64_t v = 0; v < kVecs; ++v) {
        const int64_t ev = e + v * kLanes;
        add_terms<Backward>(load_d(dd, x + ev), Backward ? grad.load(dd, ev) : sh[v], sh[v], a1[v],
                            a2[v]);
      }
    }
    const int64_t rest = len % kSlots * C;  // elements of the run's last positions
    for (int64_t v = 0; v < kVecs; ++v) {
      const int64_t n = std::min(kLanes, rest - v * kLanes), ev = e + v * kLanes;
      if (n <= 0) break;
      add_terms_masked<Backward>(
          hn::FirstN(dd, static_cast<std::size_t>(n)), load_first(dd, x + ev, n),
          Backward ? grad.load_first(dd, ev, n) : sh[v], sh[v], a1[v], a2[v]);
    }
  }
  HWY_ALIGN double s1[kChunk], s2[kChunk];
  for (int64_t v = 0; v < kVecs; ++v) {
    hn::Store(a1[v], dd, s1 + v * kLanes);
    hn::Store(a2[v], dd, s2 + v * kLanes);
  }
  for (int64_t ch = 0; ch < C; ++ch) {
    double t1[kSlots], t2[kSlots];
    for (int64_t j = 0; j < kSlots; ++j) {
      t1[j] = s1[j * C + ch];
      t2[j] = s2[j * C + ch];
    }
    out[ch].sum[0] = sum_slots(t1);
    out[ch].sum[1] = sum_slots(t2);
  }
}

// nhwc_narrow_block_sums<C> for the run-time C = c (1 ≤ c < 8).
template <int64_t C, bool Backward, bool Masked, typename T>
HWY_INLINE void nhwc_narrow_dispatch(int64_t c, const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                     const Grad<Masked, T> grad, const double* HWY_RESTRICT mean,
                                     const BlockRange r, BlockSums* HWY_RESTRICT out) {
  if constexpr (C + 1 < kSlots) {
    if (c != C) return nhwc_narrow_dispatch<C + 1, Backward>(c, p, x, grad, mean, r, out);
  }
  nhwc_narrow_block_sums<C, Backward>(p, x, grad, mean, r, out);
}

// The sums of block r for channels [c0, c0 + cw) of an NHWC tensor. The block's positions come
// as runs whose slots count up from 0 (see slot_of): each row segment (HW ≥ 8), or the whole
// block (HW < 8, where consecutive rows are consecutive positions). `acc` holds 2 × 8 × cw
// doubles with rows padded to padded_channels(cw), `shift` cw.
struct NoFill {};

template <bool Backward, bool Masked, typename T, class Fill = NoFill>
HWY_NOINLINE void nhwc_block_sums(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                  const Grad<Masked, T> grad, const double* HWY_RESTRICT mean,
                                  int64_t c0, int64_t cw, const BlockRange r,
                                  double* HWY_RESTRICT acc, double* HWY_RESTRICT shift,
                                  BlockSums* HWY_RESTRICT out, Fill fill = {}) {
  constexpr bool kFill = !std::is_same_v<Fill, NoFill>;
  const int64_t c = p.c, hw = p.hw;
  if constexpr (!kFill) {
    if (cw == c && c > 0 && c < kSlots) {  // whole rows of fewer than 8 channels
      return nhwc_narrow_dispatch<1, Backward>(c, p, x, grad, mean, r, out);
    }
  }
  const int64_t first = r.n0 * hw + r.s0;  // position of element (n0, s0)
  for (int64_t i = 0; i < cw; ++i) {
    double first_x = 0;
    if constexpr (kFill) {
      first_x = fill.first(i);
    } else {
      first_x = static_cast<double>(x[first * c + c0 + i]);
    }
    shift[i] = Backward ? mean[c0 + i] : block_shift(first_x);
    out[i].shift = shift[i];
  }
  // Runs: `rows` of `len` positions, the first at position `start`, `stride` positions apart.
  const bool linear = hw < kSlots;
  const int64_t rows = linear ? 1 : r.n1 - r.n0, len = linear ? (r.n1 - r.n0) * hw : r.s1 - r.s0;
  const int64_t start = first, stride = hw;
  const int64_t cv = cw / kLanes * kLanes;
  const int64_t cs = padded_channels(cw);  // accumulator row stride, whole aligned vectors
  double* HWY_RESTRICT acc2 = acc + kSlots * cs;
  // Whole rows of at most kRowOrderChannels in memory order, the backward sums always, the
  // statistics beyond 4 MiB: in cache the walks' sums in registers add faster (registry entry,
  // 1024×64 statistics 5.5 → 6.9 µs read row by row) than sums that go through L1 for each row.
  // On AMD only: measured on Zen 5; on the Intel host the same reading lost to the walks of
  // 7019291 (32×64×112×112 statistics 7.1 against 4.1 ms) and was not measured there since.
  const bool row_order = !kFill && cw == c && c <= kRowOrderChannels &&
                         (Backward || !nhwc_small(p, sizeof(T))) && amd_cpu();
  if (row_order) {
    nhwc_row_order_sums<Backward>(x, grad, start, stride, c, c0, cw, rows, len, acc, acc2, cs,
                                  shift);
    return store_slot_trees(acc, acc2, cs, cw, out);
  }
  // Walk units: whole short rows (at most kWalk positions), at least `walk` positions together
  // (32×2048×7×7 statistics: 0.84 → 0.73 ms against one 49-position row per unit), or pieces of
  // a long row: `walk` positions each, the last one shorter — unless it would hold less than a
  // slot cycle or a quarter of a walk. Such a remainder is spread over the other pieces instead
  // (whole slot cycles shared out evenly, a piece then at most two cycles longer than a walk): a
  // unit costs its range's accumulators, loaded and stored once per slot (2·8·cw doubles) however
  // few positions it holds, and 14×14 rows (196 positions) cut at 64 left a 4-position unit per
  // row at the full price — 4 of its 8 slots walked nothing. Zen 5, registry entries, blocks of 8
  // calls alternating in one process, 3 runs: 32×1024×14×14 statistics 0.60–0.74 → 0.45–0.50
  // ms (pieces 64, 64, 68 against 64, 64, 64, 4), backward sums 1.38–1.58 → 1.10–1.16 (walk 32:
  // 5 × 32 + 36 against 6 × 32 + 4); 8×2048×14×14 statistics 0.33–0.46 → 0.26–0.35, sums
  // 0.57–0.96 → 0.47–0.69 (4 runs, one a tie). Spreading also the 16-position remainder of 28×28
  // rows (784 = 12 × 64 + 16) lost in 7 of 8 runs (32×512×28×28 sums 3.0–3.2 → 3.15–3.42 ms, in
  // 13 even pieces or 11 of 72), so longer remainders keep their own unit.
  const int64_t walk = walk_positions(c * static_cast<int64_t>(sizeof(T)), Backward ? 2 : 1);
  const bool short_rows = len <= kWalk;
  const int64_t rows_per_unit = short_rows ? (walk + len - 1) / len : 1;
  const int64_t remainder = len % walk;
  const bool spread = !short_rows && remainder > 0 && remainder < std::max(kSlots, walk / 4);
  const int64_t pieces = short_rows ? 1 : spread ? len / walk : (len + walk - 1) / walk;
  const int64_t cycles = (len + kSlots - 1) / kSlots;  // slot cycles of a row, the last partial
  const int64_t units = short_rows ? (rows + rows_per_unit - 1) / rows_per_unit : rows * pieces;
  struct Unit {
    int64_t row, row_end, q0, q1;
  };
  auto unit = [&](int64_t u) -> Unit {
    if (short_rows) return {u * rows_per_unit, std::min(rows, (u + 1) * rows_per_unit), 0, len};
    const int64_t i = u % pieces;
    if (!spread) return {u / pieces, u / pieces + 1, i * walk, std::min(len, (i + 1) * walk)};
    return {u / pieces, u / pieces + 1, i * cycles / pieces * kSlots,
            std::min(len, (i + 1) * cycles / pieces * kSlots)};
  };
  // A walk reads one cache line per position, C·sizeof(T) bytes apart, a pattern the hardware
  // prefetchers follow poorly from DRAM (a 16 KiB region read column by column: 11 GB/s on two
  // threads, 31 GB/s sequentially); so the next unit's lines are prefetched during the walks,
  // one per line a walk reads, in memory order (column by column: 11 GB/s; all at the start of the
  // unit: 8 GB/s; in memory order, spread over the walks: 22 GB/s, the walk's in-cache speed).
  // With whole rows per item (below), against 64-channel items without prefetch, medians of 6
  // alternating runs: 32×512×28×28 statistics 3.0 → 2.7 ms, backward sums 7.0 → 5.1 ms;
  // 65536×256 statistics 4.2 → 3.1 ms, backward sums 9.3 → 6.4 ms.
  // The ReLU mask (Masked) is prefetched the same way, one line per position.
  UnitPrefetcher<T> px, pg;
  UnitPrefetcher<uint8_t> pm;
  const int64_t lines = (cw * static_cast<int64_t>(sizeof(T)) + 63) / 64;
  auto plan_prefetch = [&](const Unit& w) {
    px.k = pg.k = pm.k = px.line = pg.line = pm.line = 0;
    px.lines = pg.lines = lines;
    pm.lines = 1;
    int64_t n = 0;
    for (int64_t rr = w.row; rr < w.row_end; ++rr) {
      for (int64_t q = w.q0; q < w.q1 && n < 2 * kWalk; ++q, ++n) {
        const int64_t o = (start + rr * stride + q) * c + c0;
        px.rows[n] = x + o;
        if (Backward) pg.rows[n] = grad.dy + o;
        if (Masked) pm.rows[n] = grad.mask + o / 8;
      }
    }
    px.count = pg.count = n;
    pm.count = Masked ? n : 0;
  };
  // The walks' order, and their L1 prefetch. A walk (one slot of one group) reads its positions
  // 8 apart, and the walks of a unit read every line of it once. In group-major order (a group's
  // 8 slots, then the next group) consecutive walks read the same columns; in slot-major order
  // (each slot over every group) they move to the next columns, so a walk can prefetch the next
  // walk's lines into L1, position for position, into other L1 sets than the lines it reads
  // (prefetching the next slot of the same group, tried before, evicted the lines being read).
  // Same bits either way: the (slot, group) accumulators are independent. Zen 5, 2 threads,
  // registry entries, separate builds alternating in separate processes (2–3 runs, minimum and
  // median of 15 blocks of calls), slot-major with prefetch against group-major without:
  // backward sums 32×512×28×28 2.84–2.88 → 2.25–2.32 ms, 65536×256 3.56–3.65 → 2.99,
  // 16×256×56×56 2.71–2.76 → 2.30–2.32, 32×64×112×112 4.94–5.13 → 3.75–4.02; statistics 65536×256
  // 1.60–1.76 → 1.29–1.31 ms, 32×64×112×112 2.54–2.77 → 2.11–2.14. Rows of a multiple of 4 KiB
  // (the span of an x86 L1 way, so that every position of a column maps to one L1 set) lose:
  // statistics 4096×1024 0.265 → 0.300 ms, 32×1024×14×14 0.42–0.43 → 0.49, 32×2048×7×7 0.234 →
  // 0.254–0.262, backward sums 4096×1024 0.60–0.61 → 0.63–0.64. And in cache the slot-major walks
  // lose without the prefetch (one thread, 256×256 statistics 6.3–6.6 → 8.1–8.3 µs) and the
  // prefetch does not pay; so tensors up to 4 MiB (nhwc_small), the copies of kFill (in L1/L2)
  // and rows of a multiple of 4 KiB walk group-major, without it.
  const bool slot_major =
      !kFill && !nhwc_small(p, sizeof(T)) && c * static_cast<int64_t>(sizeof(T)) % 4096 != 0;
  for (int64_t u = 0; u < units; ++u) {
    const Unit w = unit(u);
    // The first unit's walks start every slot's sums at +0.0 in registers and store them all, so
    // the accumulators (2·8·cw doubles, 16 KiB for 128 channels) need no zero fill per work item:
    // a fixed cost that small batches feel (registry entry, 20000 calls, one thread: 16×1024
    // statistics 4.4 → 3.3–3.4 µs; two threads, 3 alternating runs: 64×1024 backward sums
    // 15.6–16.3 → 13.9–14.9 µs; 256 rows and larger tensors within noise). Same bits: +0.0 + t = t.
    const bool fresh = u == 0;
    const T* xu = x;
    Grad<Masked, T> gu = grad;
    int64_t su = start;
    if constexpr (kFill) {  // the unit's positions, from position b on, at fill.x / fill.dy
      const int64_t b = fill(w.q0, w.q1);
      xu = fill.x;
      gu.dy = fill.dy;
      su = -b;
      px.k = pg.k = pm.k = px.count = pg.count = pm.count = 0;
    } else if (u + 1 < units) {
      plan_prefetch(unit(u + 1));
    } else {
      px.k = pg.k = pm.k = px.count = pg.count = pm.count = 0;
    }
    // Four channel vectors (two cache lines of float) per walk, then two, then one (32×2048×7×7
    // backward sums, medians of 4 alternating runs: 1.65 ms with one vector walking 8 slots in
    // registers, 1.17 with two vectors slot by slot, 0.92 with four; eight: the same as four).
    auto walk_one = [&](int64_t i, auto vectors, int64_t j, const NextWalk& next) {
      constexpr int64_t V = decltype(vectors)::value;
      if constexpr (V == 0) {  // the tail vector
        nhwc_slot_walk<1, Backward, Masked, T, /*Tail=*/true>(
            xu, gu, su, stride, c, c0 + i, w.row, w.row_end, w.q0, w.q1, j, acc + i, acc2 + i, cs,
            shift + i, fresh, px, pg, pm, next, cw - i);
      } else {
        nhwc_slot_walk<V, Backward>(xu, gu, su, stride, c, c0 + i, w.row, w.row_end, w.q0, w.q1, j,
                                    acc + i, acc2 + i, cs, shift + i, fresh, px, pg, pm, next);
      }
    };
    if (!slot_major) {  // group-major: each group's 8 slots
      int64_t i = 0;
      auto walks = [&](auto vectors) {
        constexpr int64_t V = decltype(vectors)::value;
        for (; i + V * kLanes <= cv; i += V * kLanes) {
          for (int64_t j = 0; j < kSlots; ++j) walk_one(i, vectors, j, NextWalk{});
        }
      };
      walks(std::integral_constant<int64_t, 4>{});
      walks(std::integral_constant<int64_t, 2>{});
      walks(std::integral_constant<int64_t, 1>{});
      if (cv < cw) {
        for (int64_t j = 0; j < kSlots; ++j) {
          walk_one(cv, std::integral_constant<int64_t, 0>{}, j, NextWalk{});
        }
      }
    } else {
      // The range's groups: from channel c0 + i, 4, 2 or 1 whole vectors (the largest that
      // fits: 4s while they fit, then at most one 2 and one 1), then the tail vector (0), or
      // none (-1); as the group-major walks above.
      auto group_at = [&](int64_t i) -> int64_t {
        for (int64_t v : {4, 2, 1}) {
          if (i + v * kLanes <= cv) return v;
        }
        return i < cw ? 0 : -1;
      };
      auto group_end = [&](int64_t i, int64_t v) { return v > 0 ? i + v * kLanes : cw; };
      auto group_lines = [&](int64_t i, int64_t v) {
        return ((group_end(i, v) - i) * static_cast<int64_t>(sizeof(T)) + 63) / 64;
      };
      for (int64_t j = 0; j < kSlots; ++j) {
        for (int64_t i = 0, v = group_at(0); v >= 0;) {
          int64_t ni = group_end(i, v), nv = group_at(ni);
          NextWalk next{c0 + ni, 0, 0};
          if (nv < 0 && j + 1 < kSlots) {  // the next slot's first group
            ni = 0;
            nv = group_at(0);
            next = {c0, 1, 0};
          }
          if (nv >= 0) next.lines = group_lines(ni, nv);
          switch (v) {
            case 4:
              walk_one(i, std::integral_constant<int64_t, 4>{}, j, next);
              break;
            case 2:
              walk_one(i, std::integral_constant<int64_t, 2>{}, j, next);
              break;
            case 1:
              walk_one(i, std::integral_constant<int64_t, 1>{}, j, next);
              break;
            default:
              walk_one(i, std::integral_constant<int64_t, 0>{}, j, next);
              break;
          }
          if (ni == 0) break;  // the slot's last group
          i = ni;
          v = nv;
        }
      }
    }
    while (px.k != px.count) px.step();  // more lines than walk steps (narrow ranges)
    while (Backward && pg.k != pg.count) pg.step();
    while (Masked && pm.k != pm.count) pm.step();
  }
  store_slot_trees(acc, acc2, cs, cw, out);
}

// The BlockSums of block r for the cn ≤ kGroup channels c0 … c0 + cn − 1 of an NCHW tensor,
// shifts included: mean[c] (backward) or the block's first element (statistics).
template <bool Backward, bool Masked, typename T>
HWY_INLINE void nchw_item_sums(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                               const double* mean, int64_t c0, int64_t cn, const BlockRange r,
                               BlockSums* out) {
  for (int64_t j = 0; j < cn; ++j) {
    out[j].shift = Backward
                       ? mean[c0 + j]
                       : block_shift(static_cast<double>(x[(r.n0 * p.c + c0 + j) * p.hw + r.s0]));
  }
  // Rows of HW < 8 never come here (block_sums_t reads them as (block, channel range) items).
  if (cn == kGroup) {
    nchw_block_sums<kGroup, Backward>(p, x, grad, c0, r, out);
  } else {
    for (int64_t j = 0; j < cn; ++j) nchw_block_sums<1, Backward>(p, x, grad, c0 + j, r, out + j);
  }
}

// Channels per parallel chunk of the reductions' finish step.
constexpr int64_t kFinishGrain = 256;

// Scratch of n elements for a finish step: on the stack for the usual few blocks (a finish may
// run once per work item of 4 channels), else on the heap.
template <typename E>
class FinishScratch {
 public:
  explicit FinishScratch(int64_t n) {
    if (n > kInline) heap_.resize(static_cast<std::size_t>(n));
  }
  E* data() { return heap_.empty() ? inline_ : heap_.data(); }

 private:
  static constexpr int64_t kInline = 16;
  E inline_[kInline];
  std::vector<E> heap_;
};

// finish_stats of channels [c0, c1) with one block each (N·HW ≤ kBlockElems), kLanes channels
// at a time: the merge of one block is the block itself, so mean = K + Σd/L and var = m2/L with
// block_moments' m2, in the same operations (correctly rounded Div, no fused multiply-add): the
// same bits. Scalar, the finish (with the copies of the sums around it) took ~13% of the
// samples of a 256×1024 statistics call (perf, cpu-clock).
HWY_INLINE void finish_stats_one_block(const BlockSums* HWY_RESTRICT sums, int64_t c0, int64_t c1,
                                       double count, double* HWY_RESTRICT mean,
                                       double* HWY_RESTRICT var) {
  const DD dd;
  const VD vc = hn::Set(dd, count), zero = hn::Zero(dd);
  const VD qnan = hn::Set(dd, std::numeric_limits<double>::quiet_NaN());
  HWY_ALIGN double k[kLanes], s1[kLanes], s2[kLanes];
  int64_t c = c0;
  for (; c + kLanes <= c1; c += kLanes) {
    for (int64_t l = 0; l < kLanes; ++l) {
      const BlockSums& b = sums[c - c0 + l];
      k[l] = b.shift;
      s1[l] = b.sum[0];
      s2[l] = b.sum[1];
    }
    const VD v1 = hn::Load(dd, s1), v2 = hn::Load(dd, s2), q = hn::Div(v1, vc);
    VD m2 = hn::Sub(v2, hn::Mul(v1, q));
    m2 = hn::IfThenElse(hn::And(hn::IsInf(v2), hn::IsFinite(v1)), v2, m2);
    m2 = hn::IfThenElse(hn::Lt(m2, zero), zero, m2);  // NaN stays NaN
    // canonical_nan, lane by lane.
    const VD mv = hn::Add(hn::Load(dd, k), q), vv = hn::Div(m2, vc);
    hn::StoreU(hn::IfThenElse(hn::IsNaN(mv), qnan, mv), dd, mean + c);
    hn::StoreU(hn::IfThenElse(hn::IsNaN(vv), qnan, vv), dd, var + c);
  }
  for (; c < c1; ++c) {
    const BlockSums& b = sums[c - c0];
    const BlockMoments m = block_moments(count, b.shift, b.sum[0], b.sum[1]);
    mean[c] = canonical_nan(m.mean());
    var[c] = canonical_nan(m.m2 / m.count);
  }
}

// The finish steps of the reductions, for channels [c0, c1) from their block sums
// partial[(c − c0)·nb + b]: the statistics (mean and biased variance) or the two backward sums.
// Each call has its own scratch, so ranges may finish in parallel.
inline auto stats_finisher(const BatchNormProblem& p, double* mean, double* var) {
  return [plan = make_block_plan(p.n, p.hw), hw = p.hw, mean, var](int64_t c0, int64_t c1,
                                                                   const BlockSums* partial) {
    const int64_t nb = plan.num_blocks;
    if (nb == 1) {  // the block is the whole channel
      finish_stats_one_block(partial, c0, c1, static_cast<double>(plan.n_total * hw), mean, var);
      return;
    }
    FinishScratch<BlockMoments> scratch(nb);
    for (int64_t c = c0; c < c1; ++c) {
      finish_stats(plan, hw, partial + (c - c0) * nb, nb, scratch.data(), mean + c, var + c);
    }
  };
}
inline auto sums_finisher(const BatchNormProblem& p, double* sum_dy, double* sum_dy_xmu) {
  return [nb = make_block_plan(p.n, p.hw).num_blocks, sum_dy, sum_dy_xmu](
             int64_t c0, int64_t c1, const BlockSums* partial) {
    if (nb == 1) {  // the block's sums are the channel's (sum_blocks of one value is that value)
      for (int64_t c = c0; c < c1; ++c) {
        sum_dy[c] = canonical_nan(partial[c - c0].sum[0]);
        sum_dy_xmu[c] = canonical_nan(partial[c - c0].sum[1]);
      }
      return;
    }
    FinishScratch<double> scratch(nb);
    for (int64_t c = c0; c < c1; ++c) {
      finish_sums(partial + (c - c0) * nb, nb, scratch.data(), sum_dy + c, sum_dy_xmu + c);
    }
  };
}

// A thread's buffers for nhwc_block_sums (accumulators, shifts, one range's sums), kept between
// calls and grown to the widest range seen: allocated for every work item, they cost ~6% of a
// 128×512 statistics call. One per thread, used by one work item at a time.
struct NhwcScratch {
  int64_t width = 0;
  hwy::AlignedFreeUniquePtr<double[]> acc, shift;
  std::vector<BlockSums> out;
  // Transposed NCHW blocks (nchw_short_transposed_sums), grown on demand.
  hwy::AlignedFreeUniquePtr<uint8_t[]> block;
  std::size_t block_bytes = 0;

  template <typename T>
  T* block_of(int64_t elems) {
    const std::size_t bytes = static_cast<std::size_t>(elems) * sizeof(T);
    if (block_bytes < bytes) {
      block = hwy::AllocateAligned<uint8_t>(bytes);
      block_bytes = bytes;
    }
    return reinterpret_cast<T*>(block.get());
  }

  static NhwcScratch& of_thread(int64_t width) {
    thread_local NhwcScratch scratch;
    if (scratch.width < width) {
      scratch.acc = hwy::AllocateAligned<double>(
          static_cast<std::size_t>(2 * kSlots * padded_channels(width)));
      scratch.shift = hwy::AllocateAligned<double>(static_cast<std::size_t>(width));
      scratch.out.resize(static_cast<std::size_t>(width));
      scratch.width = width;
    }
    return scratch;
  }
};

// Whether an NCHW reduction with rows of hw < 8 elements rotates each row into the slot lanes
// (nchw_short_range_sums, AVX-512 only) rather than adding a channels-last copy of the block
// (nchw_short_transposed_sums). Measured on AVX-512 (driver, medians of 20 calls, 2–3
// alternating runs), copy a unit at a time against rotation: statistics 8192×256×3 1.02–1.10
// vs 1.91–2.09 ms, 8192×256×4 1.65–1.76 vs 1.98–2.01, 4096×512×2 0.71–0.79 vs 1.88–2.14;
// backward sums 8192×256×3 2.51–2.79 vs 3.01–3.21, 4096×512×2 1.29–1.46 vs 2.44–2.70; but sums
// 8192×256×4 3.30–3.72 vs 3.03–3.47, and rows of 5–7 (the 8×8 transposes) statistics
// 1.22–1.74 vs 1.02–1.13 (1.61 once), sums 2.75–3.44 vs 1.86–2.03. (The whole block copied
// before its walks, the first version: 8192×256×4 sums 3.6–4.4; rows of 7 copied element by
// element 2.6–3.3 / 5.6–6.1.) Other targets have no rotation (8 slots span 2 or 4 vectors) and
// copy: AVX2, against the scalar definition they used before, 8192×256×4 statistics 9.1 →
// 1.8–2.0 ms, sums 14.3 → 3.4–3.8; 4096×512×2 8.0 → 0.8–0.9 and 13.0 → 1.6–1.7; 4096×256×7
// 8.4 → 1.6, 10.1 → 3.6–3.7.
template <bool Backward>
constexpr bool nchw_rotated_rows(int64_t hw) {
  return kLanes == kSlots && (hw >= 5 || (hw == 4 && Backward));
}

// transpose_short_rows for float rows of 5–7 elements, 8 rows at a time from row i on (advanced
// past them): the 8 rows loaded as 8 vectors of 8 floats (the last one masked, so that nothing
// past row cw − 1 is read) and transposed in registers, 24 shuffles, where Highway has no
// de-interleaving load. Needs vectors of 8 floats (AVX2, AVX-512); elsewhere it does nothing.
// (Element by element these rows copied at ~1.5 cycles per element: 4096×256×7 statistics
// 2.4–2.6 ms on AVX2, against 1.0 for the row rotation on AVX-512.)
HWY_INLINE void transpose_rows_8x8(const float* HWY_RESTRICT src, int64_t hw, int64_t cw,
                                   float* HWY_RESTRICT dst, int64_t& i) {
#if HWY_TARGET == HWY_SCALAR  // no InterleaveLower; one lane anyway
  (void)src, (void)hw, (void)cw, (void)dst, (void)i;
#else
  const hn::CappedTag<float, 8> d;
  if constexpr (hn::MaxLanes(d) == 8) {
    using V = hn::Vec<decltype(d)>;
    const hn::Repartition<double, decltype(d)> d64;
    auto lo64 = [&](V a, V b) {
      return hn::BitCast(d, hn::InterleaveLower(d64, hn::BitCast(d64, a), hn::BitCast(d64, b)));
    };
    auto hi64 = [&](V a, V b) {
      return hn::BitCast(d, hn::InterleaveUpper(d64, hn::BitCast(d64, a), hn::BitCast(d64, b)));
    };
    for (; i + 8 <= cw; i += 8) {
      V r[8];
      for (int64_t j = 0; j < 7; ++j) r[j] = hn::LoadU(d, src + (i + j) * hw);
      r[7] = i + 8 < cw
                 ? hn::LoadU(d, src + (i + 7) * hw)
                 : hn::MaskedLoad(hn::FirstN(d, static_cast<size_t>(hw)), d, src + (i + 7) * hw);
      // Rows a…h: t0 = a0 b0 a1 b1 | a4 b4 a5 b5, t1 = a2 b2 a3 b3 | a6 b6 a7 b7, …
      V t[8];
      for (int64_t j = 0; j < 4; ++j) {
        t[2 * j] = hn::InterleaveLower(d, r[2 * j], r[2 * j + 1]);
        t[2 * j + 1] = hn::InterleaveUpper(d, r[2 * j], r[2 * j + 1]);
      }
      // u0 = a0 b0 c0 d0 | a4 b4 c4 d4, u1 = element 1 | 5, u2 = 2 | 6, u3 = 3 | 7; u4–u7 e…h.
      const V u[8] = {lo64(t[0], t[2]), hi64(t[0], t[2]), lo64(t[1], t[3]), hi64(t[1], t[3]),
                      lo64(t[4], t[6]), hi64(t[4], t[6]), lo64(t[5], t[7]), hi64(t[5], t[7])};
      for (int64_t k = 0; k < hw; ++k) {
        const V col = k < 4 ? hn::ConcatLowerLower(d, u[k + 4], u[k])
                            : hn::ConcatUpperUpper(d, u[k], u[k - 4]);
        hn::StoreU(col, d, dst + k * cw + i);
      }
    }
  }
#endif
}

// Copies the HW elements of each of `cw` rows at src (consecutive rows of HW < 8 elements: the
// range's part of one sample of an NCHW tensor) to dst as HW rows of cw elements, element k of
// row i at dst[k·cw + i]: channels-last. Highway's de-interleaving loads where HW is 2, 3 or 4,
// element by element otherwise (and for the last cw mod lanes rows).
template <typename T>
HWY_INLINE void transpose_short_rows(const T* HWY_RESTRICT src, int64_t hw, int64_t cw,
                                     T* HWY_RESTRICT dst) {
  const hn::ScalableTag<T> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (hw == 2) {
    for (; i + lanes <= cw; i += lanes) {
      hn::Vec<decltype(d)> v0, v1;
      hn::LoadInterleaved2(d, src + i * 2, v0, v1);
      hn::StoreU(v0, d, dst + i);
      hn::StoreU(v1, d, dst + cw + i);
    }
  } else if (hw == 3) {
    for (; i + lanes <= cw; i += lanes) {
      hn::Vec<decltype(d)> v0, v1, v2;
      hn::LoadInterleaved3(d, src + i * 3, v0, v1, v2);
      hn::StoreU(v0, d, dst + i);
      hn::StoreU(v1, d, dst + cw + i);
      hn::StoreU(v2, d, dst + 2 * cw + i);
    }
  } else if (hw == 4) {
    for (; i + lanes <= cw; i += lanes) {
      hn::Vec<decltype(d)> v0, v1, v2, v3;
      hn::LoadInterleaved4(d, src + i * 4, v0, v1, v2, v3);
      hn::StoreU(v0, d, dst + i);
      hn::StoreU(v1, d, dst + cw + i);
      hn::StoreU(v2, d, dst + 2 * cw + i);
      hn::StoreU(v3, d, dst + 3 * cw + i);
    }
  }
  if constexpr (std::is_same_v<T, float>) {
    if (hw > 4) transpose_rows_8x8(src, hw, cw, dst, i);
  }
  for (; i < cw; ++i) {
    for (int64_t k = 0; k < hw; ++k) dst[k * cw + i] = src[i * hw + k];
  }
}

template <bool Backward, bool Masked, typename T>
HWY_INLINE void transpose_sample(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                 const Grad<Masked, T> grad, int64_t c0, int64_t cw, int64_t n,
                                 T* HWY_RESTRICT tx, T* HWY_RESTRICT tg, T* HWY_RESTRICT masked) {
  const int64_t hw = p.hw, part = cw * hw;
  const int64_t e = (n * p.c + c0) * hw;  // memory index of the part's first element
  constexpr int64_t kLineElems = 64 / static_cast<int64_t>(sizeof(T));
  if (n + 1 < p.n) {
    for (int64_t l = 0; l < part; l += kLineElems) {
      hwy::Prefetch(x + e + p.c * hw + l);
      if (Backward) hwy::Prefetch(grad.dy + e + p.c * hw + l);
    }
  }
  transpose_short_rows(x + e, hw, cw, tx);
  if constexpr (Masked) {
    // The masked gradient of the part in memory order (vectors of kLanes, whose mask bits are
    // one byte), then transposed.
    const DD dd;
    int64_t j = 0;
    for (; j + kLanes <= part; j += kLanes) store_d(dd, grad.load(dd, e + j), masked + j);
    for (; j < part; ++j) masked[j] = static_cast<T>(grad.at(e + j));
    transpose_short_rows(masked, hw, cw, tg);
  } else if constexpr (Backward) {
    transpose_short_rows(grad.dy + e, hw, cw, tg);
  }
}

// The sums of block r for channels [c0, c0 + cw) of an NCHW tensor with HW < 8, through a
// channels-last copy. In such a block element (n, s) of a channel takes slot (n − n0)·HW + s
// mod 8, its block-linear position mod 8, the slot an NHWC block gives the position of that
// index; so the block's rows, copied channels-last sample by sample (the range's cw·HW elements
// of a sample are contiguous: sequential reads), are an NHWC block of cw channels that
// nhwc_block_sums adds up in the canonical order, with its vectors across channels on every
// target. The copy is made a walk unit at a time into a small buffer (RingFill: the samples
// covering the unit's positions, up to kWalk + 2·HW positions, which stay in L1/L2), just before
// the unit's walks read it; copying the whole block first (up to 1024 positions × cw channels ×
// 2 tensors, 1 MiB) then walking it measured 0–28% slower (AVX-512 and AVX2, driver). Ranges of
// fewer than 8 channels copy the whole block for nhwc_block_sums's narrow-row path. The gradient is
// copied with the ReLU mask applied (+0.0 where a bit is clear, what Grad::load and Grad::at read).
template <bool Backward, bool Masked, typename T>
HWY_NOINLINE void nchw_short_transposed_sums(const BatchNormProblem& p, const T* HWY_RESTRICT x,
                                             const Grad<Masked, T> grad,
                                             const double* HWY_RESTRICT mean, int64_t c0,
                                             int64_t cw, const BlockRange r, NhwcScratch& scratch,
                                             BlockSums* HWY_RESTRICT out) {
  const int64_t hw = p.hw, rows = r.n1 - r.n0, positions = rows * hw, part = cw * hw;
  const BatchNormProblem block{rows, cw, hw, Layout::kNHWC, p.dtype};
  const BlockRange all{0, rows, 0, hw};
  const int64_t held = cw < kSlots ? positions : std::min(positions, kWalk + 2 * kSlots);
  T* HWY_RESTRICT tx = scratch.block_of<T>((Backward ? 2 : 1) * held * cw + part);
  T* HWY_RESTRICT tg = tx + held * cw;
  T* HWY_RESTRICT masked = tx + (Backward ? 2 : 1) * held * cw;  // one part (Masked)
  if (cw < kSlots) {
    for (int64_t n = r.n0; n < r.n1; ++n) {
      const int64_t o = (n - r.n0) * part;
      transpose_sample<Backward>(p, x, grad, c0, cw, n, tx + o, tg + o, masked);
    }
    nhwc_block_sums<Backward>(block, tx, Grad<false, T>{tg, nullptr}, mean + c0, 0, cw, all,
                              scratch.acc.get(), scratch.shift.get(), out);
    return;
  }
  struct RingFill {
    const BatchNormProblem* p;
    const T* src;
    Grad<Masked, T> src_grad;
    int64_t c0, cw, n0, positions;
    T* x;  // the buffer, read by the walks
    T* dy;
    T* masked;
    // Copies the samples holding positions [q0, q1) of the block; returns the first copied
    // position, held at x[0].
    HWY_INLINE int64_t operator()(int64_t q0, int64_t q1) const {
      const int64_t h = p->hw, m0 = q0 / h, m1 = (std::min(q1, positions) + h - 1) / h;
      for (int64_t m = m0; m < m1; ++m) {
        const int64_t o = (m - m0) * h * cw;
        transpose_sample<Backward>(*p, src, src_grad, c0, cw, n0 + m, x + o, dy + o, masked);
      }
      return m0 * h;
    }
    HWY_INLINE double first(int64_t i) const {
      return static_cast<double>(src[(n0 * p->c + c0 + i) * p->hw]);
    }
  };
  const RingFill fill{&p, x, grad, c0, cw, r.n0, positions, tx, tg, masked};
  nhwc_block_sums<Backward>(block, tx, Grad<false, T>{tg, nullptr}, mean + c0, 0, cw, all,
                            scratch.acc.get(), scratch.shift.get(), out, fill);
}

// The BlockSums of every (channel, block), in parallel over work items fixed by the shape:
// (group of kGroup channels, block) for NCHW, channel-major, so that consecutive items read
// consecutive rows of the same channels (block-major order measured the same or up to 15%
// slower); (block, range of channels) for NHWC. Then finish(c0, c1, partial) for ranges of
// channels (stats_finisher, sums_finisher), in parallel.
template <bool Backward, bool Masked, typename T, typename Finish>
void block_sums_t(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                  const double* mean, Finish finish) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  // With one block per channel each item finishes its channels from its own sums (below), so
  // the (channel, block) table is only needed for several blocks.
  std::vector<BlockSums> partial(static_cast<std::size_t>(nb > 1 ? p.c * nb : 0));
  // NCHW rows of HW < 8: (block, range of channels) items like NHWC, read sample by sample
  // (nchw_short_range_sums or nchw_short_transposed_sums, nchw_rotated_rows).
  const bool nchw_short = p.layout == Layout::kNCHW && p.hw < kSlots;
  // Work items per parallel chunk: at least kElementwiseGrain elements of x, as in the
  // elementwise passes, counting a block's actual positions (a plan's blocks hold up to
  // kBlockElems; a small batch's one block holds N·HW); small problems on one thread
  // (grain_for: an OpenMP region costs more than the work of a small reduction; registry
  // entries, 20000 calls, 1 vs 2 threads: statistics 8×256 0.8 vs 5.0 µs, 4×64×8×8 NCHW 2.5 vs
  // 6.0, 16×1024 3.5 vs 6.8; backward sums 32×1024 9.3 vs 11.4). Which thread adds an item
  // changes no value.
  const int64_t block_positions = (p.n * p.hw + nb - 1) / nb;
  auto grain_of = [&](int64_t item_channels) {
    return grain_for(p, block_positions * item_channels, Masked);
  };
  if (p.layout == Layout::kNCHW && !nchw_short) {
    const int64_t groups = (p.c + kGroup - 1) / kGroup;
    const int64_t grain = grain_of(kGroup);
    parallel_for(0, groups * nb, grain, [&](int64_t i0, int64_t i1) {
      BlockSums out[kGroup];
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c0 = item / nb * kGroup, b = item % nb;
        const int64_t cn = std::min(kGroup, p.c - c0);
        nchw_item_sums<Backward>(p, x, grad, mean, c0, cn, plan.range(b, p.hw), out);
        if (nb == 1) {
          finish(c0, c0 + cn, out);
          continue;
        }
        for (int64_t j = 0; j < cn; ++j) partial[(c0 + j) * nb + b] = out[j];
      }
    });
  } else {
    // Channel ranges: whole rows (contiguous memory) when there are enough blocks to share
    // between threads, else rows cut into ranges of a multiple of 64 channels (at most
    // kSmallRangeChannels for small tensors). The split changes no value: each
    // channel's sums are the same whichever range holds it. Items are range-major, so that a
    // thread's contiguous share of items covers whole ranges over all blocks: blocks differ in
    // size (the last is short), and block-major items gave one thread the long block
    // (32×2048×7×7: blocks of 980 and 588 positions; statistics 0.80 → 0.63 ms, backward sums
    // 1.77 → 1.45 ms range-major).
    // Ranges span at least a 4 KiB page of a row where that still leaves one range per thread:
    // 32×2048×7×7 (blocks of 980 and 588 positions, so 4 ranges of 512 channels before) with 2
    // ranges of 1024, medians of 40 calls, 3 alternating runs of the two builds: statistics
    // 0.424–0.425 → 0.377–0.386 ms, backward sums 0.676–0.683 → 0.618–0.619; 8×2048×14×14
    // 0.474–0.486 → 0.417–0.430 and 0.712–0.741 → 0.648–0.661 (its dx pass after the sums
    // 0.68–0.72 → 0.72–0.74). Fewer ranges than threads lose: 32×1024×14×14 in whole rows (7
    // blocks) had sums 1.55–1.69 → 1.70–1.84 ms, and the dx pass after them 1.27–1.32 → 1.49–1.58.
    const int64_t threads = get_num_threads();
    const int64_t want = 4 * threads;
    const int64_t splits = std::min((p.c + 63) / 64, std::max<int64_t>(1, (want + nb - 1) / nb));
    int64_t range = ((p.c + splits - 1) / splits + 63) / 64 * 64;
    const int64_t page = 4096 / static_cast<int64_t>(sizeof(T));
    if (range < page && p.c / page >= threads) {
      range = (p.c / (p.c / page) + 63) / 64 * 64;
    }
    if (nhwc_small(p, sizeof(T)) || nchw_short) range = std::min(range, kSmallRangeChannels);
    // On AMD, NHWC backward sums of inputs (x and dy) up to 64 MiB run faster in ranges of 128
    // channels, whose 8 slots × 2 sums (16 KiB) stay in L1, than in whole pages. Zen 5, driver,
    // medians of 28 calls in blocks of 7, 2–3 runs alternating with the page-wide ranges:
    // 32×1024×14×14 1.42–2.23 → 1.21–1.50 ms (one run a tie), 32×2048×7×7 0.73–0.86 → 0.55–0.62,
    // 8×2048×14×14 0.66–0.78 → 0.59–0.61, 4096×1024 0.65–1.00 → 0.66–0.88; from memory they lose
    // (16×256×56×56 2.9 → 4.3, 32×512×28×28 3.5 → 4.4), and the statistics gain nothing. On
    // Intel, whole pages were measured ahead of narrower ranges (above) but 128 was not tried.
    if (Backward && p.layout == Layout::kNHWC && amd_cpu() &&
        p.n * p.c * p.hw * static_cast<int64_t>(2 * sizeof(T)) <= (int64_t{64} << 20)) {
      range = std::min(range, kSmallRangeChannels);
    }
    const int64_t ranges = (p.c + range - 1) / range;
    parallel_for(0, nb * ranges, grain_of(std::min(range, p.c)), [&](int64_t i0, int64_t i1) {
      NhwcScratch& scratch = NhwcScratch::of_thread(std::min(range, p.c));
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c0 = item / nb * range, b = item % nb;
        const int64_t cw = std::min(range, p.c - c0);
        BlockSums* out = scratch.out.data();
        if (nchw_short) {
          if (nchw_rotated_rows<Backward>(p.hw)) {
            if constexpr (kLanes == kSlots && sizeof(T) > 0) {  // dependent: AVX-512 only
              nchw_short_range_sums<Backward>(p, x, grad, mean, c0, cw, plan.range(b, p.hw),
                                              scratch.acc.get(), out);
            }
          } else {
            nchw_short_transposed_sums<Backward>(p, x, grad, mean, c0, cw, plan.range(b, p.hw),
                                                 scratch, out);
          }
        } else {
          nhwc_block_sums<Backward>(p, x, grad, mean, c0, cw, plan.range(b, p.hw),
                                    scratch.acc.get(), scratch.shift.get(), out);
        }
        if (nb == 1) {
          finish(c0, c0 + cw, out);
          continue;
        }
        for (int64_t i = 0; i < cw; ++i) partial[(c0 + i) * nb + b] = out[i];
      }
    });
  }
  // A channel's finish is a merge of nb block moments with a few divisions, ~10 ns: serial, it
  // took 4 µs of a 30 µs statistics call on 256×1024. With one block (N·HW ≤ kBlockElems: every
  // MLP batch up to 1024) each item holds its channels' only block and finished them above,
  // which saves the parallel region (~1 µs).
  if (nb == 1) return;
  parallel_for(0, p.c, kFinishGrain,
               [&](int64_t c0, int64_t c1) { finish(c0, c1, partial.data() + c0 * nb); });
}

template <typename T>
void stats_t(const BatchNormProblem& p, const T* x, double* mean, double* var) {
  block_sums_t</*Backward=*/false>(p, x, Grad<false, T>{nullptr, nullptr}, nullptr,
                                   stats_finisher(p, mean, var));
}

template <typename T>
void backward_reduce_t(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask,
                       const double* mean, double* sum_dy, double* sum_dy_xmu) {
  const auto finish = sums_finisher(p, sum_dy, sum_dy_xmu);
  if (mask) {
    block_sums_t</*Backward=*/true>(p, x, Grad<true, T>{dy, mask}, mean, finish);
  } else {
    block_sums_t</*Backward=*/true>(p, x, Grad<false, T>{dy, nullptr}, mean, finish);
  }
}

// ---- elementwise: normalize and dx ----------------------------------------------------------

// The elementwise formulas, in the scalar kernels' association: y = (x − m)·k1 + k2 (normalize)
// or dx = (k1·g + k2·(x − m)) + k3 (backward dx).
template <bool Dx>
HWY_INLINE VD elementwise_value(VD xv, VD gv, VD vm, VD v1, VD v2, VD v3) {
  if constexpr (Dx) {
    return hn::Add(hn::Add(hn::Mul(v1, gv), hn::Mul(v2, hn::Sub(xv, vm))), v3);
  } else {
    return hn::Add(hn::Mul(hn::Sub(xv, vm), v1), v2);
  }
}
template <bool Dx, typename T>
HWY_INLINE T elementwise_scalar(double xv, double gv, double m, double k1, double k2, double k3) {
  return static_cast<T>(Dx ? k1 * gv + k2 * (xv - m) + k3 : (xv - m) * k1 + k2);
}

// Stores kLanes results at p: non-temporal with Stream (p vector-aligned), else through the cache.
// Float results go through the cache where kLanes of them are less than 16 bytes (SSE4, SSSE3:
// 2 lanes): Highway 1.0.3's Stream on x86 writes a whole 16-byte register even for a partial
// vector (_mm_stream_ps), which needs 16-byte alignment and would overwrite the 8 bytes after
// the two floats — past the end of the output on its last vector. Found by running the streamed
// outputs on every target (tests/kernels/batch_norm_impls_test.cc): it crashed on SSE4.
template <bool Stream, typename T>
HWY_INLINE void store_out(DD dd, VD y, T* HWY_RESTRICT p) {
  if constexpr (Stream && sizeof(T) == 4 && kLanes * sizeof(T) >= 16) {
    const hn::Rebind<T, DD> dt;
    hn::Stream(hn::DemoteTo(dt, y), dt, p);
  } else if constexpr (Stream && sizeof(T) == 8) {
    hn::Stream(y, dd, p);
  } else {
    store_d(dd, y, p);
  }
}

// One NCHW plane (HW elements of channel c) or one NHWC row (C elements) from memory index e0:
// out = (x − m)·k1 + k2 (normalize) or out = (k1·g + k2·(x − m)) + k3 (dx, g from `grad`, also
// stored to g_out when that is not null), the scalar kernels' association. x, out and g_out
// point at the run; pointers come by value so the compiler keeps them in registers (captured by
// reference, it reloaded them after every store: 3× slower). Inputs are prefetched `ahead`
// elements ahead (prefetch_ahead; 0: not).
template <bool Dx, bool PerLane, bool Stream, bool Masked, typename T>
HWY_INLINE void elementwise_run(const T* HWY_RESTRICT x, const Grad<Masked, T> grad, int64_t e0,
                                const double* HWY_RESTRICT m, const double* HWY_RESTRICT k1,
                                const double* HWY_RESTRICT k2, const double* HWY_RESTRICT k3,
                                T* HWY_RESTRICT out, T* HWY_RESTRICT g_out, int64_t len,
                                int64_t ahead) {
  const DD dd;
  auto scalar = [&](int64_t i) {
    const int64_t c = PerLane ? i : 0;
    const double gv = Dx ? grad.at(e0 + i) : 0.0;
    out[i] = elementwise_scalar<Dx, T>(static_cast<double>(x[i]), gv, m[c], k1[c], k2[c],
                                       Dx ? k3[c] : 0.0);
    if (Dx && g_out) g_out[i] = static_cast<T>(gv);
  };
  // PerLane: the coefficients vary along the run (NHWC); else they are one channel's (NCHW).
  const VD bm = hn::Set(dd, PerLane ? 0.0 : m[0]), b1 = hn::Set(dd, PerLane ? 0.0 : k1[0]);
  const VD b2 = hn::Set(dd, PerLane ? 0.0 : k2[0]), b3 = hn::Set(dd, PerLane || !Dx ? 0.0 : k3[0]);
  int64_t i = 0;
  if constexpr (Stream) {
    // Non-temporal stores need an aligned address: the first elements go the scalar way.
    const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
    while (i < len && reinterpret_cast<uintptr_t>(out + i) % align != 0) scalar(i++);
  }
  for (; i + kLanes <= len; i += kLanes) {
    prefetch_ahead(x + i, ahead, kLanes);
    if (Dx) prefetch_ahead(grad.dy + e0 + i, ahead, kLanes);
    const VD vm = PerLane ? hn::LoadU(dd, m + i) : bm;
    const VD v1 = PerLane ? hn::LoadU(dd, k1 + i) : b1;
    const VD v2 = PerLane ? hn::LoadU(dd, k2 + i) : b2;
    const VD v3 = !Dx ? b3 : PerLane ? hn::LoadU(dd, k3 + i) : b3;
    const VD gv = Dx ? grad.load(dd, e0 + i) : bm;
    store_out<Stream>(dd, elementwise_value<Dx>(load_d(dd, x + i), gv, vm, v1, v2, v3), out + i);
    if (Dx && g_out) store_out<Stream>(dd, gv, g_out + i);
  }
  for (; i < len; ++i) scalar(i);
}

// Calls run(per_lane, base, ch, len) for every NCHW plane (per_lane = std::false_type, ch = the
// plane's channel, len = HW) or NHWC row (std::true_type, ch = 0, len = C), in parallel; with
// Flush, each thread fences its non-temporal stores at the end of its chunk.
// `masked` as in grain_for.
template <bool Flush = false, typename Run>
void for_each_run(const BatchNormProblem& p, bool masked, Run run) {
  const int64_t c = p.c, hw = p.hw;
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = grain_for(p, hw, masked);
    parallel_for(0, p.n * c, grain, [=](int64_t i0, int64_t i1) {
      for (int64_t plane = i0; plane < i1; ++plane)
        run(std::false_type{}, plane * hw, plane % c, hw);
      if (Flush) hwy::FlushStream();
    });
  } else {
    const int64_t grain = grain_for(p, c, masked);
    parallel_for(0, p.n * hw, grain, [=](int64_t i0, int64_t i1) {
      for (int64_t rw = i0; rw < i1; ++rw) run(std::true_type{}, rw * c, int64_t{0}, c);
      if (Flush) hwy::FlushStream();
    });
  }
}

// R consecutive NHWC rows of C elements (per-channel coefficients, the same association as
// elementwise_run): each channel vector's coefficients are loaded once for the R rows. They are
// 3–4 double arrays of C elements, 48–64 KiB for C = 2048, more than L1: loading them once per
// row made NHWC normalize 2× slower than NCHW (32×2048×7×7: 1.05 vs 0.49 ms). With Stream, every
// row start must be vector-aligned (checked by the caller). Inputs are prefetched `ahead`
// elements ahead (a multiple of R·C: the same columns of a later group of rows; 0: not).
template <bool Dx, bool Stream, int64_t R, bool Masked, typename T>
HWY_INLINE void elementwise_rows(const T* HWY_RESTRICT x, const Grad<Masked, T> grad, int64_t e0,
                                 const double* HWY_RESTRICT m, const double* HWY_RESTRICT k1,
                                 const double* HWY_RESTRICT k2, const double* HWY_RESTRICT k3,
                                 T* HWY_RESTRICT out, T* HWY_RESTRICT g_out, int64_t c,
                                 int64_t ahead) {
  const DD dd;
  // V vectors of channels from channel i for the R rows.
  auto block = [&](auto vectors, int64_t i) {
    constexpr int64_t V = decltype(vectors)::value;
    VD vm[V], v1[V], v2[V], v3[V];
    for (int64_t v = 0; v < V; ++v) {
      vm[v] = hn::LoadU(dd, m + i + v * kLanes);
      v1[v] = hn::LoadU(dd, k1 + i + v * kLanes);
      v2[v] = hn::LoadU(dd, k2 + i + v * kLanes);
      v3[v] = Dx ? hn::LoadU(dd, k3 + i + v * kLanes) : vm[v];
    }
    // With 32 vector registers (AVX-512), every row's inputs are loaded before the first store.
    // Rows C·sizeof(T) bytes apart with that a multiple of 4 KiB (C = 1024, 2048 floats), and an
    // output at the input's offset modulo 4 KiB (page-aligned allocations): row r + 1's load of
    // column i has the address bits 0–11 of row r's store to column i, just issued, and the core
    // holds such a load until that store has left the store buffer ("4K aliasing"). Loads first
    // (driver, registry entries, medians of 2000–3000 calls, 3 alternating runs; 2 for the larger
    // shapes): 256×1024 normalize 24.6–25.1 → 22.0–23.0 µs, dx 35.9–37.5 → 30.5–32.5 µs (with the
    // output 1 KiB off x's offset instead: 21.0–22.5 and 30.9–31.3); 32×2048×7×7 dx 0.70 →
    // 0.66–0.67 ms, 32×1024×14×14 dx 1.40 → 1.32–1.35 ms. With AVX2's 16 registers the 16 loaded
    // vectors spill: 256×1024 normalize 25.5–26.0 → 29.3–33.0 µs, so there the loads stay next to
    // their stores. (The same order written as two lambdas, load_row(r) and store_row(r), compiled
    // slower on AVX-512: normalize 25.3–27.6 against 22.8–24.0 µs, 3 alternating runs.)
    constexpr bool kLoadsFirst = kLanes >= 8;
    constexpr int64_t RL = kLoadsFirst ? R : 1;
    VD xv[RL][V], gv[RL][V];
    for (int64_t r = 0; r < R; ++r) {
      const int64_t rl = kLoadsFirst ? r : 0;
      for (int64_t v = 0; v < V; ++v) {
        const int64_t o = r * c + i + v * kLanes;
        prefetch_ahead(x + o, ahead, kLanes);
        if (Dx) prefetch_ahead(grad.dy + e0 + o, ahead, kLanes);
        xv[rl][v] = load_d(dd, x + o);
        gv[rl][v] = Dx ? grad.load(dd, e0 + o) : vm[v];
      }
      if (kLoadsFirst && r + 1 < R) continue;
      for (int64_t s = kLoadsFirst ? 0 : r; s <= r; ++s) {
        const int64_t sl = kLoadsFirst ? s : 0;
        for (int64_t v = 0; v < V; ++v) {
          const int64_t o = s * c + i + v * kLanes;
          store_out<Stream>(
              dd, elementwise_value<Dx>(xv[sl][v], gv[sl][v], vm[v], v1[v], v2[v], v3[v]), out + o);
          if (Dx && g_out) store_out<Stream>(dd, gv[sl][v], g_out + o);
        }
      }
    }
  };
  // Two vectors of channels at a time: a whole cache line of float output per row visit, so that
  // non-temporal stores fill their write-combining buffers (one vector per row visit left them
  // half full: 2× slower on 4096×1024).
  int64_t i = 0;
  for (; i + 2 * kLanes <= c; i += 2 * kLanes) block(std::integral_constant<int64_t, 2>{}, i);
  for (; i + kLanes <= c; i += kLanes) block(std::integral_constant<int64_t, 1>{}, i);
  for (; i < c; ++i) {
    for (int64_t r = 0; r < R; ++r) {
      const int64_t o = r * c + i;
      const double gv = Dx ? grad.at(e0 + o) : 0.0;
      out[o] = elementwise_scalar<Dx, T>(static_cast<double>(x[o]), gv, m[i], k1[i], k2[i],
                                         Dx ? k3[i] : 0.0);
      if (Dx && g_out) g_out[o] = static_cast<T>(gv);
    }
  }
}

// The per-channel arrays an elementwise pass reads (k3: dx only), all indexed by channel.
struct Coefficients {
  const double* m;
  const double* k1;
  const double* k2;
  const double* k3;
};

// ---- runs that are not vector-aligned: one run per thread with periodic coefficients --------
//
// Row by row, NHWC rows whose C is not a multiple of kLanes leave C mod kLanes scalar elements
// each (C < kLanes: all of them; 1M×3 normalize 2.6 ms, 7 cycles per element) and cannot stream
// (rows are not vector-aligned), so a large pass writes through the cache (65536×100 dx 3.5 ms
// against 1.4 for C = 96); NCHW planes of HW < kLanes elements were all scalar. A thread's rows
// or planes are one contiguous run instead, and the coefficients of element e are those of
// channel e mod C (NHWC) or (e / HW) mod C (NCHW): their pattern repeats every unit = C or C·HW
// elements, so each array is laid out once over a period of whole units, at least a vector
// long, plus one vector that continues the pattern (a vector load at any index below the
// period reads the right coefficients without wrapping), and read at e mod the period.
// Each element's value is the same expression as before: the same bits.
// Small NHWC tensors with C ≥ kLanes keep the rows: laying out the arrays costs more than their
// few scalar elements (256×100 normalize 4.0 → 4.8 µs, 60×100 1.1 → 1.4 µs). Periods up to
// kMaxPeriod (4 arrays of 128 KiB, in L2): NCHW planes of 3 elements up to 5461 channels.
constexpr int64_t kMaxPeriod = 16384;
constexpr int64_t kPeriodicMinElems = int64_t{1} << 18;
// Elements after which the channel pattern of a tensor repeats: a row (NHWC) or a sample (NCHW).
inline int64_t pattern_unit(const BatchNormProblem& p) {
  return p.layout == Layout::kNHWC ? p.c : p.c * p.hw;
}
// Whole units, at least kLanes elements: an index below it plus kLanes stays below twice it,
// so walk_periodic wraps with one subtraction.
inline int64_t coefficient_period(const BatchNormProblem& p) {
  const int64_t unit = pattern_unit(p);
  return unit * ((kLanes + unit - 1) / unit);
}
// On AMD, large NHWC tensors of rows up to 512 bytes run periodic even when C is a multiple of
// kLanes: one run per thread saves a row's call and setup, which is most of a 256-byte row's
// cost. Zen 5, registry entries with aligned coefficient arrays, blocks of calls alternating in
// one process: 32×64×112×112 normalize 3.2–4.9 → 2.5–4.6 ms (4 runs), inference 3.0–3.9 →
// 2.8–3.5, BN + Add + ReLU 6.1–6.3 → 5.8–5.9, dx 5.1–5.4 → 4.9–5.0 (2 runs each);
// 16×128×56×56 dx 0.87–0.92 → 0.78–0.85, the others within 4%; 16×256×56×56 (1 KiB rows)
// mixed, so longer rows keep the rows path. Not timed on Intel, which keeps the rows path.
inline bool periodic_nhwc_rows(const BatchNormProblem& p) {
  const bool short_rows_amd = p.c * static_cast<int64_t>(dtype_size(p.dtype)) <= 512 && amd_cpu();
  return p.c < kLanes ||
         ((p.c % kLanes != 0 || short_rows_amd) && p.n * p.hw * p.c >= kPeriodicMinElems);
}
inline bool periodic_runs(const BatchNormProblem& p) {
  const bool unaligned = p.layout == Layout::kNHWC ? periodic_nhwc_rows(p) : p.hw < kLanes;
  // At least 8 periods: below that, laying out the arrays costs more than the run saves
  // (4×2000×3 NCHW dx, a 6000-element period: 34 → 44 µs).
  const int64_t period = coefficient_period(p);
  return unaligned && period <= kMaxPeriod && p.n * p.c * p.hw >= 8 * period;
}

// Distinguishes elementwise passes, so that a thread knows whether its periodic coefficients
// are those of the current pass.
std::atomic<uint64_t> g_periodic_passes{0};

// One periodic pass over p: its id, the period and the length of each laid-out array, and the
// runs (NHWC rows or NCHW planes) of `run` elements that threads take whole.
struct PeriodicPass {
  uint64_t pass;
  int64_t period, len, run, runs;
};
inline PeriodicPass periodic_pass(const BatchNormProblem& p) {
  const bool nhwc = p.layout == Layout::kNHWC;
  const int64_t period = coefficient_period(p);
  return {g_periodic_passes.fetch_add(1, std::memory_order_relaxed) + 1, period, period + kLanes,
          nhwc ? p.c : p.hw, p.n * (nhwc ? p.hw : p.c)};
}

// A thread's periodic coefficients (4 arrays of period + kLanes doubles) for pass `pass`, kept
// between passes.
struct ThreadPeriodicCoefficients {
  uint64_t pass = 0;
  std::size_t capacity = 0;
  hwy::AlignedFreeUniquePtr<double[]> buf;
};

// The per-channel arrays k laid out over the period of p (periodic_runs): 4 arrays of period +
// kLanes doubles one after the other, in this thread's buffer, built once per pass (the 4th
// only when k3 is given: dx).
inline const double* periodic_coefficients(const BatchNormProblem& p, uint64_t pass,
                                           const Coefficients& k) {
  thread_local ThreadPeriodicCoefficients tp;
  if (tp.pass != pass) {
    const int64_t c = p.c, hw = p.hw, len = coefficient_period(p) + kLanes;
    const bool nhwc = p.layout == Layout::kNHWC;
    const std::size_t need = 4 * static_cast<std::size_t>(len);
    if (tp.capacity < need) {
      tp.buf = hwy::AllocateAligned<double>(need);
      tp.capacity = need;
    }
    double* b = tp.buf.get();
    for (int64_t i = 0; i < len; ++i) {
      const int64_t ch = nhwc ? i % c : i / hw % c;
      b[i] = k.m[ch];
      b[len + i] = k.k1[ch];
      b[2 * len + i] = k.k2[ch];
      if (k.k3) b[3 * len + i] = k.k3[ch];  // dx only
    }
    tp.pass = pass;
  }
  return tp.buf.get();
}

// Walks memory indices [e0, e1) of a periodic run in order, j = e mod period alongside:
// scalar(e, j) for the elements before out's first aligned vector (Stream: non-temporal stores
// need an aligned address) and after the last whole vector, vector(e, j) for every vector in
// between.
template <bool Stream, typename T, typename ScalarFn, typename VectorFn>
HWY_INLINE void walk_periodic(const T* out, int64_t e0, int64_t e1, int64_t period,
                              ScalarFn&& scalar, VectorFn&& vector) {
  int64_t e = e0, j = e0 % period;
  auto one = [&] {
    scalar(e, j);
    ++e;
    if (++j == period) j = 0;
  };
  if constexpr (Stream) {
    const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
    while (e < e1 && reinterpret_cast<uintptr_t>(out + e) % align != 0) one();
  }
  for (; e + kLanes <= e1; e += kLanes) {
    vector(e, j);
    j += kLanes;
    if (j >= period) j -= period;
  }
  while (e < e1) one();
}

// The elementwise pass over memory indices [e0, e1), with the coefficient arrays pm, p1, p2, p3
// laid out over `period` elements from memory index 0.
template <bool Dx, bool Stream, bool Masked, typename T>
HWY_INLINE void elementwise_periodic(const T* HWY_RESTRICT x, const Grad<Masked, T> grad,
                                     const double* HWY_RESTRICT pm, const double* HWY_RESTRICT p1,
                                     const double* HWY_RESTRICT p2, const double* HWY_RESTRICT p3,
                                     T* HWY_RESTRICT out, T* HWY_RESTRICT g_out, int64_t e0,
                                     int64_t e1, int64_t period, int64_t ahead) {
  const DD dd;
  walk_periodic<Stream>(
      out, e0, e1, period,
      [&](int64_t e, int64_t j) {
        const double gv = Dx ? grad.at(e) : 0.0;
        out[e] = elementwise_scalar<Dx, T>(static_cast<double>(x[e]), gv, pm[j], p1[j], p2[j],
                                           Dx ? p3[j] : 0.0);
        if (Dx && g_out) g_out[e] = static_cast<T>(gv);
      },
      [&](int64_t e, int64_t j) {
        prefetch_ahead(x + e, ahead, kLanes);
        if (Dx) prefetch_ahead(grad.dy + e, ahead, kLanes);
        const VD vm = hn::LoadU(dd, pm + j);
        const VD gv = Dx ? grad.load(dd, e) : vm;
        const VD v3 = Dx ? hn::LoadU(dd, p3 + j) : vm;
        store_out<Stream>(dd,
                          elementwise_value<Dx>(load_d(dd, x + e), gv, vm, hn::LoadU(dd, p1 + j),
                                                hn::LoadU(dd, p2 + j), v3),
                          out + e);
        if (Dx && g_out) store_out<Stream>(dd, gv, g_out + e);
      });
}

// Walks consecutive NCHW planes [q0, q1) of HW ≥ kLanes elements each (channel q mod C) as one
// run of memory, in order: scalar(i, ch) for the elements before out's first aligned vector and
// after the last whole vector, vector(i, vm, v1, v2, v3) for every aligned vector in between,
// with the coefficients m, k1, k2 (and k3 with K3; else v3 = vm) broadcast — or, for the vector
// that spans the end of one plane and the start of the next, taken lane by lane from the two
// (HW ≥ kLanes: at most two). Why: planes whose bytes are not a multiple of 64 (14×14, 7×7: 784
// and 196 B) left a partly written line at every plane boundary, so they could not stream (a
// partial non-temporal line is a read-modify-write in memory), and each plane ended with scalar
// elements. Indices are memory indices from the tensors' starts.
template <bool K3, typename T, typename ScalarFn, typename VectorFn>
HWY_INLINE void walk_planes(const T* out, const Coefficients& k, int64_t q0, int64_t q1, int64_t hw,
                            int64_t c, ScalarFn&& scalar, VectorFn&& vector) {
  const DD dd;
  int64_t e = q0 * hw;
  const int64_t end = q1 * hw;
  int64_t ch = q0 % c, q_end = e + hw;  // the channel of element e's plane, the plane's end
  auto next_plane = [&] {
    ch = ch + 1 == c ? 0 : ch + 1;
    q_end += hw;
  };
  const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
  for (; e < end && reinterpret_cast<uintptr_t>(out + e) % align != 0; ++e) {
    if (e == q_end) next_plane();
    scalar(e, ch);
  }
  if (e == q_end) next_plane();
  while (e + kLanes <= end) {
    const VD bm = hn::Set(dd, k.m[ch]), b1 = hn::Set(dd, k.k1[ch]), b2 = hn::Set(dd, k.k2[ch]);
    const VD b3 = K3 ? hn::Set(dd, k.k3[ch]) : bm;
    for (; e + kLanes <= q_end; e += kLanes) vector(e, bm, b1, b2, b3);
    if (e < q_end && e + kLanes <= end) {
      // Lanes below q_end − e belong to this plane, the others to the next one.
      const auto first = hn::FirstN(dd, static_cast<std::size_t>(q_end - e));
      const int64_t cn = ch + 1 == c ? 0 : ch + 1;
      const VD vm = hn::IfThenElse(first, bm, hn::Set(dd, k.m[cn]));
      const VD v1 = hn::IfThenElse(first, b1, hn::Set(dd, k.k1[cn]));
      const VD v2 = hn::IfThenElse(first, b2, hn::Set(dd, k.k2[cn]));
      const VD v3 = K3 ? hn::IfThenElse(first, b3, hn::Set(dd, k.k3[cn])) : vm;
      vector(e, vm, v1, v2, v3);
      e += kLanes;
    }
    if (e >= q_end) next_plane();
  }
  for (; e < end; ++e) {
    if (e == q_end) next_plane();
    scalar(e, ch);
  }
}

// The elementwise pass (normalize, or dx with Dx; see elementwise_run) over consecutive NCHW
// planes [q0, q1) as one run (walk_planes). Inputs are prefetched `ahead` elements ahead.
template <bool Dx, bool Stream, bool Masked, typename T>
HWY_INLINE void elementwise_planes(const T* HWY_RESTRICT x, const Grad<Masked, T> grad,
                                   const Coefficients& k, T* HWY_RESTRICT out,
                                   T* HWY_RESTRICT g_out, int64_t q0, int64_t q1, int64_t hw,
                                   int64_t c, int64_t ahead) {
  const DD dd;
  walk_planes<Dx>(
      out, k, q0, q1, hw, c,
      [&](int64_t i, int64_t ch) {
        const double gv = Dx ? grad.at(i) : 0.0;
        out[i] = elementwise_scalar<Dx, T>(static_cast<double>(x[i]), gv, k.m[ch], k.k1[ch],
                                           k.k2[ch], Dx ? k.k3[ch] : 0.0);
        if (Dx && g_out) g_out[i] = static_cast<T>(gv);
      },
      [&](int64_t i, VD vm, VD v1, VD v2, VD v3) {
        prefetch_ahead(x + i, ahead, kLanes);
        if (Dx) prefetch_ahead(grad.dy + i, ahead, kLanes);
        const VD gv = Dx ? grad.load(dd, i) : vm;
        store_out<Stream>(dd, elementwise_value<Dx>(load_d(dd, x + i), gv, vm, v1, v2, v3),
                          out + i);
        if (Dx && g_out) store_out<Stream>(dd, gv, g_out + i);
      });
}

// The elementwise pass; coefficients() gives the arrays, called by each thread at the start of
// each of its NHWC chunks or NCHW planes (arrays the caller wrote, or ones the thread computes
// for itself: see normalize_infer_t).
template <bool Dx, bool Stream, bool Masked, typename T, typename CoefficientSource>
void elementwise_layout(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                        CoefficientSource coefficients, T* out, T* g_out) {
  if (periodic_runs(p)) {
    const auto [pass, period, len, run, runs] = periodic_pass(p);
    const int64_t ahead = prefetch_distance<T>(p, 1);
    // Chunks of whole runs, at least 8 periods, so that laying out the arrays costs little.
    const int64_t grain = grain_for(p, run, Masked, std::max(kElementwiseGrain, 8 * period));
    parallel_for(0, runs, grain, [=](int64_t r0, int64_t r1) {
      const double* b = periodic_coefficients(p, pass, coefficients());
      elementwise_periodic<Dx, Stream>(x, grad, b, b + len, b + 2 * len, b + 3 * len, out, g_out,
                                       r0 * run, r1 * run, period, ahead);
      if (Stream) hwy::FlushStream();
    });
    return;
  }
  if (p.layout == Layout::kNHWC) {
    // Rows in groups that share each coefficient load: 4 when the output goes through the cache
    // (32×2048×7×7 normalize 0.94 → 0.56 ms, dx 1.60 → 1.18 ms against 1), and when it streams,
    // 2 for rows of at least 4 KiB (4 on AMD), else 1 (interleaved rows of non-temporal stores:
    // with 4 rows 16×256×56×56 normalize ran 3.96 ms against 2.21 with 1; with 2 rows,
    // 32×512×28×28 1.97 → 4.42 ms but 32×1024×14×14 1.96 → 1.40 ms and 64×2048×7×7 2.19 → 1.47 ms;
    // medians of 6 alternating runs, Intel). On AMD streamed long rows go in fours: a Zen 5 host
    // showed 4 rows ahead of 2 in dx on every shape (registry-entry driver, medians of 32 calls in
    // blocks of 8, 3 alternating runs; dx: 32×1024×14×14 2.15–2.25 → 1.30–1.51 ms, 32×2048×7×7
    // 0.76–0.87 → 0.44–0.64, 64×2048×7×7 2.03–2.09 → 1.23–1.34, 4096×1024 1.42–1.51 → 0.79–0.99;
    // normalize 32×1024×14×14 0.83–0.97 → 0.65–0.74, 64×2048×7×7 0.88–1.02 → 0.70–0.75, the others
    // within noise), and short rows there as on Intel (16×256×56×56 dx 2.95–2.98 with 1
    // row, 7.7–7.8 with 2, 4.5–4.6 with 4). Fours were not timed on Intel, which keeps its measured
    // pairs. Chunks are a multiple of 4 rows; every element is independent, so the grouping changes
    // no value.
    const int64_t c = p.c;
    const int64_t grain = grain_for(p, 4 * c, Masked) * 4;
    auto rows_of = [=](auto rows) {
      constexpr int64_t kRows = decltype(rows)::value;
      // Groups of rows are one stream per row and tensor that the hardware prefetchers follow;
      // prefetching them cost time (pairs, Intel: 4096×1024 dx 0.82–0.84 → 0.93–0.98 ms,
      // 32×1024×14×14 NHWC dx 1.27–1.31 → 1.37–1.41; medians of 30 calls, 3 alternating runs;
      // groups of 4 on Zen 5: mixed, 32×2048×7×7 dx 0.41 → 0.49–0.50 ms, 4096×1024 0.67–0.85 →
      // 0.62–0.78).
      const int64_t ahead = kRows == 1 ? prefetch_distance<T>(p, c) : 0;
      parallel_for(0, p.n * p.hw, grain, [=](int64_t i0, int64_t i1) {
        const auto [m, k1, k2, k3] = coefficients();
        int64_t rw = i0;
        for (; rw + kRows <= i1; rw += kRows) {
          const int64_t o = rw * c;
          elementwise_rows<Dx, Stream, kRows>(x + o, grad, o, m, k1, k2, k3, out + o,
                                              g_out ? g_out + o : nullptr, c, ahead);
        }
        for (; rw < i1; ++rw) {
          const int64_t o = rw * c;
          elementwise_rows<Dx, Stream, 1>(x + o, grad, o, m, k1, k2, k3, out + o,
                                          g_out ? g_out + o : nullptr, c, ahead);
        }
        if (Stream) hwy::FlushStream();
      });
    };
    const bool long_rows = c * static_cast<int64_t>(sizeof(T)) >= 4096;
    if (!Stream || (long_rows && amd_cpu())) {
      rows_of(std::integral_constant<int64_t, 4>{});
    } else if (long_rows) {
      rows_of(std::integral_constant<int64_t, 2>{});
    } else {
      rows_of(std::integral_constant<int64_t, 1>{});
    }
    return;
  }
  // NCHW planes follow each other in memory: the prefetch runs ahead across plane boundaries.
  const int64_t ahead = prefetch_distance<T>(p, 1);
  if (p.hw >= kLanes) {
    const int64_t hw = p.hw, c = p.c;
    const int64_t grain = grain_for(p, hw, Masked);
    parallel_for(0, p.n * c, grain, [=](int64_t q0, int64_t q1) {
      elementwise_planes<Dx, Stream>(x, grad, coefficients(), out, g_out, q0, q1, hw, c, ahead);
      if (Stream) hwy::FlushStream();
    });
    return;
  }
  for_each_run<Stream>(p, Masked, [=](auto per_lane, int64_t base, int64_t ch, int64_t len) {
    const auto [m, k1, k2, k3] = coefficients();
    elementwise_run<Dx, decltype(per_lane)::value, Stream>(
        x + base, grad, base, m + ch, k1 + ch, k2 + ch, Dx ? k3 + ch : nullptr, out + base,
        g_out ? g_out + base : nullptr, len, ahead);
  });
}

// Whether an elementwise pass over `tensors` tensors of p's size (inputs and outputs) writes
// `out` with non-temporal stores: together more than stream_limit_bytes() (why that limit: see
// default_stream_limit, at the end of this file), not in place (then the lines are in cache
// anyway after the read), and aligned so that no partial line is streamed. NCHW planes of at least
// a vector go out as one run (walk_planes), so a plane boundary inside a cache line leaves no
// partly written line; shorter planes, passed one by one, would (a partial non-temporal line costs
// a read-modify-write in memory: 32×1024×14×14, planes of 784 B written plane by plane,
// normalize 2.19 ms streamed, 1.23 ms through the cache; dx 2.58 → 1.93 ms) and go through the
// cache. NHWC rows stream when every row starts vector-aligned. A second output (the fused
// backward's g) streams along with the first when it also qualifies and sits at the same offset
// from a vector boundary (one alignment prologue serves both).
template <typename T>
bool stream_output(const BatchNormProblem& p, const T* out, bool in_place, int64_t tensors) {
  const std::size_t bytes = static_cast<std::size_t>(p.n * p.c * p.hw) * sizeof(T);
  const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
  const bool aligned_rows =
      periodic_runs(p) ||  // one run per thread, its first elements scalar up to alignment
      (p.layout == Layout::kNCHW
           ? p.hw >= kLanes
           : (p.c % kLanes == 0 && reinterpret_cast<uintptr_t>(out) % align == 0));
  return bytes * static_cast<std::size_t>(tensors) > stream_limit_bytes() && !in_place &&
         aligned_rows;
}
template <typename T>
bool stream_outputs(const BatchNormProblem& p, const T* out, bool in_place, const T* out2,
                    bool in_place2, int64_t tensors) {
  if (!out2) return stream_output(p, out, in_place, tensors);
  const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
  return stream_output(p, out, in_place, tensors) && stream_output(p, out2, in_place2, tensors) &&
         (reinterpret_cast<uintptr_t>(out) - reinterpret_cast<uintptr_t>(out2)) % align == 0;
}

template <bool Dx, bool Masked, typename T>
void elementwise_t(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                   const double* m, const double* k1, const double* k2, const double* k3, T* out,
                   T* g_out) {
  const auto given = [=] { return Coefficients{m, k1, k2, k3}; };
  // normalize: x and y; dx: x, dy, dx and g_out if there is one.
  const int64_t tensors = Dx ? (g_out ? 4 : 3) : 2;
  if (stream_outputs(p, out, out == x || (Dx && out == grad.dy), static_cast<const T*>(g_out),
                     g_out == grad.dy, tensors)) {
    elementwise_layout<Dx, true>(p, x, grad, given, out, g_out);
  } else {
    elementwise_layout<Dx, false>(p, x, grad, given, out, g_out);
  }
}

// ---- inference from the running statistics, coefficients per thread ------------------------

// Distinguishes normalize_infer calls, so that a thread knows whether its coefficients are
// those of the current call.
std::atomic<uint64_t> g_infer_calls{0};

// A thread's coefficients (mean, scale, shift; 3·C doubles) for inference call `call`; the
// buffer is kept between calls (it grows to the largest C seen).
struct ThreadInferCoefficients {
  uint64_t call = 0;
  std::size_t capacity = 0;
  hwy::AlignedFreeUniquePtr<double[]> buf;
};

// mean = running_mean, scale = weight / sqrt(running_var + eps), shift = bias for every
// channel, in double lanes: the square root and the division are correctly rounded in every
// lane, so these are the op layer's scalar values bit for bit.
template <typename T>
void infer_coefficients(int64_t c, const T* w, const T* b, const T* rm, const T* rv, double eps,
                        double* HWY_RESTRICT m, double* HWY_RESTRICT k1, double* HWY_RESTRICT k2) {
  const DD dd;
  const VD one = hn::Set(dd, 1.0), zero = hn::Zero(dd), ve = hn::Set(dd, eps);
  int64_t i = 0;
  for (; i + kLanes <= c; i += kLanes) {
    const VD wv = w ? load_d(dd, w + i) : one;
    hn::StoreU(load_d(dd, rm + i), dd, m + i);
    hn::StoreU(hn::Div(wv, hn::Sqrt(hn::Add(load_d(dd, rv + i), ve))), dd, k1 + i);
    hn::StoreU(b ? load_d(dd, b + i) : zero, dd, k2 + i);
  }
  for (; i < c; ++i) {
    m[i] = static_cast<double>(rm[i]);
    k1[i] = (w ? static_cast<double>(w[i]) : 1.0) / std::sqrt(static_cast<double>(rv[i]) + eps);
    k2[i] = b ? static_cast<double>(b[i]) : 0.0;
  }
}

template <typename T>
void normalize_infer_t(const BatchNormProblem& p, const T* x, const T* w, const T* b, const T* rm,
                       const T* rv, double eps, T* y) {
  const uint64_t call = g_infer_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  const int64_t c = p.c;
  const auto local = [=] {
    thread_local ThreadInferCoefficients tc;
    if (tc.call != call) {
      const std::size_t need = 3 * static_cast<std::size_t>(c);
      if (tc.capacity < need) {
        tc.buf = hwy::AllocateAligned<double>(need);
        tc.capacity = need;
      }
      double* k = tc.buf.get();
      infer_coefficients(c, w, b, rm, rv, eps, k, k + c, k + 2 * c);
      tc.call = call;
    }
    const double* k = tc.buf.get();
    return Coefficients{k, k + c, k + 2 * c, nullptr};
  };
  const Grad<false, T> none{nullptr, nullptr};
  if (stream_output(p, y, y == x, /*tensors=*/2)) {
    elementwise_layout</*Dx=*/false, true>(p, x, none, local, y, static_cast<T*>(nullptr));
  } else {
    elementwise_layout</*Dx=*/false, false>(p, x, none, local, y, static_cast<T*>(nullptr));
  }
}

// ---- single sweeps: a range of NCHW channels reduced, then written while it is in cache ----
//
// The two-pass training forward reads x twice (statistics, then normalize) and the backward
// reads x and dy twice (sums, then dx): 3 and 5 passes over memory. A range of channels whose
// inputs fit in a core's L2 can be reduced and then written straight away, the second read
// coming from the cache: 2 and 3 passes. A channel's N planes lie C·HW elements apart, so this
// works on NCHW (on NHWC a channel range is a narrow strided column). Each channel's sums are the
// same block sums, finished the same way, as in the two passes, so the results are the same bits.

// Input bytes (x, and dy with the mask for the backward) a range may hold: half of a 2 MiB L2,
// the rest for the output's lines and the other inputs' prefetch.
constexpr int64_t kSweepRangeBytes = int64_t{1} << 20;
// Tensors below this go through the two passes, whose finer work items share small problems
// better between threads (they are in cache for the second pass anyway).
constexpr int64_t kSweepMinBytes = int64_t{4} << 20;

// Channels per range of the single sweep, or 0 where it does not pay: NCHW rows of at least a
// slot cycle, tensors of at least kSweepMinBytes, one channel's inputs (`elem_bytes` per
// element) within kSweepRangeBytes, and at least 4 ranges per thread so that threads finish
// together. Ranges are whole groups of kGroup channels where they can be.
inline int64_t sweep_channels(const BatchNormProblem& p, double elem_bytes, std::size_t t_bytes) {
  const int64_t per_channel = p.n * p.hw;
  const double channel_bytes = elem_bytes * static_cast<double>(per_channel);
  if (p.layout != Layout::kNCHW || p.hw < kSlots ||
      static_cast<double>(p.c * per_channel * static_cast<int64_t>(t_bytes)) < kSweepMinBytes ||
      channel_bytes > kSweepRangeBytes) {
    return 0;
  }
  int64_t per = static_cast<int64_t>(kSweepRangeBytes / channel_bytes);
  const int64_t threads = get_num_threads();
  const int64_t ranges_wanted = 4 * threads;
  per = std::min(per, (p.c + ranges_wanted - 1) / ranges_wanted);
  if (per >= kGroup) per = per / kGroup * kGroup;
  per = std::max<int64_t>(per, 1);
  // Threads get equal shares of whole ranges: with a count that is no multiple of the thread
  // count, one thread reads a whole range more than another. The count rounded up to a multiple,
  // where ranges of whole groups give it, balances them (32×2048×7×7 training forward: 13 ranges
  // of 164 channels, 7 and 6 per thread, 0.74–0.79 ms → 14 of 148, 0.67–0.72 ms; bnorm_bench, 3
  // alternating runs; the other layers already had an even count). Which channels share a range
  // changes no value.
  const int64_t ranges = (p.c + per - 1) / per;
  const int64_t balanced = (ranges + threads - 1) / threads * threads;
  int64_t even = (p.c + balanced - 1) / balanced;
  if (even >= kGroup) even = (even + kGroup - 1) / kGroup * kGroup;
  return (p.c + even - 1) / even % threads == 0 ? even : per;
}

// The block sums of channels [c0, c1), all blocks, into partial[(c − c0)·nb + b].
template <bool Backward, bool Masked, typename T>
void range_sums(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                const double* mean, const BlockPlan& plan, int64_t c0, int64_t c1,
                BlockSums* partial) {
  const int64_t nb = plan.num_blocks;
  BlockSums out[kGroup];
  for (int64_t g = c0; g < c1; g += kGroup) {
    const int64_t cn = std::min(kGroup, c1 - g);
    for (int64_t b = 0; b < nb; ++b) {
      nchw_item_sums<Backward>(p, x, grad, mean, g, cn, plan.range(b, p.hw), out);
      for (int64_t j = 0; j < cn; ++j) partial[(g + j - c0) * nb + b] = out[j];
    }
  }
}

// The elementwise pass over the planes of channels [c0, c1), in memory order.
template <bool Dx, bool Stream, bool Masked, typename T>
void range_planes(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                  const double* m, const double* k1, const double* k2, const double* k3, T* out,
                  T* g_out, int64_t c0, int64_t c1) {
  static_assert(kSlots >= kLanes, "sweeps take planes of at least a slot cycle");
  const Coefficients k{m, k1, k2, k3};
  for (int64_t n = 0; n < p.n; ++n) {
    elementwise_planes<Dx, Stream>(x, grad, k, out, g_out, n * p.c + c0, n * p.c + c1, p.hw, p.c,
                                   /*ahead=*/0);
  }
}

// One sweep over every range of `per` channels, in parallel: the range's block sums, then
// finish(c0, c1, partial) (the statistics or the backward sums of those channels, from
// partial[(c − c0)·nb + b]), coeffs(c0, c1), and the range's output (normalize, or dx with Dx);
// m is the mean the reduction (backward) and the output read, filled by finish for the forward.
// With Stream, each thread fences its non-temporal stores at the end.
template <bool Dx, bool Stream, bool Masked, typename T, typename Finish>
void sweep_t(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad, const double* m,
             Finish finish, ChannelCallback coeffs, const double* k1, const double* k2,
             const double* k3, T* out, T* g_out, int64_t per) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  parallel_for(0, (p.c + per - 1) / per, 1, [&](int64_t i0, int64_t i1) {
    std::vector<BlockSums> partial(static_cast<std::size_t>(per * nb));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t c0 = i * per, c1 = std::min(p.c, c0 + per);
      range_sums</*Backward=*/Dx>(p, x, grad, m, plan, c0, c1, partial.data());
      finish(c0, c1, partial.data());
      coeffs(c0, c1);
      range_planes<Dx, Stream>(p, x, grad, m, k1, k2, k3, out, g_out, c0, c1);
    }
    if (Stream) hwy::FlushStream();
  });
}

template <bool Stream, typename T>
void forward_train_sweep_t(const BatchNormProblem& p, const T* x, double* mean, double* var,
                           ChannelCallback coeffs, const double* scale, const double* shift, T* y,
                           int64_t per) {
  sweep_t</*Dx=*/false, Stream>(p, x, Grad<false, T>{nullptr, nullptr}, mean,
                                stats_finisher(p, mean, var), coeffs, scale, shift, nullptr, y,
                                static_cast<T*>(nullptr), per);
}

template <bool Stream, bool Masked, typename T>
void backward_sweep_t(const BatchNormProblem& p, const T* x, const Grad<Masked, T> grad,
                      const double* mean, double* sum_dy, double* sum_dy_xmu,
                      ChannelCallback coeffs, const double* k1, const double* k2, const double* k3,
                      T* dx, T* g_out, int64_t per) {
  sweep_t</*Dx=*/true, Stream>(p, x, grad, mean, sums_finisher(p, sum_dy, sum_dy_xmu), coeffs, k1,
                               k2, k3, dx, g_out, per);
}

// The fused epilogue of BN (+ Add) + ReLU over one NCHW plane or NHWC row; see
// NormalizeAddReluFn. Same association as the reference: ((x − m)·k1 + k2) + z. With Stream, y
// goes out with non-temporal stores (the mask, a quarter of the bytes, through the cache). x and
// z are prefetched `ahead` elements ahead (prefetch_ahead).
template <bool PerLane, bool Stream, typename T>
HWY_INLINE void add_relu_run(const T* HWY_RESTRICT x, const T* HWY_RESTRICT z,
                             const double* HWY_RESTRICT m, const double* HWY_RESTRICT k1,
                             const double* HWY_RESTRICT k2, T* HWY_RESTRICT out,
                             ReluMaskWriter& mask, int64_t len, int64_t ahead) {
  const DD dd;
  const VD zero = hn::Zero(dd);
  const VD bm = hn::Set(dd, PerLane ? 0.0 : m[0]), b1 = hn::Set(dd, PerLane ? 0.0 : k1[0]);
  const VD b2 = hn::Set(dd, PerLane ? 0.0 : k2[0]);
  auto scalar = [&](int64_t i) {
    const int64_t c = PerLane ? i : 0;
    double r = (static_cast<double>(x[i]) - m[c]) * k1[c] + k2[c];
    if (z) r += static_cast<double>(z[i]);
    mask.put(r > 0, 1);
    out[i] = static_cast<T>(r <= 0 ? 0.0 : r);
  };
  int64_t i = 0;
  if constexpr (Stream) {
    const uintptr_t align = sizeof(T) * static_cast<uintptr_t>(kLanes);
    while (i < len && reinterpret_cast<uintptr_t>(out + i) % align != 0) scalar(i++);
  }
  for (; i + kLanes <= len; i += kLanes) {
    prefetch_ahead(x + i, ahead, kLanes);
    if (z) prefetch_ahead(z + i, ahead, kLanes);
    const VD vm = PerLane ? hn::LoadU(dd, m + i) : bm;
    const VD v1 = PerLane ? hn::LoadU(dd, k1 + i) : b1;
    const VD v2 = PerLane ? hn::LoadU(dd, k2 + i) : b2;
    VD r = hn::Add(hn::Mul(hn::Sub(load_d(dd, x + i), vm), v1), v2);
    if (z) r = hn::Add(r, load_d(dd, z + i));
    uint8_t bits[8];  // kLanes ≤ 8 bits: one byte
    hn::StoreMaskBits(dd, hn::Gt(r, zero), bits);
    mask.put(bits[0], kLanes);
    store_out<Stream>(dd, hn::IfThenZeroElse(hn::Le(r, zero), r), out + i);  // NaN stays NaN
  }
  for (; i < len; ++i) scalar(i);
}

// The fused epilogue over memory indices [e0, e1) (e0 a multiple of 8: a mask byte), with the
// coefficient arrays laid out over `period` elements from memory index 0 (periodic_runs): the
// NHWC rows and NCHW planes that are not vector-aligned, which add_relu_run went through
// element by element (4096×512×2×2 NCHW 47 ms, 1M×3 10 ms, at 3 GB/s).
template <bool Stream, typename T>
HWY_INLINE void add_relu_periodic(const T* HWY_RESTRICT x, const T* HWY_RESTRICT z,
                                  const double* HWY_RESTRICT pm, const double* HWY_RESTRICT p1,
                                  const double* HWY_RESTRICT p2, T* HWY_RESTRICT out,
                                  ReluMaskWriter& mask, int64_t e0, int64_t e1, int64_t period,
                                  int64_t ahead) {
  const DD dd;
  const VD zero = hn::Zero(dd);
  walk_periodic<Stream>(
      out, e0, e1, period,
      [&](int64_t e, int64_t j) {
        double r = (static_cast<double>(x[e]) - pm[j]) * p1[j] + p2[j];
        if (z) r += static_cast<double>(z[e]);
        mask.put(r > 0, 1);
        out[e] = static_cast<T>(r <= 0 ? 0.0 : r);
      },
      [&](int64_t e, int64_t j) {
        prefetch_ahead(x + e, ahead, kLanes);
        if (z) prefetch_ahead(z + e, ahead, kLanes);
        VD r = hn::Add(
            hn::Mul(hn::Sub(load_d(dd, x + e), hn::LoadU(dd, pm + j)), hn::LoadU(dd, p1 + j)),
            hn::LoadU(dd, p2 + j));
        if (z) r = hn::Add(r, load_d(dd, z + e));
        uint8_t bits[8];  // kLanes ≤ 8 bits: one byte
        hn::StoreMaskBits(dd, hn::Gt(r, zero), bits);
        mask.put(bits[0], kLanes);
        store_out<Stream>(dd, hn::IfThenZeroElse(hn::Le(r, zero), r), out + e);  // NaN stays NaN
      });
}

// In parallel over groups of runs that start on a byte of the mask (runs_per_mask_byte), so that
// each thread writes whole bytes of it.
template <bool Stream, typename T>
void normalize_add_relu_layout(const BatchNormProblem& p, const T* x, const T* z, const double* m,
                               const double* k1, const double* k2, T* out, uint8_t* mask) {
  if (periodic_runs(p)) {
    const auto [pass, period, len, run, runs] = periodic_pass(p);
    const int64_t group = runs_per_mask_byte(run), groups = (runs + group - 1) / group;
    const int64_t grain =
        grain_for(p, run * group, /*masked=*/true, std::max(kElementwiseGrain, 8 * period));
    const int64_t ahead = prefetch_distance<T>(p, 1);
    const Coefficients k{m, k1, k2, nullptr};
    parallel_for(0, groups, grain, [=](int64_t g0, int64_t g1) {
      const int64_t r0 = g0 * group, r1 = std::min(runs, g1 * group);
      const double* b = periodic_coefficients(p, pass, k);
      ReluMaskWriter bits(mask + r0 * run / 8);
      add_relu_periodic<Stream>(x, z, b, b + len, b + 2 * len, out, bits, r0 * run, r1 * run,
                                period, ahead);
      bits.finish();
      if (Stream) hwy::FlushStream();
    });
    return;
  }
  auto run_all = [&](auto per_lane) {
    constexpr bool kPerLane = decltype(per_lane)::value;
    const int64_t len = kPerLane ? p.c : p.hw, runs = p.n * (kPerLane ? p.hw : p.c);
    const int64_t group = runs_per_mask_byte(len), groups = (runs + group - 1) / group;
    const int64_t grain = grain_for(p, len * group, /*masked=*/true);
    const int64_t c = p.c;
    const int64_t ahead = prefetch_distance<T>(p, 1);  // runs follow each other in memory
    parallel_for(0, groups, grain, [=](int64_t g0, int64_t g1) {
      const int64_t r0 = g0 * group, r1 = std::min(runs, g1 * group);
      ReluMaskWriter bits(mask + r0 * len / 8);
      if (!kPerLane && len >= kLanes) {
        // NCHW planes as one run (walk_planes); the mask's bits follow in memory order.
        const DD dd;
        const VD zero = hn::Zero(dd);
        walk_planes</*K3=*/false>(
            out, Coefficients{m, k1, k2, nullptr}, r0, r1, len, c,
            [&](int64_t i, int64_t ch) {
              double r = (static_cast<double>(x[i]) - m[ch]) * k1[ch] + k2[ch];
              if (z) r += static_cast<double>(z[i]);
              bits.put(r > 0, 1);
              out[i] = static_cast<T>(r <= 0 ? 0.0 : r);
            },
            [&](int64_t i, VD vm, VD v1, VD v2, VD) {
              prefetch_ahead(x + i, ahead, kLanes);
              if (z) prefetch_ahead(z + i, ahead, kLanes);
              VD r = hn::Add(hn::Mul(hn::Sub(load_d(dd, x + i), vm), v1), v2);
              if (z) r = hn::Add(r, load_d(dd, z + i));
              uint8_t b[8];  // kLanes ≤ 8 bits: one byte
              hn::StoreMaskBits(dd, hn::Gt(r, zero), b);
              bits.put(b[0], kLanes);
              store_out<Stream>(dd, hn::IfThenZeroElse(hn::Le(r, zero), r), out + i);
            });
        bits.finish();
        if (Stream) hwy::FlushStream();
        return;
      }
      for (int64_t run = r0; run < r1; ++run) {
        const int64_t base = run * len, ch = kPerLane ? 0 : run % c;
        add_relu_run<kPerLane, Stream>(x + base, z ? z + base : nullptr, m + ch, k1 + ch, k2 + ch,
                                       out + base, bits, len, ahead);
      }
      bits.finish();
      if (Stream) hwy::FlushStream();
    });
  };
  if (p.layout == Layout::kNCHW) {
    run_all(std::false_type{});
  } else {
    run_all(std::true_type{});
  }
}

// Streams y under the same conditions as the plain normalize (see elementwise_t).
template <typename T>
void normalize_add_relu_t(const BatchNormProblem& p, const T* x, const T* z, const double* m,
                          const double* k1, const double* k2, T* out, uint8_t* mask) {
  if (stream_output(p, out, out == x || out == z, /*tensors=*/z ? 3 : 2)) {
    normalize_add_relu_layout<true>(p, x, z, m, k1, k2, out, mask);
  } else {
    normalize_add_relu_layout<false>(p, x, z, m, k1, k2, out, mask);
  }
}

void NormalizeAddRelu(const BatchNormProblem& p0, const void* x, const void* z, const double* mean,
                      const double* scale, const double* shift, void* y, uint8_t* mask) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    normalize_add_relu_t(p, static_cast<const T*>(x), static_cast<const T*>(z), mean, scale, shift,
                         static_cast<T*>(y), mask);
  });
}

void Stats(const BatchNormProblem& p0, const void* x, double* mean, double* var) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    stats_t(p, static_cast<const T*>(x), mean, var);
  });
}

void Normalize(const BatchNormProblem& p0, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise_t<false>(p, static_cast<const T*>(x), Grad<false, T>{nullptr, nullptr}, mean, scale,
                         shift, nullptr, static_cast<T*>(y), static_cast<T*>(nullptr));
  });
}

void NormalizeInfer(const BatchNormProblem& p0, const void* x, const void* weight, const void* bias,
                    const void* running_mean, const void* running_var, double eps, void* y) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    normalize_infer_t(p, static_cast<const T*>(x), static_cast<const T*>(weight),
                      static_cast<const T*>(bias), static_cast<const T*>(running_mean),
                      static_cast<const T*>(running_var), eps, static_cast<T*>(y));
  });
}

void BackwardReduce(const BatchNormProblem& p0, const void* x, const void* dy, const uint8_t* mask,
                    const double* mean, double* sum_dy, double* sum_dy_xmu) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    backward_reduce_t(p, static_cast<const T*>(x), static_cast<const T*>(dy), mask, mean, sum_dy,
                      sum_dy_xmu);
  });
}

void BackwardDx(const BatchNormProblem& p0, const void* x, const void* dy, const uint8_t* mask,
                const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                void* dx, void* g_out) {
  const BatchNormProblem p = as_rows(p0);  // NCHW with HW = 1: the NHWC kernels
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    const T* xt = static_cast<const T*>(x);
    const T* dyt = static_cast<const T*>(dy);
    if (mask) {
      elementwise_t<true>(p, xt, Grad<true, T>{dyt, mask}, mean, k_dy, k_xmu, k_const,
                          static_cast<T*>(dx), static_cast<T*>(g_out));
    } else {
      elementwise_t<true>(p, xt, Grad<false, T>{dyt, nullptr}, mean, k_dy, k_xmu, k_const,
                          static_cast<T*>(dx), static_cast<T*>(g_out));
    }
  });
}

bool ForwardTrainSweep(const BatchNormProblem& p, const void* x, double* mean, double* var,
                       ChannelCallback coeffs, const double* scale, const double* shift, void* y) {
  bool done = false;
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    const int64_t per = sweep_channels(p, sizeof(T), sizeof(T));
    if (per == 0) return;
    const T* xt = static_cast<const T*>(x);
    T* yt = static_cast<T*>(y);
    if (stream_output(p, yt, yt == xt, /*tensors=*/2)) {
      forward_train_sweep_t<true>(p, xt, mean, var, coeffs, scale, shift, yt, per);
    } else {
      forward_train_sweep_t<false>(p, xt, mean, var, coeffs, scale, shift, yt, per);
    }
    done = true;
  });
  return done;
}

bool BackwardSweep(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                   const double* mean, double* sum_dy, double* sum_dy_xmu, ChannelCallback coeffs,
                   const double* k_dy, const double* k_xmu, const double* k_const, void* dx,
                   void* g_out) {
  bool done = false;
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    const int64_t per = sweep_channels(p, 2.0 * sizeof(T) + (mask ? 0.125 : 0.0), sizeof(T));
    if (per == 0) return;
    const T* xt = static_cast<const T*>(x);
    const T* dyt = static_cast<const T*>(dy);
    T* dxt = static_cast<T*>(dx);
    T* gt = static_cast<T*>(g_out);
    auto run = [&](auto grad) {
      if (stream_outputs(p, dxt, dxt == xt || dxt == dyt, static_cast<const T*>(gt), gt == dyt,
                         /*tensors=*/gt ? 4 : 3)) {
        backward_sweep_t<true>(p, xt, grad, mean, sum_dy, sum_dy_xmu, coeffs, k_dy, k_xmu, k_const,
                               dxt, gt, per);
      } else {
        backward_sweep_t<false>(p, xt, grad, mean, sum_dy, sum_dy_xmu, coeffs, k_dy, k_xmu, k_const,
                                dxt, gt, per);
      }
    };
    if (mask) {
      run(Grad<true, T>{dyt, mask});
    } else {
      run(Grad<false, T>{dyt, nullptr});
    }
    done = true;
  });
  return done;
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace bnorm::kernels::cpu_hwy
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels::cpu_hwy {

HWY_EXPORT(Stats);
HWY_EXPORT(Normalize);
HWY_EXPORT(BackwardReduce);
HWY_EXPORT(BackwardDx);
HWY_EXPORT(TargetName);
HWY_EXPORT(NormalizeAddRelu);
HWY_EXPORT(ForwardTrainSweep);
HWY_EXPORT(BackwardSweep);
HWY_EXPORT(NormalizeInfer);

namespace {
enum CacheLevel { kL2, kL3 };
// The size of a cache level as the system reports it, clamped to [lo, hi]; `none` where it
// reports none.
std::size_t reported_cache_bytes(CacheLevel level, std::size_t lo, std::size_t hi,
                                 std::size_t none) {
  long bytes = -1;
#if defined(_SC_LEVEL2_CACHE_SIZE) && defined(_SC_LEVEL3_CACHE_SIZE)
  bytes = sysconf(level == kL2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
#else
  (void)level;
#endif
  return bytes > 0 ? std::clamp(static_cast<std::size_t>(bytes), lo, hi) : none;
}

// A size with a test override: `set` where it is not 0, else Default(), computed once.
template <std::size_t (*Default)()>
std::size_t override_or(const std::atomic<std::size_t>& set) {
  const std::size_t bytes = set.load(std::memory_order_relaxed);
  if (bytes != 0) return bytes;
  static const std::size_t def = Default();
  return def;
}

// Passes whose tensors (inputs and outputs together) exceed the last-level cache write their
// output with non-temporal stores: through the cache it would first read every line
// (write-allocate), a third more traffic for normalize, and evict the inputs. Where they fit, the
// cache is faster — it serves the write-allocate reads, and the next layer reads the output from
// it. The limit is the L3 the system reports, at least 32 MiB and at most 64 MiB: this VM reports
// 480 MiB, but its share of that shared cache is smaller. Measured here (registry-entry driver,
// N×1024 NHWC float, 64-byte aligned buffers, medians of 20 calls, 2 alternating runs), streamed
// vs through the cache: normalize of 16.8 / 25.2 / 33.6 / 42 / 50 MB outputs 0.60 / 0.94 / 1.25
// / 1.60–1.61 / 1.89–1.91 ms vs 0.57 / 0.89–0.90 / 1.18–1.22 / 1.60–1.64 / 2.02–2.14; dx of
// 16.8 / 25.2 / 33.6 MB 0.92–0.93 / 1.46 / 1.92–1.96 vs 0.88 / 1.41 / 2.05–2.06. The crossover
// lies near 80 MB of tensors; the cap stays below it because the two mistakes cost differently:
// streaming a pass that would fit loses ~5%, writing a large one through the cache up to 2×
// (32×64×112×112 normalize 3.8 vs 6.5–7.0 ms). The rule before, outputs of 16 MiB or more, was
// set on a host with a 32 MiB L3, where this gives the same for normalize.
// On AMD the limit is the floor, 32 MiB: a Zen core fills only its core complex's L3 (16 MiB on
// Zen 2, 32 on Zen 3–5, 96 with 3D V-Cache), and a VM reports the whole package's (a Zen 5 host:
// 508 MiB, where ~32 MiB behaved as cache, doc/benchmarks.md). There, at 32 against 64 MiB
// (registry-entry driver, medians of 32 calls in blocks of 8 — the steady state of repeated calls,
// in which the streamed passes leave their inputs in the L3 —, 2 alternating runs): NHWC
// 32×1024×14×14 normalize 0.90–0.93 → 0.71 ms, 32×2048×7×7 dx 0.56–0.59 → 0.45–0.47, 4096×1024
// dx 0.83–0.96 → 0.70–0.73 (NCHW 0.96 → 0.72–0.73); NCHW 32×1024×14×14 normalize 0.54–0.64 →
// 0.54–0.68, dx 0.85–1.13 → 0.91–1.09, 32×2048×7×7 the same.
// (The CPU itself, not amd_cpu(): a test that forces the tunings must not change this default,
// which is computed once.)
bool cpuid_says_amd() {
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) == 0) return false;
  return ebx == 0x68747541 && edx == 0x69746e65 && ecx == 0x444d4163;  // "AuthenticAMD"
#else
  return false;
#endif
}
std::size_t default_stream_limit() {
  const std::size_t floor = std::size_t{32} << 20;
  if (cpuid_says_amd()) return floor;
  return reported_cache_bytes(kL3, floor, std::size_t{64} << 20, floor);
}
std::atomic<std::size_t> g_stream_limit{0};  // 0: default_stream_limit()
std::atomic<int> g_amd_cpu{-1};              // -1: the CPUID check; 0, 1: set_amd_cpu
}  // namespace

bool amd_cpu() {
  const int set = g_amd_cpu.load(std::memory_order_relaxed);
  if (set >= 0) return set != 0;
  static const bool amd = cpuid_says_amd();
  return amd;
}
void set_amd_cpu(int amd) { g_amd_cpu.store(amd, std::memory_order_relaxed); }

std::size_t stream_limit_bytes() { return override_or<default_stream_limit>(g_stream_limit); }
void set_stream_limit_bytes(std::size_t bytes) {
  g_stream_limit.store(bytes, std::memory_order_relaxed);
}

namespace {
// The L2 of a core as the system reports it, clamped to 256 KiB–2 MiB; 2 MiB, the largest, where
// it reports none (walk units are then as long as they were measured best on such an L2).
std::size_t default_l2_cache_bytes() {
  return reported_cache_bytes(kL2, std::size_t{256} << 10, std::size_t{2} << 20,
                              std::size_t{2} << 20);
}
std::atomic<std::size_t> g_l2_cache{0};  // 0: default_l2_cache_bytes()
}  // namespace

std::size_t l2_cache_bytes() { return override_or<default_l2_cache_bytes>(g_l2_cache); }
void set_l2_cache_bytes(std::size_t bytes) { g_l2_cache.store(bytes, std::memory_order_relaxed); }

std::string limit_simd(const std::string& name) {
  std::string names;
  for (const int64_t target : hwy::SupportedAndGeneratedTargets()) {
    if (name == hwy::TargetName(target)) {
      // Highway orders targets best first, by their bits: disable every lower bit.
      hwy::DisableTargets(HWY_TARGETS & (target - 1));
      return "";
    }
    names += fmt::format(" {}", hwy::TargetName(target));
  }
  return fmt::format(
      "BNORM_SIMD must name an instruction set this machine and build support:{}; "
      "got {}",
      names, name);
}

namespace {
// BNORM_SIMD, applied before the first dispatch: its error, or "" (valid or unset).
const std::string& simd_env_error() {
  static const std::string error = [] {
    const char* v = std::getenv("BNORM_SIMD");
    return v && *v ? limit_simd(v) : std::string();
  }();
  return error;
}
}  // namespace

void apply_simd_env() {
  if (const std::string& e = simd_env_error(); !e.empty()) throw ValueError(e);
}

void normalize_add_relu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                        const double* scale, const double* shift, void* y, uint8_t* mask) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(NormalizeAddRelu)(p, x, z, mean, scale, shift, y, mask);
}

void stats(const BatchNormProblem& p, const void* x, double* mean, double* var) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(Stats)(p, x, mean, var);
}
void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(Normalize)(p, x, mean, scale, shift, y);
}
void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                     const double* mean, double* sum_dy, double* sum_dy_xmu) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(BackwardReduce)(p, x, dy, mask, mean, sum_dy, sum_dy_xmu);
}
void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                 const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                 void* dx, void* g_out) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(BackwardDx)(p, x, dy, mask, mean, k_dy, k_xmu, k_const, dx, g_out);
}
bool forward_train_sweep(const BatchNormProblem& p, const void* x, double* mean, double* var,
                         ChannelCallback coeffs, const double* scale, const double* shift,
                         void* y) {
  apply_simd_env();
  return HWY_DYNAMIC_DISPATCH(ForwardTrainSweep)(p, x, mean, var, coeffs, scale, shift, y);
}
bool backward_sweep(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                    const double* mean, double* sum_dy, double* sum_dy_xmu, ChannelCallback coeffs,
                    const double* k_dy, const double* k_xmu, const double* k_const, void* dx,
                    void* g_out) {
  apply_simd_env();
  return HWY_DYNAMIC_DISPATCH(BackwardSweep)(p, x, dy, mask, mean, sum_dy, sum_dy_xmu, coeffs, k_dy,
                                             k_xmu, k_const, dx, g_out);
}
void normalize_infer(const BatchNormProblem& p, const void* x, const void* weight, const void* bias,
                     const void* running_mean, const void* running_var, double eps, void* y) {
  apply_simd_env();
  HWY_DYNAMIC_DISPATCH(NormalizeInfer)(p, x, weight, bias, running_mean, running_var, eps, y);
}
const char* target_name() {
  apply_simd_env();
  return HWY_DYNAMIC_DISPATCH(TargetName)();
}

}  // namespace bnorm::kernels::cpu_hwy
#endif  // HWY_ONCE
