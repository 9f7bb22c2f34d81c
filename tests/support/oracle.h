// The test-side oracle: batch norm written literally from the formulas, independent of
// src/kernels/reference (different loops, different association: x̂ first, then γ·x̂ + β).
// Works on logical (N, C, HW) vectors of double.
#pragma once

#include <cstdint>
#include <vector>

namespace bnorm::test {

struct OracleForward {
  std::vector<double> y, mean, invstd, running_mean, running_var;
};

/// Training-mode forward; running_* are updated copies when given (empty = absent).
OracleForward oracle_forward_train(const std::vector<double>& x, int64_t n, int64_t c, int64_t hw,
                                   const std::vector<double>& weight,
                                   const std::vector<double>& bias,
                                   const std::vector<double>& running_mean,
                                   const std::vector<double>& running_var, double momentum,
                                   double eps);

/// Evaluation-mode forward.
std::vector<double> oracle_forward_infer(const std::vector<double>& x, int64_t n, int64_t c,
                                         int64_t hw, const std::vector<double>& weight,
                                         const std::vector<double>& bias,
                                         const std::vector<double>& running_mean,
                                         const std::vector<double>& running_var, double eps);

struct OracleBackward {
  std::vector<double> dx, dweight, dbias;
};

/// Backward from the definition: dx_i = γ·invstd·(dy_i − mean(dy) − x̂_i·mean(dy·x̂)) in training,
/// γ·invstd·dy_i in eval, where mean/invstd are those given.
OracleBackward oracle_backward(const std::vector<double>& dy, const std::vector<double>& x,
                               int64_t n, int64_t c, int64_t hw, const std::vector<double>& weight,
                               const std::vector<double>& mean, const std::vector<double>& invstd,
                               bool train);

}  // namespace bnorm::test
