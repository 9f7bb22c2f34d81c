// The reference batch-norm kernels: obvious loops, double accumulation, two-pass statistics,
// no threads, no SIMD; the mean is shifted by the channel's first element. They are the oracle
// every other implementation is tested against (tests/kernels/batch_norm_impls_test.cc) and the
// fallback of the registry ("ref").
#include <cmath>
#include <cstdint>

#include "kernels/batch_norm_impls.h"
#include "kernels/reduction_order.h"
#include "kernels/relu_mask_bits.h"

namespace bnorm::kernels::reference {

namespace {

// Offset of element (n, c, s) in the problem's layout.
int64_t offset(const BatchNormProblem& p, int64_t n, int64_t c, int64_t s) {
  return p.layout == Layout::kNCHW ? (n * p.c + c) * p.hw + s : (n * p.hw + s) * p.c + c;
}

template <typename T>
void stats_t(const BatchNormProblem& p, const T* x, double* mean, double* var) {
  const double count = static_cast<double>(p.n * p.hw);
  for (int64_t c = 0; c < p.c; ++c) {
    // Shifted by the channel's first element, so a constant channel's mean is exact; by 0 when
    // that element is ±inf or NaN (x − inf would make an infinite channel's mean NaN, where
    // PyTorch's Σx/n is ±inf).
    const double first = x[offset(p, 0, c, 0)];
    const double k = std::isfinite(first) ? first : 0.0;
    double sum = 0;
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t s = 0; s < p.hw; ++s) sum += x[offset(p, n, c, s)] - k;
    // The second pass subtracts the mean as k + offset, not rounded to one double: for a float64
    // channel of mean 1e12 and standard deviation 1, x − mean carried mean's rounding, ulp(1e12)/2
    // ≈ 6e-5, into every term (invstd off by 1e-9); (x − k) − offset is exact to the data's spread.
    const double mean_offset = sum / count;
    const double m = k + mean_offset;
    double sq = 0;
    for (int64_t n = 0; n < p.n; ++n) {
      for (int64_t s = 0; s < p.hw; ++s) {
        const double d = (x[offset(p, n, c, s)] - k) - mean_offset;
        sq += d * d;
      }
    }
    mean[c] = canonical_nan(m);
    var[c] = canonical_nan(sq / count);
  }
}

template <typename T>
void normalize_t(const BatchNormProblem& p, const T* x, const double* mean, const double* scale,
                 const double* shift, T* y) {
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t s = 0; s < p.hw; ++s) {
        const int64_t i = offset(p, n, c, s);
        y[i] = static_cast<T>((x[i] - mean[c]) * scale[c] + shift[c]);
      }
}

// The gradient the backward reads at memory index i: dy, masked by the ReLU mask if any.
template <typename T>
double grad_at(const T* dy, const uint8_t* mask, int64_t i) {
  return mask && !relu_mask_bit(mask, i) ? 0.0 : static_cast<double>(dy[i]);
}

template <typename T>
void backward_reduce_t(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask,
                       const double* mean, double* sum_dy, double* sum_dy_xmu) {
  for (int64_t c = 0; c < p.c; ++c) {
    double s0 = 0, s1 = 0;
    for (int64_t n = 0; n < p.n; ++n)
      for (int64_t s = 0; s < p.hw; ++s) {
        const int64_t i = offset(p, n, c, s);
        const double g = grad_at(dy, mask, i);
        s0 += g;
        s1 += g * (x[i] - mean[c]);
      }
    sum_dy[c] = canonical_nan(s0);
    sum_dy_xmu[c] = canonical_nan(s1);
  }
}

template <typename T>
void backward_dx_t(const BatchNormProblem& p, const T* x, const T* dy, const uint8_t* mask,
                   const double* mean, const double* k_dy, const double* k_xmu,
                   const double* k_const, T* dx, T* g_out) {
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t s = 0; s < p.hw; ++s) {
        const int64_t i = offset(p, n, c, s);
        const double g = grad_at(dy, mask, i);
        dx[i] = static_cast<T>(k_dy[c] * g + k_xmu[c] * (x[i] - mean[c]) + k_const[c]);
        if (g_out) g_out[i] = static_cast<T>(g);
      }
}

template <typename T>
void normalize_add_relu_t(const BatchNormProblem& p, const T* x, const T* z, const double* mean,
                          const double* scale, const double* shift, T* y, uint8_t* mask) {
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t s = 0; s < p.hw; ++s) {
        const int64_t i = offset(p, n, c, s);
        double r = (x[i] - mean[c]) * scale[c] + shift[c];
        if (z) r += z[i];
        const uint8_t bit = static_cast<uint8_t>(1u << (i & 7));
        mask[i >> 3] = r > 0 ? mask[i >> 3] | bit : mask[i >> 3] & ~bit;
        y[i] = static_cast<T>(r <= 0 ? 0.0 : r);
      }
  // Bits past the last element: 0.
  const int64_t numel = p.n * p.c * p.hw;
  if (numel % 8 != 0) mask[numel >> 3] &= static_cast<uint8_t>((1u << (numel & 7)) - 1);
}

}  // namespace

void normalize_add_relu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                        const double* scale, const double* shift, void* y, uint8_t* mask) {
  dispatch_dtype(p.dtype, [&](auto t) {
    using T = decltype(t);
    normalize_add_relu_t(p, static_cast<const T*>(x), static_cast<const T*>(z), mean, scale, shift,
                         static_cast<T*>(y), mask);
  });
}

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
    normalize_t(p, static_cast<const T*>(x), mean, scale, shift, static_cast<T*>(y));
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
    backward_dx_t(p, static_cast<const T*>(x), static_cast<const T*>(dy), mask, mean, k_dy, k_xmu,
                  k_const, static_cast<T*>(dx), static_cast<T*>(g_out));
  });
}

}  // namespace bnorm::kernels::reference
