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

// Channels per NHWC work item: 64 doubles per slot and sum keep the accumulators (K·8·64·8 bytes
// = 8 KiB for K = 2) in L1 while a row of x streams past.
constexpr int64_t kChannelChunk = 64;
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
            for (int j = 0; j < K; ++j) acc[j][s & (kSlots - 1)] += v[j];
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
            double* acc = acc_buf.data() + (s & (kSlots - 1)) * kChannelChunk;
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

// Two passes. The first sums x − K with K the channel's first element (the "shifted data"
// algorithm): a constant channel then sums exact zeros and gets mean == K exactly, for any value
// and dtype; and the sum's magnitude no longer grows with |mean|. K is element (0, c, 0) in both
// layouts, so the result stays layout-independent.
template <typename T>
void stats_t(const BatchNormProblem& p, const T* x, double* mean, double* var) {
  const double count = static_cast<double>(p.n * p.hw);
  std::vector<double> shift(static_cast<std::size_t>(p.c));
  for (int64_t c = 0; c < p.c; ++c) {
    shift[c] = static_cast<double>(p.layout == Layout::kNCHW ? x[c * p.hw] : x[c]);
  }
  const double* k = shift.data();
  channel_sums<1>(
      p, x, static_cast<const T*>(nullptr),
      [k](int64_t c, double xv, double, double* v) { v[0] = xv - k[c]; },
      std::array<double*, 1>{mean});
  for (int64_t c = 0; c < p.c; ++c) mean[c] = k[c] + mean[c] / count;
  channel_sums<1>(
      p, x, static_cast<const T*>(nullptr),
      [mean](int64_t c, double xv, double, double* v) {
        const double d = xv - mean[c];
        v[0] = d * d;
      },
      std::array<double*, 1>{var});
  for (int64_t c = 0; c < p.c; ++c) var[c] /= count;
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
  if (p.dtype == DType::kFloat32) {
    stats_t(p, static_cast<const float*>(x), mean, var);
  } else {
    stats_t(p, static_cast<const double*>(x), mean, var);
  }
}

void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y) {
  auto g = [=](int64_t c, double xv, double) { return (xv - mean[c]) * scale[c] + shift[c]; };
  if (p.dtype == DType::kFloat32) {
    elementwise(p, static_cast<const float*>(x), static_cast<const float*>(nullptr),
                static_cast<float*>(y), g);
  } else {
    elementwise(p, static_cast<const double*>(x), static_cast<const double*>(nullptr),
                static_cast<double*>(y), g);
  }
}

void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                     double* sum_dy, double* sum_dy_xmu) {
  if (p.dtype == DType::kFloat32) {
    backward_reduce_t(p, static_cast<const float*>(x), static_cast<const float*>(dy), mean, sum_dy,
                      sum_dy_xmu);
  } else {
    backward_reduce_t(p, static_cast<const double*>(x), static_cast<const double*>(dy), mean,
                      sum_dy, sum_dy_xmu);
  }
}

void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const double* mean,
                 const double* k_dy, const double* k_xmu, const double* k_const, void* dx) {
  auto g = [=](int64_t c, double xv, double dyv) {
    return k_dy[c] * dyv + k_xmu[c] * (xv - mean[c]) + k_const[c];
  };
  if (p.dtype == DType::kFloat32) {
    elementwise(p, static_cast<const float*>(x), static_cast<const float*>(dy),
                static_cast<float*>(dx), g);
  } else {
    elementwise(p, static_cast<const double*>(x), static_cast<const double*>(dy),
                static_cast<double*>(dx), g);
  }
}

}  // namespace bnorm::kernels::cpu_blocked
