// The batch-norm op layer: argument checks, implementation choice, per-channel scalars in double,
// running-statistics updates. Kernels behind it (src/kernels/{reference,cpu}/) see raw pointers
// and a BatchNormProblem only. Semantics follow ATen's Normalization.cpp; see doc/batch_norm.md.
// Checked by tests/functional/*.
#include "bnorm/functional/batch_norm.h"

#include <fmt/format.h>

#include <atomic>
#include <cmath>

#include "bnorm/error.h"
#include "bnorm/parallel.h"
#include "internal/cache_line_vector.h"
#include "kernels/batch_norm_impls.h"
#include "kernels/channel_math.h"
#include "kernels/relu_mask_bits.h"

namespace bnorm {

using kernels::BatchNormProblem;
using kernels::Layout;
// Per-channel arrays in double, cache-line aligned: the kernels load them as whole vectors.
using ChannelArray = detail::CacheLineVector<double>;

namespace {

std::atomic<NonFinitePolicy> g_nonfinite_policy{NonFinitePolicy::kPropagate};

// Checks x and returns the problem it describes. Throws before anything is written.
BatchNormProblem check_input(const char* fn, const char* name, const Tensor& x) {
  if (!x.defined()) throw ValueError(fmt::format("{}: {} must be defined", fn, name));
  const int64_t r = x.dim();
  if (r < 2 || r > 5) {
    throw ValueError(fmt::format("{}: {} must have 2 to 5 dims (N, C, spatial...), got {}-d {}", fn,
                                 name, r, shape_str(x.shape())));
  }
  if (x.numel() == 0) {
    throw ValueError(
        fmt::format("{}: {} must not be empty (an empty batch has no statistics), "
                    "got shape {}",
                    fn, name, shape_str(x.shape())));
  }
  BatchNormProblem p;
  p.n = x.size(0);
  p.c = x.size(1);
  p.hw = 1;
  for (int64_t d = 2; d < r; ++d) p.hw *= x.size(d);
  p.dtype = x.dtype();
  if (x.memory_format() == MemoryFormat::kChannelsLast &&
      x.is_contiguous(MemoryFormat::kChannelsLast)) {
    p.layout = Layout::kNHWC;
  } else if (x.is_contiguous()) {
    p.layout = Layout::kNCHW;
    p = as_rows(p);  // (N, C) and (N, C, 1, 1) are laid out exactly as channels-last
  } else {
    throw ValueError(
        fmt::format("{}: {} must be contiguous or channels_last, got shape {} "
                    "strides {}",
                    fn, name, shape_str(x.shape()), shape_str(x.strides())));
  }
  return p;
}

// Checks a per-channel tensor; an undefined one passes unless `required`. `statistics`: save_mean
// or save_invstd, which may also be float64 for a float32 x (kept unrounded).
void check_per_channel(const char* fn, const char* name, const Tensor& t, const BatchNormProblem& p,
                       bool required, const char* when = "", bool statistics = false) {
  if (!t.defined()) {
    if (required) throw ValueError(fmt::format("{}: {} must be defined{}", fn, name, when));
    return;
  }
  if (t.dim() != 1) {
    throw ValueError(fmt::format("{}: {} must be 1-d with C={} elements, got shape {}", fn, name,
                                 p.c, shape_str(t.shape())));
  }
  if (t.size(0) != p.c) {
    throw ValueError(
        fmt::format("{}: {} must have C={} elements, got {}", fn, name, p.c, t.size(0)));
  }
  if (statistics && t.dtype() == DType::kFloat64) return;
  if (t.dtype() != p.dtype) {
    throw ValueError(fmt::format(
        "{}: {} must have x's dtype {}{}, got {}", fn, name, dtype_name(p.dtype),
        statistics && p.dtype == DType::kFloat32 ? " or float64" : "", dtype_name(t.dtype())));
  }
}

void check_eps(const char* fn, double eps) {
  if (!std::isfinite(eps) || eps < 0) {
    throw ValueError(fmt::format("{}: eps must be finite and >= 0, got {}", fn, eps));
  }
}

void check_momentum(const char* fn, double momentum) {
  if (!std::isfinite(momentum) || momentum < 0 || momentum > 1) {
    throw ValueError(fmt::format("{}: momentum must be in [0, 1], got {}", fn, momentum));
  }
}

// An elementwise output must be the input itself (in-place) or not touch it at all.
void check_elementwise_out(const char* fn, const char* name, const Tensor& out, const char* in_name,
                           const Tensor& in, const BatchNormProblem& p, bool may_alias) {
  if (!out.defined()) throw ValueError(fmt::format("{}: {} must be defined", fn, name));
  if (out.shape() != in.shape()) {
    throw ValueError(fmt::format("{}: {} must have {}'s shape {}, got {}", fn, name, in_name,
                                 shape_str(in.shape()), shape_str(out.shape())));
  }
  if (out.dtype() != p.dtype) {
    throw ValueError(fmt::format("{}: {} must have dtype {}, got {}", fn, name, dtype_name(p.dtype),
                                 dtype_name(out.dtype())));
  }
  if (out.strides() != in.strides() && !(out.is_contiguous() && in.is_contiguous())) {
    throw ValueError(fmt::format(
        "{}: {} must have {}'s memory format {} (strides {}), got strides {}", fn, name, in_name,
        memory_format_name(in.memory_format()), shape_str(in.strides()), shape_str(out.strides())));
  }
  if (out.overlaps(in) && !(may_alias && out.is_same_view(in))) {
    throw ValueError(fmt::format(
        "{}: {} must be {} itself or not overlap it, got a partial overlap", fn, name, in_name));
  }
}

void check_no_overlap(const char* fn, const char* name, const Tensor& out,
                      std::initializer_list<std::pair<const char*, const Tensor*>> others) {
  for (const auto& [other_name, other] : others) {
    if (other->defined() && out.overlaps(*other)) {
      throw ValueError(fmt::format("{}: {} must not overlap {}", fn, name, other_name));
    }
  }
}

// Reads a per-channel tensor as doubles; `fallback` when undefined.
ChannelArray per_channel(const Tensor& t, int64_t c, double fallback) {
  if (!t.defined()) return ChannelArray(static_cast<std::size_t>(c), fallback);
  if (t.dtype() == DType::kFloat32) {
    const float* d = t.data<float>();
    return ChannelArray(d, d + c);
  }
  const double* d = t.data<double>();
  return ChannelArray(d, d + c);
}

void store_per_channel(Tensor& t, const ChannelArray& v) {
  if (t.dtype() == DType::kFloat32) {
    float* d = t.data<float>();
    for (std::size_t i = 0; i < v.size(); ++i) d[i] = static_cast<float>(v[i]);
  } else {
    double* d = t.data<double>();
    for (std::size_t i = 0; i < v.size(); ++i) d[i] = v[i];
  }
}

// The per-channel coefficients and the running-statistics update are SIMD with runtime
// dispatch (kernels/channel_math.h); the remaining per-channel loops here are written so that
// the compiler vectorizes them (this file is built with -fno-math-errno, so std::sqrt is the
// sqrt instruction): square roots and divisions are correctly rounded in every lane, so the bits
// are those of the scalar loop. Scalar, the divider made them the largest serial cost of a small
// call (1024 channels: 3–4 µs of a 30 µs inference forward on 256×1024).

void throw_if_nonfinite(const char* fn, const char* what, const ChannelArray& a,
                        const ChannelArray& b) {
  if (g_nonfinite_policy.load() != NonFinitePolicy::kThrow) return;
  for (std::size_t c = 0; c < a.size(); ++c) {
    if (!std::isfinite(a[c]) || !std::isfinite(b[c])) {
      throw ValueError(
          fmt::format("{}: {} has NaN or Inf in channel {} (statistics {} and {}); "
                      "nothing was written",
                      fn, what, c, a[c], b[c]));
    }
  }
}

void check_forward_out_shapes(const char* fn, const BatchNormProblem& p, const Tensor& save_mean,
                              const Tensor& save_invstd) {
  check_per_channel(fn, "save_mean", save_mean, p, /*required=*/true, "", /*statistics=*/true);
  check_per_channel(fn, "save_invstd", save_invstd, p, /*required=*/true, "", /*statistics=*/true);
}

// out[i] = dy[i] where mask bit i is set, else 0, in memory order (out has dy's strides), in
// parallel: the fused backward's dz when dx is not wanted.
void mask_gradient(DType dtype, const void* dy, const uint8_t* mask, void* out, int64_t n) {
  kernels::dispatch_dtype(dtype, [&](auto t) {
    using T = decltype(t);
    const T* a = static_cast<const T*>(dy);
    T* o = static_cast<T*>(out);
    parallel_for(0, n, int64_t{1} << 16, [=](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) o[i] = kernels::relu_mask_bit(mask, i) ? a[i] : T(0);
    });
  });
}

}  // namespace

void set_nonfinite_policy(NonFinitePolicy policy) { g_nonfinite_policy.store(policy); }
NonFinitePolicy get_nonfinite_policy() { return g_nonfinite_policy.load(); }

namespace {

// Checks the residual z of the fused op (x's shape, dtype and strides; y may be z itself).
void check_residual(const char* fn, const Tensor& z, const Tensor& x, const Tensor& y,
                    const BatchNormProblem& p) {
  if (!z.defined()) return;
  check_elementwise_out(fn, "z", z, "x", x, p, /*may_alias=*/true);
  if (y.overlaps(z) && !y.is_same_view(z)) {
    throw ValueError(
        fmt::format("{}: y must be z itself or not overlap it, got a partial overlap", fn));
  }
}

// Writes y: plain BN, or the fused BN (+ z) + ReLU epilogue when `mask` is given. The fused
// epilogue comes from the chosen implementation, or from the next one in the registry that has
// it (ref has every kernel).
void write_output(const kernels::BatchNormImpl& impl, const BatchNormProblem& p, const Tensor& x,
                  const Tensor* z, ReluMask* mask, const double* mean, const double* scale,
                  const double* shift, Tensor& y) {
  if (!mask) {
    impl.normalize(p, x.raw_data(), mean, scale, shift, y.raw_data());
    return;
  }
  mask->resize(x.numel());
  kernels::NormalizeAddReluFn fused = impl.normalize_add_relu;
  for (const kernels::BatchNormImpl& other : kernels::batch_norm_impls()) {
    if (!fused && other.normalize_add_relu && other.supports(p).empty())
      fused = other.normalize_add_relu;
  }
  fused(p, x.raw_data(), z && z->defined() ? z->raw_data() : nullptr, mean, scale, shift,
        y.raw_data(), mask->data());
}

void forward_train_core(const char* fn, const Tensor& x, const Tensor* z, const Tensor& weight,
                        const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                        double momentum, double eps, Tensor& y, Tensor& save_mean,
                        Tensor& save_invstd, ReluMask* mask) {
  const BatchNormProblem p = check_input(fn, "x", x);
  if (p.n * p.hw <= 1) {
    throw ValueError(
        fmt::format("{}: Expected more than 1 value per channel when training, got "
                    "input size {}",
                    fn, shape_str(x.shape())));
  }
  check_per_channel(fn, "weight", weight, p, false);
  check_per_channel(fn, "bias", bias, p, false);
  check_per_channel(fn, "running_mean", running_mean, p, false);
  check_per_channel(fn, "running_var", running_var, p, false);
  if (running_mean.defined() != running_var.defined()) {
    throw ValueError(
        fmt::format("{}: running_mean and running_var must be both defined or both "
                    "undefined, got {} and {}",
                    fn, running_mean.defined() ? "defined" : "undefined",
                    running_var.defined() ? "defined" : "undefined"));
  }
  check_eps(fn, eps);
  check_momentum(fn, momentum);
  check_elementwise_out(fn, "y", y, "x", x, p, /*may_alias=*/true);
  check_forward_out_shapes(fn, p, save_mean, save_invstd);
  if (z) check_residual(fn, *z, x, y, p);
  check_no_overlap(fn, "y", y,
                   {{"weight", &weight},
                    {"bias", &bias},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var}});
  check_no_overlap(fn, "save_mean", save_mean,
                   {{"x", &x},
                    {"y", &y},
                    {"weight", &weight},
                    {"bias", &bias},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var},
                    {"save_invstd", &save_invstd}});
  check_no_overlap(fn, "save_invstd", save_invstd,
                   {{"x", &x},
                    {"y", &y},
                    {"weight", &weight},
                    {"bias", &bias},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var}});

  const kernels::BatchNormImpl& impl = kernels::batch_norm_select(p);
  const ChannelArray w = per_channel(weight, p.c, 1.0);
  const ChannelArray b = per_channel(bias, p.c, 0.0);
  ChannelArray mean(p.c), var(p.c), invstd(p.c), scale(p.c);
  auto coefficients = [&](int64_t c0, int64_t c1) {
    kernels::forward_coefficients(var.data(), w.data(), eps, c0, c1, invstd.data(), scale.data());
  };
  // One sweep where the implementation has it, except where NaN must throw before anything is
  // written (the sweep writes the first channels before it has seen the last).
  const bool swept = !mask && impl.forward_train_sweep &&
                     g_nonfinite_policy.load() != NonFinitePolicy::kThrow &&
                     impl.forward_train_sweep(p, x.raw_data(), mean.data(), var.data(),
                                              kernels::channel_callback(coefficients), scale.data(),
                                              b.data(), y.raw_data());
  if (!swept) {
    impl.stats(p, x.raw_data(), mean.data(), var.data());
    throw_if_nonfinite(fn, "x", mean, var);
    coefficients(0, p.c);
    write_output(impl, p, x, z, mask, mean.data(), scale.data(), b.data(), y);
  }
  store_per_channel(save_mean, mean);
  store_per_channel(save_invstd, invstd);

  if (running_mean.defined()) {
    const double n = static_cast<double>(p.n * p.hw);
    ChannelArray rm = per_channel(running_mean, p.c, 0.0);
    ChannelArray rv = per_channel(running_var, p.c, 1.0);
    kernels::update_running_stats(mean.data(), var.data(), n, momentum, p.c, rm.data(), rv.data());
    Tensor rm_out = running_mean, rv_out = running_var;  // shares storage: updates in place
    store_per_channel(rm_out, rm);
    store_per_channel(rv_out, rv);
  }
}

}  // namespace

void batch_norm_forward_train_out(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var,
                                  double momentum, double eps, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd) {
  forward_train_core("batch_norm_forward_train", x, nullptr, weight, bias, running_mean,
                     running_var, momentum, eps, y, save_mean, save_invstd, nullptr);
}

void batch_norm_add_relu_forward_train_out(const Tensor& x, const Tensor& z, const Tensor& weight,
                                           const Tensor& bias, const Tensor& running_mean,
                                           const Tensor& running_var, double momentum, double eps,
                                           Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                                           ReluMask& mask) {
  forward_train_core("batch_norm_add_relu_forward_train", x, &z, weight, bias, running_mean,
                     running_var, momentum, eps, y, save_mean, save_invstd, &mask);
}

BatchNormForwardResult batch_norm_forward_train(const Tensor& x, const Tensor& weight,
                                                const Tensor& bias, const Tensor& running_mean,
                                                const Tensor& running_var, double momentum,
                                                double eps) {
  const BatchNormProblem p = check_input("batch_norm_forward_train", "x", x);
  BatchNormForwardResult r;
  r.y = Tensor::empty(x.shape(), x.dtype(), x.memory_format());
  r.save_mean = Tensor::empty({p.c}, x.dtype());
  r.save_invstd = Tensor::empty({p.c}, x.dtype());
  batch_norm_forward_train_out(x, weight, bias, running_mean, running_var, momentum, eps, r.y,
                               r.save_mean, r.save_invstd);
  return r;
}

namespace {
void forward_infer_core(const char* fn, const Tensor& x, const Tensor* z, const Tensor& weight,
                        const Tensor& bias, const Tensor& running_mean, const Tensor& running_var,
                        double eps, Tensor& y, ReluMask* mask) {
  const BatchNormProblem p = check_input(fn, "x", x);
  check_per_channel(fn, "weight", weight, p, false);
  check_per_channel(fn, "bias", bias, p, false);
  check_per_channel(fn, "running_mean", running_mean, p, true, " in evaluation mode");
  check_per_channel(fn, "running_var", running_var, p, true, " in evaluation mode");
  check_eps(fn, eps);
  check_elementwise_out(fn, "y", y, "x", x, p, /*may_alias=*/true);
  check_no_overlap(fn, "y", y,
                   {{"weight", &weight},
                    {"bias", &bias},
                    {"running_mean", &running_mean},
                    {"running_var", &running_var}});
  if (z) check_residual(fn, *z, x, y, p);

  const kernels::BatchNormImpl& impl = kernels::batch_norm_select(p);
  // Where the implementation computes the coefficients in its own threads (and no NaN check must
  // run first), hand it the tensors.
  if (!mask && impl.normalize_infer && g_nonfinite_policy.load() != NonFinitePolicy::kThrow) {
    impl.normalize_infer(p, x.raw_data(), weight.defined() ? weight.raw_data() : nullptr,
                         bias.defined() ? bias.raw_data() : nullptr, running_mean.raw_data(),
                         running_var.raw_data(), eps, y.raw_data());
    return;
  }
  const ChannelArray w = per_channel(weight, p.c, 1.0);
  const ChannelArray b = per_channel(bias, p.c, 0.0);
  const ChannelArray mean = per_channel(running_mean, p.c, 0.0);
  const ChannelArray var = per_channel(running_var, p.c, 1.0);
  throw_if_nonfinite(fn, "running_mean/running_var", mean, var);
  throw_if_nonfinite(fn, "weight/bias", w, b);
  ChannelArray scale(p.c);
  // Eval mode uses 1/sqrt(running_var + eps) as PyTorch does (no InvStd zero rule).
  for (int64_t c = 0; c < p.c; ++c) scale[c] = w[c] / std::sqrt(var[c] + eps);
  write_output(impl, p, x, z, mask, mean.data(), scale.data(), b.data(), y);
}
}  // namespace

void batch_norm_forward_infer_out(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var, double eps,
                                  Tensor& y) {
  forward_infer_core("batch_norm_forward_infer", x, nullptr, weight, bias, running_mean,
                     running_var, eps, y, nullptr);
}

void batch_norm_add_relu_forward_infer_out(const Tensor& x, const Tensor& z, const Tensor& weight,
                                           const Tensor& bias, const Tensor& running_mean,
                                           const Tensor& running_var, double eps, Tensor& y,
                                           ReluMask& mask) {
  forward_infer_core("batch_norm_add_relu_forward_infer", x, &z, weight, bias, running_mean,
                     running_var, eps, y, &mask);
}

Tensor batch_norm_forward_infer(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& running_mean, const Tensor& running_var, double eps) {
  check_input("batch_norm_forward_infer", "x", x);
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.memory_format());
  batch_norm_forward_infer_out(x, weight, bias, running_mean, running_var, eps, y);
  return y;
}

namespace {

// A float32 save_mean is the batch mean rounded to float, up to 2^-24·|mean| off: that many
// standard deviations (|mean|·invstd·2^-24) is the error it puts into every x − mean of the
// backward, so dx and dweight lose 2^-24·|mean|·invstd of their terms' scale (all of it when the
// mean's ulp reaches the channel's spread: mean 1.16e6 with spread 0.06 gave dx 33 for 0.004).
// Where a channel's mean lies more than kFloat32MeanRecoveryRatio standard deviations from 0, one
// statistics pass over x gives the double mean again, and it replaces save_mean for the
// channels whose save_mean is exactly its float rounding (a save_mean from elsewhere, or from
// another x, is used as given, as PyTorch does). Below the ratio the error stays under 2^-20 of
// the terms (16 float32 ulps) and no pass is paid. The statistics pass is the forward's, in the
// canonical order, so the result keeps the same bits for any thread count and layout. It costs
// a read of x (256×1024 backward 93–106 → 133–138 µs, 32×256×28×28 NCHW 2.7–3.0 → 3.6–4.1 ms,
// NHWC 4.0–4.2 → 5.2–5.6 ms on the Zen 5 VM); float64 save_mean/save_invstd, which the
// forward accepts for a float32 x (nn::BatchNorm keeps them so), need no pass.
constexpr double kFloat32MeanRecoveryRatio = 16.0;

void recover_float32_mean(const kernels::BatchNormImpl& impl, const BatchNormProblem& p,
                          const Tensor& x, const ChannelArray& invstd, ChannelArray& mean) {
  bool needed = false;
  for (int64_t c = 0; c < p.c && !needed; ++c) {
    needed = std::fabs(mean[c]) * invstd[c] > kFloat32MeanRecoveryRatio;
  }
  if (!needed) return;
  ChannelArray exact_mean(p.c), var(p.c);
  impl.stats(p, x.raw_data(), exact_mean.data(), var.data());
  for (int64_t c = 0; c < p.c; ++c) {
    if (static_cast<float>(exact_mean[c]) == static_cast<float>(mean[c])) mean[c] = exact_mean[c];
  }
}

// The backward of BN, or with `mask` (the packed ReLU mask) that of the fused BN (+ Add) + ReLU,
// with g = dy masked: the kernels read dy and the mask, and the dx pass also writes g to dz when
// dz is defined. Everything is checked before anything is written.
void backward_core(const char* fn, const Tensor& dy, const Tensor& x, const Tensor& weight,
                   const Tensor& running_mean, const Tensor& running_var, const Tensor& save_mean,
                   const Tensor& save_invstd, const uint8_t* mask, bool train, double eps,
                   std::array<bool, 3> output_mask, Tensor& dx, Tensor& dz, Tensor& dweight,
                   Tensor& dbias) {
  const BatchNormProblem p = check_input(fn, "x", x);
  check_input(fn, "dy", dy);
  if (dy.shape() != x.shape()) {
    throw ValueError(fmt::format("{}: dy must have x's shape {}, got {}", fn, shape_str(x.shape()),
                                 shape_str(dy.shape())));
  }
  if (dy.dtype() != x.dtype()) {
    throw ValueError(fmt::format("{}: dy must have x's dtype {}, got {}", fn, dtype_name(x.dtype()),
                                 dtype_name(dy.dtype())));
  }
  if (dy.strides() != x.strides() && !(dy.is_contiguous() && x.is_contiguous())) {
    throw ValueError(fmt::format("{}: dy must have x's memory format {}, got strides {}", fn,
                                 memory_format_name(x.memory_format()), shape_str(dy.strides())));
  }
  check_per_channel(fn, "weight", weight, p, false);
  if (train) {
    check_per_channel(fn, "save_mean", save_mean, p, true, " in training mode", true);
    check_per_channel(fn, "save_invstd", save_invstd, p, true, " in training mode", true);
  } else {
    check_per_channel(fn, "running_mean", running_mean, p, true, " in evaluation mode");
    check_per_channel(fn, "running_var", running_var, p, true, " in evaluation mode");
  }
  check_eps(fn, eps);
  if (output_mask[0]) {
    check_elementwise_out(fn, "dx", dx, "dy", dy, p, /*may_alias=*/true);
    check_no_overlap(fn, "dx", dx,
                     {{"x", &x},
                      {"weight", &weight},
                      {"save_mean", &save_mean},
                      {"save_invstd", &save_invstd},
                      {"running_mean", &running_mean},
                      {"running_var", &running_var}});
  }
  const std::pair<const char*, Tensor*> grads[] = {{"dweight", &dweight}, {"dbias", &dbias}};
  for (int i = 0; i < 2; ++i) {
    if (!output_mask[i + 1]) continue;
    check_per_channel(fn, grads[i].first, *grads[i].second, p, true);
    check_no_overlap(fn, grads[i].first, *grads[i].second,
                     {{"x", &x},
                      {"dy", &dy},
                      {"dx", &dx},
                      {"weight", &weight},
                      {"save_mean", &save_mean},
                      {"save_invstd", &save_invstd}});
  }
  if (output_mask[1] && output_mask[2] && dweight.overlaps(dbias)) {
    throw ValueError(fmt::format("{}: dweight must not overlap dbias", fn));
  }
  if (dz.defined()) {
    check_elementwise_out(fn, "dz", dz, "dy", dy, p, /*may_alias=*/true);
    check_no_overlap(fn, "dz", dz,
                     {{"x", &x},
                      {"weight", &weight},
                      {"save_mean", &save_mean},
                      {"save_invstd", &save_invstd},
                      {"running_mean", &running_mean},
                      {"running_var", &running_var}});
    if (output_mask[0] && dz.overlaps(dx)) {
      throw ValueError(fmt::format("{}: dz must not overlap dx", fn));
    }
    for (const Tensor* t : {&dweight, &dbias}) {
      if (t->defined() && dz.overlaps(*t)) {
        throw ValueError(fmt::format("{}: dz must not overlap dweight or dbias", fn));
      }
    }
  }

  const ChannelArray w = per_channel(weight, p.c, 1.0);
  ChannelArray mean, invstd(p.c);
  if (train) {
    mean = per_channel(save_mean, p.c, 0.0);
    invstd = per_channel(save_invstd, p.c, 1.0);
  } else {
    mean = per_channel(running_mean, p.c, 0.0);
    const ChannelArray var = per_channel(running_var, p.c, 1.0);
    for (int64_t c = 0; c < p.c; ++c) invstd[c] = 1.0 / std::sqrt(var[c] + eps);
  }
  const kernels::BatchNormImpl& impl = kernels::batch_norm_select(p);
  if (train && save_mean.dtype() == DType::kFloat32) recover_float32_mean(impl, p, x, invstd, mean);
  const bool need_sums = train || output_mask[1] || output_mask[2];
  ChannelArray sum_dy(p.c, 0.0), sum_dy_xmu(p.c, 0.0);
  // See doc/batch_norm.md, "Backward": dx = k_dy·dy + k_xmu·(x − mean) + k_const.
  ChannelArray k_dy(p.c), k_xmu(p.c, 0.0), k_const(p.c, 0.0);
  auto coefficients = [&](int64_t c0, int64_t c1) {
    kernels::backward_coefficients(invstd.data(), w.data(), sum_dy.data(), sum_dy_xmu.data(),
                                   static_cast<double>(p.n * p.hw), train, c0, c1, k_dy.data(),
                                   k_xmu.data(), k_const.data());
  };
  void* dz_data = dz.defined() ? dz.raw_data() : nullptr;
  // One sweep where the implementation has it (training with dx), except where NaN must throw
  // before anything is written.
  const bool swept =
      train && output_mask[0] && impl.backward_sweep &&
      g_nonfinite_policy.load() != NonFinitePolicy::kThrow &&
      impl.backward_sweep(p, x.raw_data(), dy.raw_data(), mask, mean.data(), sum_dy.data(),
                          sum_dy_xmu.data(), kernels::channel_callback(coefficients), k_dy.data(),
                          k_xmu.data(), k_const.data(), dx.raw_data(), dz_data);
  if (!swept && need_sums) {
    impl.backward_reduce(p, x.raw_data(), dy.raw_data(), mask, mean.data(), sum_dy.data(),
                         sum_dy_xmu.data());
    throw_if_nonfinite(fn, "dy or x", sum_dy, sum_dy_xmu);
  }
  if (!swept && output_mask[0]) {
    coefficients(0, p.c);
    if (train) {
      impl.backward_dx(p, x.raw_data(), dy.raw_data(), mask, mean.data(), k_dy.data(), k_xmu.data(),
                       k_const.data(), dx.raw_data(), dz_data);
    } else {
      // Evaluation: dx = k_dy·g (PyTorch's dy·invstd·weight), which does not read x. Through the
      // dx kernel, k_dy·g + 0·(x − mean) + 0 made dx NaN wherever x was ±inf or NaN (0·inf),
      // where PyTorch's is finite; so the elementwise pass runs on g alone: (g − 0)·k_dy + 0, the
      // same value for every finite x. g is dy, or dy masked by the ReLU into dz (or into dx).
      const void* g = dy.raw_data();
      if (mask) {
        void* masked = dz_data ? dz_data : dx.raw_data();
        mask_gradient(p.dtype, dy.raw_data(), mask, masked, x.numel());
        g = masked;
      }
      const ChannelArray zeros(p.c, 0.0);
      impl.normalize(p, g, zeros.data(), k_dy.data(), zeros.data(), dx.raw_data());
    }
  } else if (!swept && dz.defined()) {
    mask_gradient(p.dtype, dy.raw_data(), mask, dz.raw_data(), x.numel());
  }
  if (output_mask[1]) {
    ChannelArray dw(p.c);
    for (int64_t c = 0; c < p.c; ++c) dw[c] = sum_dy_xmu[c] * invstd[c];
    store_per_channel(dweight, dw);
  }
  if (output_mask[2]) store_per_channel(dbias, sum_dy);
}

}  // namespace

void batch_norm_backward_out(const Tensor& dy, const Tensor& x, const Tensor& weight,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& save_mean, const Tensor& save_invstd, bool train,
                             double eps, std::array<bool, 3> output_mask, Tensor& dx,
                             Tensor& dweight, Tensor& dbias) {
  Tensor no_dz;
  backward_core("batch_norm_backward", dy, x, weight, running_mean, running_var, save_mean,
                save_invstd, nullptr, train, eps, output_mask, dx, no_dz, dweight, dbias);
}

BatchNormBackwardResult batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                            const Tensor& running_mean, const Tensor& running_var,
                                            const Tensor& save_mean, const Tensor& save_invstd,
                                            bool train, double eps,
                                            std::array<bool, 3> output_mask) {
  const BatchNormProblem p = check_input("batch_norm_backward", "x", x);
  BatchNormBackwardResult r;
  if (output_mask[0] && dy.defined() && dy.shape() == x.shape()) {
    r.dx = Tensor::empty(x.shape(), x.dtype(), dy.memory_format());
  } else if (output_mask[0]) {
    r.dx = Tensor::empty(x.shape(), x.dtype(), x.memory_format());
  }
  if (output_mask[1]) r.dweight = Tensor::empty({p.c}, x.dtype());
  if (output_mask[2]) r.dbias = Tensor::empty({p.c}, x.dtype());
  batch_norm_backward_out(dy, x, weight, running_mean, running_var, save_mean, save_invstd, train,
                          eps, output_mask, r.dx, r.dweight, r.dbias);
  return r;
}

void batch_norm_add_relu_backward_out(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      const Tensor& save_mean, const Tensor& save_invstd,
                                      const ReluMask& mask, bool train, double eps,
                                      std::array<bool, 3> output_mask, Tensor& dx, Tensor& dz,
                                      Tensor& dweight, Tensor& dbias) {
  constexpr const char* fn = "batch_norm_add_relu_backward";
  check_input(fn, "x", x);
  if (mask.size() != x.numel()) {
    throw ValueError(
        fmt::format("{}: mask must have x.numel()={} entries (from the forward), got {}", fn,
                    x.numel(), mask.size()));
  }
  backward_core(fn, dy, x, weight, running_mean, running_var, save_mean, save_invstd, mask.data(),
                train, eps, output_mask, dx, dz, dweight, dbias);
}

const char* batch_norm_implementation_name(const Tensor& x) {
  return kernels::batch_norm_select(check_input("batch_norm_implementation_name", "x", x)).name;
}

}  // namespace bnorm
