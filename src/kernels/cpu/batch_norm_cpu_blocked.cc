// "cpu:blocked": portable C++ batch-norm kernels, threaded through parallel_for, with every
// reduction in the canonical order of Note [Canonical reduction order], so the results are
// bit-identical for any thread count and for NCHW vs NHWC. Per-element math is in double.
// Checked against the reference by tests/kernels/batch_norm_impls_test.cc; determinism by
// tests/functional/batch_norm_determinism_test.cc.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "bnorm/parallel.h"
#include "kernels/batch_norm_impls.h"
#include "kernels/reduction_order.h"

namespace bnorm::kernels::cpu_blocked {

namespace {

// Elements per parallel_for chunk of the elementwise passes: ~128 KiB of float, enough to amortize
// the scheduling, small enough that 2–16 threads all get work on a 1 MB tensor.
constexpr int64_t kElementwiseGrain = 32768;

// The two sums of every (channel, block) in the canonical order (block_sums_scalar), shifted by
// the block's first element (statistics) or by mean[c] (backward); then finish(c, sums, nb)
// with sums[b] = channel c's block b. Work items are (channel, block) pairs, channel-major for
// NCHW (rows are contiguous) and block-major for NHWC (neighbouring channels share cache lines).
template <bool Backward, typename T, typename Finish>
void block_sums(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask,
                const double* mean, Finish finish) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  const int64_t nb = plan.num_blocks;
  const bool nchw = p.layout == Layout::kNCHW;
  const int64_t stride_n = p.c * p.hw, stride_s = nchw ? 1 : p.c;
  std::vector<BlockSums> partial(static_cast<std::size_t>(p.c * nb));
  const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / plan.block_elems(p.hw));
  parallel_for(0, p.c * nb, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t item = i0; item < i1; ++item) {
      const int64_t c = nchw ? item / nb : item % p.c, b = nchw ? item % nb : item / p.c;
      const BlockRange r = plan.range(b, p.hw);
      const int64_t off = nchw ? c * p.hw : c;
      BlockSums& out = partial[c * nb + b];
      out.shift =
          Backward ? mean[c]
                   : block_shift(static_cast<double>(x[off + r.n0 * stride_n + r.s0 * stride_s]));
      block_sums_scalar<Backward>(x + off, Backward ? dy + off : nullptr, stride_n, stride_s, p.hw,
                                  r, out.shift, out.sum, mask, off);
    }
  });
  for (int64_t c = 0; c < p.c; ++c) finish(c, partial.data() + c * nb, nb);
}

// Calls g(c, xv, gv) -> double for every element and stores the result cast to T into out, with
// gv = dy masked by the ReLU mask when there is one (0 when dy is null); g_out, when not null,
// receives gv. Parallel over planes (NCHW) or rows (NHWC).
template <typename T, typename G>
void elementwise(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask, T* out,
                 T* g_out, G g) {
  auto one = [=](int64_t i, int64_t c) {
    const double gv = !dy || (mask && !relu_mask_bit(mask, i)) ? 0.0 : static_cast<double>(dy[i]);
    out[i] = static_cast<T>(g(c, static_cast<double>(x[i]), gv));
    if (g_out) g_out[i] = static_cast<T>(gv);
  };
  if (p.layout == Layout::kNCHW) {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(p.hw, 1));
    parallel_for(0, p.n * p.c, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t plane = i0; plane < i1; ++plane) {
        const int64_t c = plane % p.c;
        const int64_t base = plane * p.hw;
        for (int64_t s = 0; s < p.hw; ++s) one(base + s, c);
      }
    });
  } else {
    const int64_t grain = std::max<int64_t>(1, kElementwiseGrain / std::max<int64_t>(p.c, 1));
    parallel_for(0, p.n * p.hw, grain, [&](int64_t i0, int64_t i1) {
      for (int64_t row = i0; row < i1; ++row) {
        const int64_t base = row * p.c;
        for (int64_t c = 0; c < p.c; ++c) one(base + c, c);
      }
    });
  }
}

// Per block: one sweep of shifted sums, K = the block's first element; blocks merged by
// merge_moments. See Note [Canonical reduction order].
template <typename T>
void stats_t(const BatchNormProblem& p, const T* x, double* mean, double* var) {
  const BlockPlan plan = make_block_plan(p.n, p.hw);
  std::vector<BlockMoments> scratch(static_cast<std::size_t>(plan.num_blocks));
  block_sums</*Backward=*/false>(p, x, static_cast<const T*>(nullptr), nullptr, nullptr,
                                 [&](int64_t c, const BlockSums* sums, int64_t nb) {
                                   finish_stats(plan, p.hw, sums, nb, scratch.data(), mean + c,
                                                var + c);
                                 });
}

template <typename T>
void backward_reduce_t(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask,
                       const double* mean, double* sum_dy, double* sum_dy_xmu) {
  std::vector<double> scratch;
  block_sums</*Backward=*/true>(p, x, dy, mask, mean,
                                [&](int64_t c, const BlockSums* sums, int64_t nb) {
                                  scratch.resize(static_cast<std::size_t>(nb));
                                  finish_sums(sums, nb, scratch.data(), sum_dy + c, sum_dy_xmu + c);
                                });
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
    elementwise(p, static_cast<const T*>(x), static_cast<const T*>(nullptr), nullptr,
                static_cast<T*>(y), static_cast<T*>(nullptr),
                [=](int64_t c, double xv, double) { return (xv - mean[c]) * scale[c] + shift[c]; });
  });
}

void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                     const double* mean, double* sum_dy, double* sum_dy_xmu) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    backward_reduce_t(p, static_cast<const T*>(x), static_cast<const T*>(dy), mask, mean, sum_dy,
                      sum_dy_xmu);
  });
}

void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                 const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                 void* dx, void* g_out) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    elementwise(p, static_cast<const T*>(x), static_cast<const T*>(dy), mask, static_cast<T*>(dx),
                static_cast<T*>(g_out), [=](int64_t c, double xv, double dyv) {
                  return k_dy[c] * dyv + k_xmu[c] * (xv - mean[c]) + k_const[c];
                });
  });
}

}  // namespace bnorm::kernels::cpu_blocked
