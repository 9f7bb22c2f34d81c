// The per-channel arithmetic of kernels/channel_math.h with Highway SIMD, compiled for every
// x86 target Highway knows and chosen at run time (HWY_DYNAMIC_DISPATCH). Each lane computes the
// scalar definition's expression with the same operations in the same order (correctly rounded
// Sqrt and Div, no MulAdd), and the last c mod lanes channels go through the scalar definition
// itself, so every target gives the reference's bits.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/channel_math_hwy.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// foreach_target must come first.
#include <cstdint>

#include "hwy/highway.h"
#include "kernels/channel_math.h"

HWY_BEFORE_NAMESPACE();
namespace bnorm::kernels::channel_math_hwy {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void ForwardCoefficients(const double* var, const double* weight, double eps, int64_t c0,
                         int64_t c1, double* invstd, double* scale) {
  const hn::ScalableTag<double> dd;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const auto ve = hn::Set(dd, eps), one = hn::Set(dd, 1.0), zero = hn::Zero(dd);
  int64_t c = c0;
  for (; c + lanes <= c1; c += lanes) {
    const auto v = hn::LoadU(dd, var + c);
    auto is = hn::Div(one, hn::Sqrt(hn::Add(v, ve)));
    if (eps == 0) is = hn::IfThenElse(hn::Eq(v, zero), zero, is);
    hn::StoreU(is, dd, invstd + c);
    hn::StoreU(hn::Mul(is, hn::LoadU(dd, weight + c)), dd, scale + c);
  }
  reference::forward_coefficients(var, weight, eps, c, c1, invstd, scale);
}

void BackwardCoefficients(const double* invstd, const double* weight, const double* sum_dy,
                          const double* sum_dy_xmu, double n, bool train, int64_t c0, int64_t c1,
                          double* k_dy, double* k_xmu, double* k_const) {
  const hn::ScalableTag<double> dd;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const auto vn = hn::Set(dd, n);
  int64_t c = c0;
  for (; c + lanes <= c1; c += lanes) {
    const auto is = hn::LoadU(dd, invstd + c);
    const auto k1 = hn::Mul(is, hn::LoadU(dd, weight + c));
    hn::StoreU(k1, dd, k_dy + c);
    if (!train) continue;
    // −s2·is·is/n·k1 and −s1/n·k1, left to right as in the scalar expression.
    const auto s2 = hn::Neg(hn::LoadU(dd, sum_dy_xmu + c));
    hn::StoreU(hn::Mul(hn::Div(hn::Mul(hn::Mul(s2, is), is), vn), k1), dd, k_xmu + c);
    const auto s1 = hn::Neg(hn::LoadU(dd, sum_dy + c));
    hn::StoreU(hn::Mul(hn::Div(s1, vn), k1), dd, k_const + c);
  }
  reference::backward_coefficients(invstd, weight, sum_dy, sum_dy_xmu, n, train, c, c1, k_dy, k_xmu,
                                   k_const);
}

void UpdateRunningStats(const double* mean, const double* var, double n, double momentum, int64_t c,
                        double* running_mean, double* running_var) {
  const hn::ScalableTag<double> dd;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(dd));
  const auto vm = hn::Set(dd, momentum), vk = hn::Set(dd, 1 - momentum);
  const auto vn = hn::Set(dd, n), vn1 = hn::Set(dd, n - 1);
  int64_t i = 0;
  for (; i + lanes <= c; i += lanes) {
    const auto rm = hn::LoadU(dd, running_mean + i), rv = hn::LoadU(dd, running_var + i);
    hn::StoreU(hn::Add(hn::Mul(vm, hn::LoadU(dd, mean + i)), hn::Mul(vk, rm)), dd,
               running_mean + i);
    const auto unbiased = hn::Div(hn::Mul(hn::LoadU(dd, var + i), vn), vn1);
    hn::StoreU(hn::Add(hn::Mul(vm, unbiased), hn::Mul(vk, rv)), dd, running_var + i);
  }
  reference::update_running_stats(mean + i, var + i, n, momentum, c - i, running_mean + i,
                                  running_var + i);
}

}  // namespace HWY_NAMESPACE
}  // namespace bnorm::kernels::channel_math_hwy
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace bnorm::kernels {
namespace channel_math_hwy {
HWY_EXPORT(ForwardCoefficients);
HWY_EXPORT(BackwardCoefficients);
HWY_EXPORT(UpdateRunningStats);
}  // namespace channel_math_hwy

void forward_coefficients(const double* var, const double* weight, double eps, int64_t c0,
                          int64_t c1, double* invstd, double* scale) {
  HWY_DYNAMIC_DISPATCH(channel_math_hwy::ForwardCoefficients)
  (var, weight, eps, c0, c1, invstd, scale);
}

void backward_coefficients(const double* invstd, const double* weight, const double* sum_dy,
                           const double* sum_dy_xmu, double n, bool train, int64_t c0, int64_t c1,
                           double* k_dy, double* k_xmu, double* k_const) {
  HWY_DYNAMIC_DISPATCH(channel_math_hwy::BackwardCoefficients)
  (invstd, weight, sum_dy, sum_dy_xmu, n, train, c0, c1, k_dy, k_xmu, k_const);
}

void update_running_stats(const double* mean, const double* var, double n, double momentum,
                          int64_t c, double* running_mean, double* running_var) {
  HWY_DYNAMIC_DISPATCH(channel_math_hwy::UpdateRunningStats)
  (mean, var, n, momentum, c, running_mean, running_var);
}

}  // namespace bnorm::kernels
#endif  // HWY_ONCE
