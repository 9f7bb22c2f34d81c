// "cpu:blocked": portable C++ batch-norm kernels, threaded through parallel_for, with every
// reduction in the canonical order of Note [Canonical reduction order], so the results are
// bit-identical for any thread count and for NCHW vs NHWC. Per-element math is in double.
// Checked against the reference by tests/kernels/batch_norm_impls_test.cc; determinism by
// tests/functional/batch_norm_determinism_test.cc.
#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "bnorm/parallel.h"
#include "kernels/batch_norm_impls.h"
#include "kernels/reduction_order.h"

namespace bnorm::kernels::cpu_blocked {

namespace {

// Channels per NHWC work item: a block of 1024 positions × 16 float channels is 64 KiB, so the
// statistics' second sweep over it hits L2; 16 floats are one cache line per row.
constexpr int64_t kChannelChunk = 16;
// Elements per parallel_for chunk of the elementwise passes: ~128 KiB of float, enough to amortize
// the scheduling, small enough that 2–16 threads all get work on a 1 MB tensor.
constexpr int64_t kElementwiseGrain = 32768;

// Computes K per-channel sums of f(c, x, dy) in the canonical order; out[j][c] receives sum j.
// f(c, xv, dyv, v) writes its K terms into v (doubles). dy may be null when f ignores it.
template <int K, typename T, typename F>
void channel_sums(const BatchNormProblem& p, const T* x, const T* dy, F f,
                  std::array<double*, K> out) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  std::vector<double> partial(static_cast<std::size_t>(p.c * nb * K));
  if (p.layout == Layout::kNCHW) {
    const int64_t items = p.c * nb;
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / plan.block_elems(p.hw));
    parallel_for(0, items, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t c = item / nb, b = item % nb;
        BlockRange r = plan.range(b, p.hw);
        double acc[K][kSlots] = {};
        double v[K];
        for (int64_t n = r.n0; n < r.n1; ++n) {
          const int64_t base = (n * p.c + c) * p.hw;
          const T* xr = x + base;
          const T* dyr = dy ? dy + base : nullptr;
          int64_t s = r.s0;
          for (; s + kSlots <= r.s1; s += kSlots) {
            for (int k = 0; k < kSlots; ++k) {
              f(c, static_cast<double>(xr[s + k]), dyr ? static_cast<double>(dyr[s + k]) : 0.0, v);
              for (int j = 0; j < K; ++j) acc[j][k] += v[j];
            }
          }
          for (; s < r.s1; ++s) {
            f(c, static_cast<double>(xr[s]), dyr ? static_cast<double>(dyr[s]) : 0.0, v);
            for (int j = 0; j < K; ++j) acc[j][slot_of(p.hw, n - r.n0, s)] += v[j];
          }
        }
        for (int j = 0; j < K; ++j) partial[(c * nb + b) * K + j] = sum_slots(acc[j]);
      }
    });
  } else {
    const int64_t chunks = (p.c + kChannelChunk - 1) / kChannelChunk;
    const int64_t items = nb * chunks;
    parallel_for(0, items, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> acc_buf(static_cast<std::size_t>(K * kSlots * kChannelChunk));
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t b = item / chunks, ch = item % chunks;
        const int64_t c0 = ch * kChannelChunk, cw = std::min(kChannelChunk, p.c - c0);
        BlockRange r = plan.range(b, p.hw);
        std::fill(acc_buf.begin(), acc_buf.end(), 0.0);
        double v[K];
        for (int64_t n = r.n0; n < r.n1; ++n) {
          for (int64_t s = r.s0; s < r.s1; ++s) {
            const int64_t base = (n * p.hw + s) * p.c + c0;
            const T* xr = x + base;
            const T* dyr = dy ? dy + base : nullptr;
            double* acc = acc_buf.data() + (slot_of(p.hw, n - r.n0, s)) * kChannelChunk;
            for (int64_t i = 0; i < cw; ++i) {
              f(c0 + i, static_cast<double>(xr[i]), dyr ? static_cast<double>(dyr[i]) : 0.0, v);
              for (int j = 0; j < K; ++j) acc[j * kSlots * kChannelChunk + i] += v[j];
            }
          }
        }
        for (int64_t i = 0; i < cw; ++i) {
          for (int j = 0; j < K; ++j) {
            double slots[kSlots];
            for (int k = 0; k < kSlots; ++k)
              slots[k] = acc_buf[(j * kSlots + k) * kChannelChunk + i];
            partial[((c0 + i) * nb + b) * K + j] = sum_slots(slots);
          }
        }
      }
    });
  }
  std::vector<double> blocks(static_cast<std::size_t>(nb));
  for (int64_t c = 0; c < p.c; ++c) {
    for (int j = 0; j < K; ++j) {
      for (int64_t b = 0; b < nb; ++b) blocks[b] = partial[(c * nb + b) * K + j];
      out[j][c] = sum_blocks(blocks.data(), nb);
    }
  }
}

// Calls g(c, xv, dyv) -> double for every element and stores the result cast to T into out;
// parallel over planes (NCHW) or rows (NHWC).
template <typename T, typename G>
void elementwise(const BatchNormProblem& p, const T* x, const T* dy, T* out, G g) {
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(p.hw, 1));
    parallel_for(0, p.n * p.c, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t plane = i0; plane < i1; ++plane) {
        const int64_t c = plane % p.c;
        const int64_t base = plane * p.hw;
        for (int64_t s = 0; s < p.hw; ++s) {
          out[base + s] = static_cast<T>(
              g(c, static_cast<double>(x[base + s]), dy ? static_cast<double>(dy[base + s]) : 0.0));
        }
      }
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(p.c, 1));
    parallel_for(0, p.n * p.hw, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t row = i0; row < i1; ++row) {
        const int64_t base = row * p.c;
        for (int64_t c = 0; c < p.c; ++c) {
          out[base + c] = static_cast<T>(
              g(c, static_cast<double>(x[base + c]), dy ? static_cast<double>(dy[base + c]) : 0.0));
        }
      }
    });
  }
}

// Per block: mean by a shifted sum, then m2 over the same (cached) block; blocks merged by
// merge_moments. See Note [Canonical reduction order].
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
        const BlockRange r = plan.range(b, p.hw);
        const double k = static_cast<double>(x[(r.n0 * p.c + c) * p.hw + r.s0]);
        double acc[kSlots] = {};
        for (int64_t n = r.n0; n < r.n1; ++n) {
          const T* row = x + (n * p.c + c) * p.hw;
          for (int64_t s = r.s0; s < r.s1; ++s)
            acc[slot_of(p.hw, n - r.n0, s)] += static_cast<double>(row[s]) - k;
        }
        const double count = static_cast<double>((r.n1 - r.n0) * (r.s1 - r.s0));
        const double m = k + sum_slots(acc) / count;
        double sq[kSlots] = {};
        for (int64_t n = r.n0; n < r.n1; ++n) {
          const T* row = x + (n * p.c + c) * p.hw;
          for (int64_t s = r.s0; s < r.s1; ++s) {
            const double d = static_cast<double>(row[s]) - m;
            sq[slot_of(p.hw, n - r.n0, s)] += d * d;
          }
        }
        blocks[c * nb + b] = {count, m, sum_slots(sq)};
      }
    });
  } else {
    const int64_t chunks = (p.c + kChannelChunk - 1) / kChannelChunk;
    parallel_for(0, nb * chunks, 1, [&](int64_t i0, int64_t i1) {
      std::vector<double> acc(static_cast<std::size_t>(kSlots * kChannelChunk));
      double k[kChannelChunk], m[kChannelChunk];
      for (int64_t item = i0; item < i1; ++item) {
        const int64_t b = item / chunks, c0 = (item % chunks) * kChannelChunk;
        const int64_t cw = std::min(kChannelChunk, p.c - c0);
        const BlockRange r = plan.range(b, p.hw);
        for (int64_t i = 0; i < cw; ++i)
          k[i] = static_cast<double>(x[(r.n0 * p.hw + r.s0) * p.c + c0 + i]);
        const double count = static_cast<double>((r.n1 - r.n0) * (r.s1 - r.s0));
        for (int pass = 0; pass < 2; ++pass) {
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t n = r.n0; n < r.n1; ++n) {
            for (int64_t s = r.s0; s < r.s1; ++s) {
              const T* row = x + (n * p.hw + s) * p.c + c0;
              double* a = acc.data() + (slot_of(p.hw, n - r.n0, s)) * kChannelChunk;
              if (pass == 0) {
                for (int64_t i = 0; i < cw; ++i) a[i] += static_cast<double>(row[i]) - k[i];
              } else {
                for (int64_t i = 0; i < cw; ++i) {
                  const double d = static_cast<double>(row[i]) - m[i];
                  a[i] += d * d;
                }
              }
            }
          }
          for (int64_t i = 0; i < cw; ++i) {
            double slots[kSlots];
            for (int j = 0; j < kSlots; ++j) slots[j] = acc[j * kChannelChunk + i];
            if (pass == 0) {
              m[i] = k[i] + sum_slots(slots) / count;
            } else {
              blocks[(c0 + i) * nb + b] = {count, m[i], sum_slots(slots)};
            }
          }
        }
      }
    });
  }
  for (int64_t c = 0; c < p.c; ++c) {
    const BlockMoments all = merge_moments(blocks.data() + c * nb, nb);
    mean[c] = all.mean;
    var[c] = all.m2 / all.count;
  }
}

template <typename T>
void backward_reduce_t(const BatchNormProblem& p, const T* x, const T* dy, const double* mean,
                       double* sum_dy, double* sum_dy_xmu) {
  channel_sums<2>(
      p, x, dy,
      [mean](int64_t c, double xv, double dyv, double* v) {
        v[0] = dyv;
        v[1] = dyv * (xv - mean[c]);
      },
      std::array<double*, 2>{sum_dy, sum_dy_xmu});
}

}  // namespace

void stats(const BatchNormProblem& p, const void* x, double* mean, double* var) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    stats_t(p, static_cast<const T*>(x), mean, var);
  });
}

void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise(p, static_cast<const T*>(x), static_cast<const T*>(nullptr), static_cast<T*>(y),
                [=](int64_t c, double xv, double) { return (xv - mean[c]) * scale[c] + shift[c]; });
  });
}

void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                     double* sum_dy, double* sum_dy_xmu) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    backward_reduce_t(p, static_cast<const T*>(x), static_cast<const T*>(dy), mean, sum_dy,
                      sum_dy_xmu);
  });
}

void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                 const double* k_dy, const double* k_xmu, const double* k_const, void* dx) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise(p, static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx),
                [=](int64_t c, double xv, double dyv) {
                  return k_dy[c] * dyv + k_xmu[c] * (xv - mean[c]) + k_const[c];
                });
  });
}

}  // namespace bnorm::kernels::cpu_blocked
