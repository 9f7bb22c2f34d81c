// "cpu:hwy": the batch-norm kernels with Highway SIMD (compiled for every x86 target Highway
// knows, chosen at run time with HWY_DYNAMIC_DISPATCH), threads through parallel_for. Same
// blocks, slots and per-element operations as "cpu:blocked" (Note [Canonical reduction order]),
// so its results are bit-identical to it, to itself across thread counts, and across layouts;
// tests/kernels/batch_norm_impls_test.cc checks that. Per-element math is in double lanes:
// x is promoted, y demoted, never fused multiply-add (its rounding would differ from the scalar
// path). Variants: stats (one read of x: mean and m2 per cached block), normalize, backward
// reduce (Σdy and Σdy·(x − mean) in one sweep), backward dx.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/batch_norm_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// foreach_target must come first.
#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "bnorm/parallel.h"
#include "hwy/aligned_allocator.h"
#include "hwy/cache_control.h"
#include "hwy/highway.h"
#include "kernels/batch_norm_impls.h"
#include "kernels/reduction_order.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::cpu_hwy {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Up to 8 double lanes: 32 slots are then 4 vectors (AVX-512), 8 (AVX2) or 16 (SSE4).
using DD = hn::CappedTag<double, 8>;
using VD = hn::Vec<DD>;
constexpr int64_t kLanes = static_cast<int64_t>(hn::MaxLanes(DD()));
constexpr int64_t kGroups = kSlots / kLanes;
static_assert(kSlots % kLanes == 0, "slots must fill whole vectors");

// Channels per NHWC statistics work item: as many as keep one block (block positions × chunk
// channels) within 256 KiB, so the second sweep reads L2, between 16 (one cache line of floats;
// long blocks) and kMaxChunk (short blocks, e.g. 2-d input with N = 256: fewer, longer
// inner loops). The chunking does not change any result: each channel's order is fixed.
constexpr int64_t kMaxChunk = 64;
int64_t nhwc_chunk(int64_t block_elems, std::size_t elem_size) {
  const int64_t fit =
      (int64_t{256} << 10) / std::max<int64_t>(1, block_elems * static_cast<int64_t>(elem_size));
  return std::clamp<int64_t>(fit / 16 * 16, 16, kMaxChunk);
}
// Elements per elementwise chunk; see batch_norm_cpu_blocked.cc.
constexpr int64_t kElementwiseGrain = 32768;

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

// ---- statistics ---------------------------------------------------------------------------

// One NCHW block of channel c: sweep 1 adds x − k, sweep 2 adds (x − mean)², both in slot order.
template <typename T>
BlockMoments block_moments_nchw(const BatchNormProblem& p, const T* x, int64_t c,
                                const BlockRange& r) {
  const DD dd;
  const double k = static_cast<double>(x[(r.n0 * p.c + c) * p.hw + r.s0]);
  const double count = static_cast<double>((r.n1 - r.n0) * (r.s1 - r.s0));
  HWY_ALIGN double slots[kSlots];
  double m = 0;
  for (int pass = 0; pass < 2; ++pass) {
    const double shift = pass == 0 ? k : m;
    const VD vshift = hn::Set(dd, shift);
    std::fill(slots, slots + kSlots, 0.0);
    for (int64_t n = r.n0; n < r.n1; ++n) {
      const T* row = x + (n * p.c + c) * p.hw;
      VD acc[kGroups];
      for (int64_t g = 0; g < kGroups; ++g) acc[g] = hn::Load(dd, slots + g * kLanes);
      int64_t s = r.s0;
      for (; s + kSlots <= r.s1; s += kSlots) {
        for (int64_t g = 0; g < kGroups; ++g) {
          const VD d = hn::Sub(load_d(dd, row + s + g * kLanes), vshift);
          acc[g] = hn::Add(acc[g], pass == 0 ? d : hn::Mul(d, d));
        }
      }
      for (int64_t g = 0; g < kGroups; ++g) hn::Store(acc[g], dd, slots + g * kLanes);
      for (; s < r.s1; ++s) {
        const double d = static_cast<double>(row[s]) - shift;
        slots[slot_of(p.hw, n - r.n0, s)] += pass == 0 ? d : d * d;
      }
    }
    if (pass == 0) m = k + sum_slots(slots) / count;
  }
  return {count, m, sum_slots(slots)};
}

// One sweep of an NHWC block over channels [0, cw) of `x` (already offset to the chunk): adds
// x − shift (Square = false) or (x − shift)² into 32 slot rows of `acc` (stride kMaxChunk).
// Slot accumulators an NHWC sweep keeps in registers at once: 16 of the 32 with 32 vector
// registers (AVX-512), 8 with 16 (AVX2, SSE4). Each slot's own sequence stays in ascending
// (n, s) order whichever slots are processed together, so the result is the canonical one.
constexpr int64_t kRegSlots = kLanes >= 8 ? 16 : 8;

// Adds f(x) for positions [p0, p0 + len) whose slots are k mod 32 (k = 0, 1, …), for the slots
// [h, h + kRegSlots), for one channel vector at x + i: register-resident accumulators `a`.
template <bool Square, typename T>
HWY_INLINE void nhwc_run(const T* HWY_RESTRICT x, int64_t c, int64_t p0, int64_t len, int64_t h,
                         VD sh, VD* HWY_RESTRICT a) {
  const DD dd;
  int64_t base = 0;
  for (; base + kSlots <= len; base += kSlots) {
    const T* HWY_RESTRICT px = x + (p0 + base + h) * c;
    HWY_UNROLL(1)
    for (int64_t j = 0; j < kRegSlots; ++j) {
      const VD d = hn::Sub(load_d(dd, px + j * c), sh);
      a[j] = hn::Add(a[j], Square ? hn::Mul(d, d) : d);
    }
  }
  for (int64_t j = 0; j < kRegSlots && base + h + j < len; ++j) {
    const VD d = hn::Sub(load_d(dd, x + (p0 + base + h + j) * c), sh);
    a[j] = hn::Add(a[j], Square ? hn::Mul(d, d) : d);
  }
}

// One sweep of an NHWC block over channels [0, cw) of `x` (already offset to the chunk): adds
// x − shift (Square = false) or (x − shift)² into the 32 slot rows of `acc` (stride kMaxChunk).
// Positions come in runs whose slots count up from 0 (see slot_of): the whole block when HW < 32
// (its rows are contiguous in NHWC), else each row segment.
template <bool Square, typename T>
HWY_NOINLINE void nhwc_sweep(const T* HWY_RESTRICT x, int64_t c, int64_t hw, int64_t cw,
                             const BlockRange r, const double* HWY_RESTRICT shift,
                             double* HWY_RESTRICT acc) {
  const DD dd;
  const int64_t cv = cw / kLanes * kLanes;
  // Register accumulators walk the block once per channel vector and slot group: a win for
  // short rows (C ≤ 64, or C ≤ 256 with HW < 32: conv1 0.44 → 0.72 of the fastest peer,
  // mlp.tall 11.3 → 7.0 ms), a loss for long ones (layer4, C = 2048: 1.2 → 2.5 ms), where each
  // walk strides 8 KiB per position; there one pass with L1-resident accumulators is faster.
  // Both give the same bits (the same order per slot).
  const bool registers = c <= 64 || (hw < kSlots && c <= 256);
  if (!registers) {
    std::fill(acc, acc + kSlots * kMaxChunk, 0.0);
    for (int64_t n = r.n0; n < r.n1; ++n) {
      for (int64_t s = r.s0; s < r.s1; ++s) {
        const T* HWY_RESTRICT row = x + (n * hw + s) * c;
        double* HWY_RESTRICT a = acc + slot_of(hw, n - r.n0, s) * kMaxChunk;
        for (int64_t i = 0; i < cv; i += kLanes) {
          const VD d = hn::Sub(load_d(dd, row + i), hn::Load(dd, shift + i));
          hn::Store(hn::Add(hn::Load(dd, a + i), Square ? hn::Mul(d, d) : d), dd, a + i);
        }
        for (int64_t i = cv; i < cw; ++i) {
          const double d = static_cast<double>(row[i]) - shift[i];
          a[i] += Square ? d * d : d;
        }
      }
    }
    return;
  }
  for (int64_t h = 0; h < kSlots; h += kRegSlots) {
    for (int64_t i = 0; i < cv; i += kLanes) {
      VD a[kRegSlots];
      for (int64_t j = 0; j < kRegSlots; ++j) a[j] = hn::Zero(dd);
      const VD sh = hn::Load(dd, shift + i);
      if (hw < kSlots) {
        nhwc_run<Square>(x + i, c, r.n0 * hw, (r.n1 - r.n0) * hw, h, sh, a);
      } else {
        for (int64_t n = r.n0; n < r.n1; ++n)
          nhwc_run<Square>(x + i, c, n * hw + r.s0, r.s1 - r.s0, h, sh, a);
      }
      for (int64_t j = 0; j < kRegSlots; ++j) hn::Store(a[j], dd, acc + (h + j) * kMaxChunk + i);
    }
  }
  if (cv == cw) return;
  // Channels past the last full vector: one scalar accumulator per slot, in memory.
  for (int64_t j = 0; j < kSlots; ++j)
    std::fill(acc + j * kMaxChunk + cv, acc + j * kMaxChunk + cw, 0.0);
  for (int64_t n = r.n0; n < r.n1; ++n) {
    for (int64_t s = r.s0; s < r.s1; ++s) {
      const T* HWY_RESTRICT row = x + (n * hw + s) * c;
      double* HWY_RESTRICT a = acc + slot_of(hw, n - r.n0, s) * kMaxChunk;
      for (int64_t i = cv; i < cw; ++i) {
        const double d = static_cast<double>(row[i]) - shift[i];
        a[i] += Square ? d * d : d;
      }
    }
  }
}

// One NHWC block for channels [c0, c0 + cw): sweep 1 for the block means, sweep 2 for m2.
template <typename T>
void block_moments_nhwc(const BatchNormProblem& p, const T* x, int64_t c0, int64_t cw,
                        const BlockRange& r, double* acc, BlockMoments* out) {
  HWY_ALIGN double shift[kMaxChunk] = {};
  for (int64_t i = 0; i < cw; ++i)
    shift[i] = static_cast<double>(x[(r.n0 * p.hw + r.s0) * p.c + c0 + i]);
  const double count = static_cast<double>((r.n1 - r.n0) * (r.s1 - r.s0));
  double slots[kSlots];
  nhwc_sweep<false>(x + c0, p.c, p.hw, cw, r, shift, acc);
  for (int64_t i = 0; i < cw; ++i) {
    for (int64_t j = 0; j < kSlots; ++j) slots[j] = acc[j * kMaxChunk + i];
    shift[i] = shift[i] + sum_slots(slots) / count;  // the block mean, shift of sweep 2
  }
  nhwc_sweep<true>(x + c0, p.c, p.hw, cw, r, shift, acc);
  for (int64_t i = 0; i < cw; ++i) {
    for (int64_t j = 0; j < kSlots; ++j) slots[j] = acc[j * kMaxChunk + i];
    out[i] = {count, shift[i], sum_slots(slots)};
  }
}

template <typename T>
void stats_t(const BatchNormProblem& p, const T* x, double* mean, double* var) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  std::vector<BlockMoments> blocks(static_cast<std::size_t>(p.c * nb));
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / plan.block_elems(p.hw));
    parallel_for(0, p.c * nb, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c = item / nb, b = item % nb;
        blocks[c * nb + b] = block_moments_nchw(p, x, c, plan.range(b, p.hw));
      }
    });
  } else {
    const int64_t chunk = nhwc_chunk(plan.block_elems(p.hw), sizeof(T));
    const int64_t chunks = (p.c + chunk - 1) / chunk;
    parallel_for(0, nb * chunks, 1, [&](int64_t i0, int64_t i1) {
      auto acc = hwy::AllocateAligned<double>(kSlots * kMaxChunk);
      BlockMoments out[kMaxChunk];
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t b = item / chunks, c0 = (item % chunks) * chunk;
        const int64_t cw = std::min(chunk, p.c - c0);
        block_moments_nhwc(p, x, c0, cw, plan.range(b, p.hw), acc.get(), out);
        for (int64_t i = 0; i < cw; ++i) blocks[(c0 + i) * nb + b] = out[i];
      }
    });
  }
  for (int64_t c = 0; c < p.c; ++c) {
    const BlockMoments all = merge_moments(blocks.data() + c * nb, nb);
    mean[c] = all.mean;
    var[c] = all.m2 / all.count;
  }
}

// ---- backward reduction: Σdy and Σdy·(x − mean), one sweep -------------------------------

template <typename T>
void backward_reduce_t(const BatchNormProblem& p, const T* x, const T* dy, const double* mean,
                       double* sum_dy, double* sum_dy_xmu) {
  const DD dd;
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  std::vector<double> partial(static_cast<std::size_t>(p.c * nb * 2));
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / plan.block_elems(p.hw));
    parallel_for(0, p.c * nb, grain, [&](int64_t i0, int64_t i1) {
      HWY_ALIGN double s0[kSlots], s1[kSlots];
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c = item / nb, b = item % nb;
        const BlockRange r = plan.range(b, p.hw);
        const VD vm = hn::Set(dd, mean[c]);
        std::fill(s0, s0 + kSlots, 0.0);
        std::fill(s1, s1 + kSlots, 0.0);
        for (int64_t n = r.n0; n < r.n1; ++n) {
          const T* xr = x + (n * p.c + c) * p.hw;
          const T* gr = dy + (n * p.c + c) * p.hw;
          VD a0[kGroups], a1[kGroups];
          for (int64_t g = 0; g < kGroups; ++g) {
            a0[g] = hn::Load(dd, s0 + g * kLanes);
            a1[g] = hn::Load(dd, s1 + g * kLanes);
          }
          int64_t s = r.s0;
          for (; s + kSlots <= r.s1; s += kSlots) {
            for (int64_t g = 0; g < kGroups; ++g) {
              const VD gv = load_d(dd, gr + s + g * kLanes);
              a0[g] = hn::Add(a0[g], gv);
              a1[g] = hn::Add(a1[g], hn::Mul(gv, hn::Sub(load_d(dd, xr + s + g * kLanes), vm)));
            }
          }
          for (int64_t g = 0; g < kGroups; ++g) {
            hn::Store(a0[g], dd, s0 + g * kLanes);
            hn::Store(a1[g], dd, s1 + g * kLanes);
          }
          for (; s < r.s1; ++s) {
            const double gv = static_cast<double>(gr[s]);
            s0[slot_of(p.hw, n - r.n0, s)] += gv;
            s1[slot_of(p.hw, n - r.n0, s)] += gv * (static_cast<double>(xr[s]) - mean[c]);
          }
        }
        partial[(c * nb + b) * 2] = sum_slots(s0);
        partial[(c * nb + b) * 2 + 1] = sum_slots(s1);
      }
    });
  } else {
    constexpr int64_t kChunk = 64;  // 2 sums × 32 slots × 64 channels × 8 B = 32 KiB
    const int64_t chunks = (p.c + kChunk - 1) / kChunk;
    parallel_for(0, nb * chunks, 1, [&](int64_t i0, int64_t i1) {
      auto acc = hwy::AllocateAligned<double>(2 * kSlots * kChunk);
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t b = item / chunks, c0 = (item % chunks) * kChunk;
        const int64_t cw = std::min(kChunk, p.c - c0), cv = cw / kLanes * kLanes;
        const BlockRange r = plan.range(b, p.hw);
        std::fill(acc.get(), acc.get() + 2 * kSlots * kChunk, 0.0);
        for (int64_t n = r.n0; n < r.n1; ++n) {
          for (int64_t s = r.s0; s < r.s1; ++s) {
            const int64_t base = (n * p.hw + s) * p.c + c0;
            double* a0 = acc.get() + (slot_of(p.hw, n - r.n0, s)) * kChunk;
            double* a1 = a0 + kSlots * kChunk;
            for (int64_t i = 0; i < cv; i += kLanes) {
              const VD gv = load_d(dd, dy + base + i);
              const VD d = hn::Sub(load_d(dd, x + base + i), hn::LoadU(dd, mean + c0 + i));
              hn::Store(hn::Add(hn::Load(dd, a0 + i), gv), dd, a0 + i);
              hn::Store(hn::Add(hn::Load(dd, a1 + i), hn::Mul(gv, d)), dd, a1 + i);
            }
            for (int64_t i = cv; i < cw; ++i) {
              const double gv = static_cast<double>(dy[base + i]);
              a0[i] += gv;
              a1[i] += gv * (static_cast<double>(x[base + i]) - mean[c0 + i]);
            }
          }
        }
        for (int64_t i = 0; i < cw; ++i) {
          for (int j = 0; j < 2; ++j) {
            double slots[kSlots];
            for (int64_t k = 0; k < kSlots; ++k) slots[k] = acc[(j * kSlots + k) * kChunk + i];
            partial[((c0 + i) * nb + b) * 2 + j] = sum_slots(slots);
          }
        }
      }
    });
  }
  std::vector<double> v(static_cast<std::size_t>(nb));
  for (int64_t c = 0; c < p.c; ++c) {
    for (int j = 0; j < 2; ++j) {
      for (int64_t b = 0; b < nb; ++b) v[b] = partial[(c * nb + b) * 2 + j];
      (j == 0 ? sum_dy : sum_dy_xmu)[c] = sum_blocks(v.data(), nb);
    }
  }
}

// ---- elementwise: normalize and dx ----------------------------------------------------------

// One NCHW plane (HW elements of channel c) or one NHWC row (C elements): out = (x − m)·k1 + k2
// (normalize) or out = (k1·g + k2·(x − m)) + k3 (dx), the scalar kernels' association. Pointers
// come by value so the compiler keeps them in registers (captured by reference, it reloaded them
// after every store: 3× slower).
template <bool Dx, bool PerLane, bool Stream, typename T>
HWY_INLINE void elementwise_run(const T* HWY_RESTRICT x, const T* HWY_RESTRICT dy,
                                const double* HWY_RESTRICT m, const double* HWY_RESTRICT k1,
                                const double* HWY_RESTRICT k2, const double* HWY_RESTRICT k3,
                                T* HWY_RESTRICT out, int64_t len) {
  const DD dd;
  const hn::Rebind<T, DD> dt;
  auto scalar = [&](int64_t i) {
    const int64_t c = PerLane ? i : 0;
    const double xv = static_cast<double>(x[i]);
    if constexpr (Dx) {
      out[i] = static_cast<T>(k1[c] * static_cast<double>(dy[i]) + k2[c] * (xv - m[c]) + k3[c]);
    } else {
      out[i] = static_cast<T>((xv - m[c]) * k1[c] + k2[c]);
    }
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
    const VD vm = PerLane ? hn::LoadU(dd, m + i) : bm;
    const VD v1 = PerLane ? hn::LoadU(dd, k1 + i) : b1;
    const VD v2 = PerLane ? hn::LoadU(dd, k2 + i) : b2;
    const VD xv = load_d(dd, x + i);
    VD r;
    if constexpr (Dx) {
      const VD v3 = PerLane ? hn::LoadU(dd, k3 + i) : b3;
      r = hn::Add(hn::Add(hn::Mul(v1, load_d(dd, dy + i)), hn::Mul(v2, hn::Sub(xv, vm))), v3);
    } else {
      r = hn::Add(hn::Mul(hn::Sub(xv, vm), v1), v2);
    }
    if constexpr (Stream) {
      if constexpr (sizeof(T) == 4) {
        hn::Stream(hn::DemoteTo(dt, r), dt, out + i);
      } else {
        hn::Stream(r, dd, out + i);
      }
    } else {
      store_d(dd, r, out + i);
    }
  }
  for (; i < len; ++i) scalar(i);
}

// Outputs at least this large bypass the caches with non-temporal stores: writing them through
// the cache would first read every line (write-allocate), a third more traffic for normalize.
constexpr std::size_t kStreamBytes = std::size_t{16} << 20;

// Calls run(per_lane, base, ch, len) for every NCHW plane (per_lane = std::false_type, ch = the
// plane's channel, len = HW) or NHWC row (std::true_type, ch = 0, len = C), in parallel; with
// Flush, each thread fences its non-temporal stores at the end of its chunk.
template <bool Flush = false, typename Run>
void for_each_run(const BatchNormProblem& p, Run run) {
  const int64_t c = p.c, hw = p.hw;
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(hw, 1));
    parallel_for(0, p.n * c, grain, [=](int64_t i0, int64_t i1) {
      for (int64_t plane = i0; plane < i1; ++plane)
        run(std::false_type{}, plane * hw, plane % c, hw);
      if (Flush) hwy::FlushStream();
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(c, 1));
    parallel_for(0, p.n * hw, grain, [=](int64_t i0, int64_t i1) {
      for (int64_t rw = i0; rw < i1; ++rw) run(std::true_type{}, rw * c, int64_t{0}, c);
      if (Flush) hwy::FlushStream();
    });
  }
}

template <bool Dx, bool Stream, typename T>
void elementwise_layout(const BatchNormProblem& p, const T* x, const T* dy, const double* m,
                        const double* k1, const double* k2, const double* k3, T* out) {
  for_each_run<Stream>(p, [=](auto per_lane, int64_t base, int64_t ch, int64_t len) {
    elementwise_run<Dx, decltype(per_lane)::value, Stream>(x + base, Dx ? dy + base : nullptr,
                                                           m + ch, k1 + ch, k2 + ch,
                                                           Dx ? k3 + ch : nullptr, out + base, len);
  });
}

template <bool Dx, typename T>
void elementwise_t(const BatchNormProblem& p, const T* x, const T* dy, const double* m,
                   const double* k1, const double* k2, const double* k3, T* out) {
  const std::size_t bytes = static_cast<std::size_t>(p.n * p.c * p.hw) * sizeof(T);
  // In place (out == x or dy) the lines are in cache anyway after the read: no streaming.
  const bool in_place = out == x || (Dx && out == dy);
  if (bytes >= kStreamBytes && !in_place) {
    elementwise_layout<Dx, true>(p, x, dy, m, k1, k2, k3, out);
  } else {
    elementwise_layout<Dx, false>(p, x, dy, m, k1, k2, k3, out);
  }
}

// The fused epilogue of BN (+ Add) + ReLU over one NCHW plane or NHWC row; see
// NormalizeAddReluFn. Same association as the reference: ((x − m)·k1 + k2) + z.
template <bool PerLane, typename T>
HWY_INLINE void add_relu_run(const T* HWY_RESTRICT x, const T* HWY_RESTRICT z,
                             const double* HWY_RESTRICT m, const double* HWY_RESTRICT k1,
                             const double* HWY_RESTRICT k2, T* HWY_RESTRICT out,
                             uint8_t* HWY_RESTRICT mask, int64_t len) {
  const DD dd;
  const hn::Rebind<int32_t, DD> di;
  const hn::Rebind<uint8_t, DD> du8;
  const VD zero = hn::Zero(dd), one = hn::Set(dd, 1.0);
  const VD bm = hn::Set(dd, PerLane ? 0.0 : m[0]), b1 = hn::Set(dd, PerLane ? 0.0 : k1[0]);
  const VD b2 = hn::Set(dd, PerLane ? 0.0 : k2[0]);
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    const VD vm = PerLane ? hn::LoadU(dd, m + i) : bm;
    const VD v1 = PerLane ? hn::LoadU(dd, k1 + i) : b1;
    const VD v2 = PerLane ? hn::LoadU(dd, k2 + i) : b2;
    VD r = hn::Add(hn::Mul(hn::Sub(load_d(dd, x + i), vm), v1), v2);
    if (z) r = hn::Add(r, load_d(dd, z + i));
    // 1.0/0.0 → int32 → uint8: the mask bytes of kLanes elements in one store.
    const auto bits = hn::DemoteTo(di, hn::IfThenElseZero(hn::Gt(r, zero), one));
    hn::StoreU(hn::DemoteTo(du8, bits), du8, mask + i);
    store_d(dd, hn::IfThenZeroElse(hn::Le(r, zero), r), out + i);  // NaN stays NaN, as relu
  }
  for (; i < len; ++i) {
    const int64_t c = PerLane ? i : 0;
    double r = (static_cast<double>(x[i]) - m[c]) * k1[c] + k2[c];
    if (z) r += static_cast<double>(z[i]);
    mask[i] = r > 0;
    out[i] = static_cast<T>(r <= 0 ? 0.0 : r);
  }
}

template <typename T>
void normalize_add_relu_t(const BatchNormProblem& p, const T* x, const T* z, const double* m,
                          const double* k1, const double* k2, T* out, uint8_t* mask) {
  for_each_run(p, [=](auto per_lane, int64_t base, int64_t ch, int64_t len) {
    add_relu_run<decltype(per_lane)::value>(x + base, z ? z + base : nullptr, m + ch, k1 + ch,
                                            k2 + ch, out + base, mask + base, len);
  });
}

void NormalizeAddRelu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                      const double* scale, const double* shift, void* y, uint8_t* mask) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    normalize_add_relu_t(p, static_cast<const T*>(x), static_cast<const T*>(z), mean, scale, shift,
                         static_cast<T*>(y), mask);
  });
}

void Stats(const BatchNormProblem& p, const void* x, double* mean, double* var) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    stats_t(p, static_cast<const T*>(x), mean, var);
  });
}

void Normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise_t<false>(p, static_cast<const T*>(x), static_cast<const T*>(nullptr), mean, scale,
                         shift, nullptr, static_cast<T*>(y));
  });
}

void BackwardReduce(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                    double* sum_dy, double* sum_dy_xmu) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    backward_reduce_t(p, static_cast<const T*>(x), static_cast<const T*>(dy), mean, sum_dy,
                      sum_dy_xmu);
  });
}

void BackwardDx(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                const double* k_dy, const double* k_xmu, const double* k_const, void* dx) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise_t<true>(p, static_cast<const T*>(x), static_cast<const T*>(dy), mean, k_dy, k_xmu,
                        k_const, static_cast<T*>(dx));
  });
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

void normalize_add_relu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                        const double* scale, const double* shift, void* y, uint8_t* mask) {
  HWY_DYNAMIC_DISPATCH(NormalizeAddRelu)(p, x, z, mean, scale, shift, y, mask);
}

void stats(const BatchNormProblem& p, const void* x, double* mean, double* var) {
  HWY_DYNAMIC_DISPATCH(Stats)(p, x, mean, var);
}
void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  HWY_DYNAMIC_DISPATCH(Normalize)(p, x, mean, scale, shift, y);
}
void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                     double* sum_dy, double* sum_dy_xmu) {
  HWY_DYNAMIC_DISPATCH(BackwardReduce)(p, x, dy, mean, sum_dy, sum_dy_xmu);
}
void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                 const double* k_dy, const double* k_xmu, const double* k_const, void* dx) {
  HWY_DYNAMIC_DISPATCH(BackwardDx)(p, x, dy, mean, k_dy, k_xmu, k_const, dx);
}
const char* target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

}  // namespace bnorm::kernels::cpu_hwy
#endif  // HWY_ONCE
