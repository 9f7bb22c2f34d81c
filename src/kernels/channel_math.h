// The op layer's per-channel arithmetic: the coefficients the elementwise passes read, and the
// running-statistics update. Arrays are double, indexed by channel; [c0, c1) is a range of
// channels (the single sweeps compute their ranges' coefficients as they go).
//
// Each function has a scalar definition here (namespace reference: obvious loops, the
// expressions of PyTorch's batch-norm code) and a SIMD one (src/kernels/cpu/channel_math_hwy.cc,
// Highway with runtime dispatch) that the op layer calls. The SIMD one uses the same operations
// in the same order: square root and division are correctly rounded in every lane and nothing
// is fused (the build has -ffp-contract=off), so its results are the scalar loops' bits on every
// target (a NaN result is NaN in both, its sign and payload not: from two NaN operands x86 keeps
// the first one's, and the compiler orders a product's operands as it likes);
// tests/kernels/channel_math_test.cc checks that on each target this machine supports.
// Why SIMD for a few thousand numbers: compiled for baseline x86-64 (SSE2, 2 lanes), these
// loops' divisions and square roots cost about a quarter of a small training forward (8×1024:
// 8.5–8.9 µs, against 6.4–6.7 with the whole op layer built for AVX-512 as a test; 6.6–7.0 with
// these functions).
#pragma once

#include <cmath>
#include <cstdint>

namespace bnorm::kernels {

/// invstd[c] = 1/sqrt(var[c] + eps), but 0 where var[c] == 0 and eps == 0 (PyTorch's InvStd: a
/// constant channel with eps = 0 maps to 0, not inf); scale[c] = invstd[c]·weight[c].
void forward_coefficients(const double* var, const double* weight, double eps, int64_t c0,
                          int64_t c1, double* invstd, double* scale);

/// The backward's dx = k_dy·dy + k_xmu·(x − mean) + k_const (doc/batch_norm.md, "Backward"),
/// for n = N·HW values per channel: k_dy = invstd·weight; in training also
/// k_xmu = −sum_dy_xmu·invstd·invstd/n·k_dy and k_const = −sum_dy/n·k_dy (left alone otherwise).
void backward_coefficients(const double* invstd, const double* weight, const double* sum_dy,
                           const double* sum_dy_xmu, double n, bool train, int64_t c0, int64_t c1,
                           double* k_dy, double* k_xmu, double* k_const);

/// running_mean = momentum·mean + (1 − momentum)·running_mean and running_var =
/// momentum·(var·n/(n − 1)) + (1 − momentum)·running_var (the unbiased variance of n values).
void update_running_stats(const double* mean, const double* var, double n, double momentum,
                          int64_t c, double* running_mean, double* running_var);

namespace reference {

inline void forward_coefficients(const double* var, const double* weight, double eps, int64_t c0,
                                 int64_t c1, double* invstd, double* scale) {
  for (int64_t c = c0; c < c1; ++c) {
    invstd[c] = var[c] == 0 && eps == 0 ? 0.0 : 1.0 / std::sqrt(var[c] + eps);
    scale[c] = invstd[c] * weight[c];
  }
}

inline void backward_coefficients(const double* invstd, const double* weight, const double* sum_dy,
                                  const double* sum_dy_xmu, double n, bool train, int64_t c0,
                                  int64_t c1, double* k_dy, double* k_xmu, double* k_const) {
  for (int64_t c = c0; c < c1; ++c) {
    k_dy[c] = invstd[c] * weight[c];
    if (!train) continue;
    k_xmu[c] = -sum_dy_xmu[c] * invstd[c] * invstd[c] / n * k_dy[c];
    k_const[c] = -sum_dy[c] / n * k_dy[c];
  }
}

inline void update_running_stats(const double* mean, const double* var, double n, double momentum,
                                 int64_t c, double* running_mean, double* running_var) {
  for (int64_t i = 0; i < c; ++i) {
    running_mean[i] = momentum * mean[i] + (1 - momentum) * running_mean[i];
    running_var[i] = momentum * (var[i] * n / (n - 1)) + (1 - momentum) * running_var[i];
  }
}

}  // namespace reference
}  // namespace bnorm::kernels
