// The batch-norm implementation registry: one ordered table, fastest first, reference last.
// The same table drives dispatch (src/kernels/batch_norm.cc), the kernel tests
// (tests/kernels/batch_norm_impls_test.cc) and the benchmark (bench/). Adding a variant is one
// line in batch_norm_impls.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "bnorm/tensor.h"

namespace bnorm::kernels {

/// Where channel c of sample n at spatial position s lives:
/// kNCHW: x[(n·C + c)·HW + s]; kNHWC: x[(n·HW + s)·C + c]. 2-d (N, C) input is kNHWC with HW = 1.
enum class Layout { kNCHW, kNHWC };

/// The shape of one batch-norm problem, as the kernels see it.
struct BatchNormProblem {
  int64_t n = 0;
  int64_t c = 0;
  int64_t hw = 1;
  Layout layout = Layout::kNCHW;
  DType dtype = DType::kFloat32;
};

std::string problem_str(const BatchNormProblem& p);

/// p with NCHW and HW = 1 relabelled NHWC: (N, C, 1…) is laid out exactly as channels-last
/// (element (n, c) at n·C + c either way), and the canonical reduction order depends on (N, HW)
/// alone, so the relabelling changes no bit and lets kernels use vectors across channels
/// instead of one-element planes.
inline BatchNormProblem as_rows(BatchNormProblem p) {
  if (p.hw == 1) p.layout = Layout::kNHWC;
  return p;
}

/// Calls fn(T{}) with T = float or double as `dtype` says: how each backend turns its typed
/// template kernels into the untyped entry points below.
template <typename Fn>
void dispatch_dtype(DType dtype, Fn&& fn) {
  if (dtype == DType::kFloat32) {
    fn(float{});
  } else {
    fn(double{});
  }
}

// Kernel entry points. Per-channel arrays are double, C elements; tensors are raw pointers to
// the layout above, with the problem's dtype.

/// mean[c] = Σx/n, var[c] = Σ(x − mean)²/n (biased), n = N·HW; two passes.
using StatsFn = void (*)(const BatchNormProblem& p, const void* x, double* mean, double* var);
/// y = (x − mean[c])·scale[c] + shift[c]; y may equal x.
using NormalizeFn = void (*)(const BatchNormProblem& p, const void* x, const double* mean,
                             const double* scale, const double* shift, void* y);
/// In the backward, the gradient g the kernels read is dy, or, with a ReLU mask (packed bits,
/// relu_mask_bits.h; null for the plain op), g = dy where the mask bit is set, else 0 (+0.0, as if
/// dy had been masked first: the fused BN + ReLU backward is bit-identical to that composition).
/// sum_dy[c] = Σg, sum_dy_xmu[c] = Σg·(x − mean[c]); one pass over x, dy (and the mask).
using BackwardReduceFn = void (*)(const BatchNormProblem& p, const void* x, const void* dy,
                                  const uint8_t* mask, const double* mean, double* sum_dy,
                                  double* sum_dy_xmu);
/// dx = k_dy[c]·g + k_xmu[c]·(x − mean[c]) + k_const[c]; when `g_out` is not null it receives g
/// (the residual's gradient of the fused op). dx and g_out may equal dy, not each other.
using BackwardDxFn = void (*)(const BatchNormProblem& p, const void* x, const void* dy,
                              const uint8_t* mask, const double* mean, const double* k_dy,
                              const double* k_xmu, const double* k_const, void* dx, void* g_out);

/// The fused BN (+ Add) + ReLU epilogue: r = ((x − mean[c])·scale[c] + shift[c]) + z (z may be
/// null), y = r > 0 || r is NaN ? r : 0, and bit i of the packed `mask` (memory index i) =
/// (r > 0); the mask's (numel + 7) / 8 bytes are all written, bits past numel 0. y may equal x
/// or z.
using NormalizeAddReluFn = void (*)(const BatchNormProblem& p, const void* x, const void* z,
                                    const double* mean, const double* scale, const double* shift,
                                    void* y, uint8_t* mask);

/// A per-channel step of the op layer that a kernel calls back: fn(ctx, c0, c1) for channels
/// [c0, c1). The single-sweep kernels call it from several threads at once, on disjoint ranges.
struct ChannelCallback {
  void (*fn)(void* ctx, int64_t c0, int64_t c1);
  void* ctx;
  void operator()(int64_t c0, int64_t c1) const { fn(ctx, c0, c1); }
};
/// Wraps a callable f(c0, c1), which must outlive the callback.
template <typename F>
ChannelCallback channel_callback(F& f) {
  return {[](void* ctx, int64_t c0, int64_t c1) { (*static_cast<F*>(ctx))(c0, c1); }, &f};
}

/// The training forward in one sweep over memory: ranges of channels small enough to stay in
/// cache each get their statistics (stats' mean and var), then coeffs(c0, c1), which must fill
/// scale and shift for those channels, then their output (normalize's y), before the next range
/// is read. Bit for bit the results of stats followed by normalize. Returns false, having written
/// nothing, where one sweep does not pay for p (the caller then runs the two passes). y may
/// equal x.
using ForwardTrainSweepFn = bool (*)(const BatchNormProblem& p, const void* x, double* mean,
                                     double* var, ChannelCallback coeffs, const double* scale,
                                     const double* shift, void* y);
/// The backward in one sweep, the same way: per range, backward_reduce's sums, then
/// coeffs(c0, c1), which must fill k_dy, k_xmu and k_const, then backward_dx's outputs.
using BackwardSweepFn = bool (*)(const BatchNormProblem& p, const void* x, const void* dy,
                                 const uint8_t* mask, const double* mean, double* sum_dy,
                                 double* sum_dy_xmu, ChannelCallback coeffs, const double* k_dy,
                                 const double* k_xmu, const double* k_const, void* dx, void* g_out);

/// The inference forward from the per-channel tensors themselves (x's dtype; weight and bias
/// may be null, meaning 1 and 0): y = (x − running_mean[c])·scale[c] + bias[c] with
/// scale[c] = weight[c] / sqrt(running_var[c] + eps) in double. Bit for bit normalize() with
/// those coefficients, but each thread computes the coefficients it reads: on a small problem,
/// C coefficients written by one core and read by another cost more than the arithmetic
/// (256×1024: 31 → 24 µs). y may equal x.
using NormalizeInferFn = void (*)(const BatchNormProblem& p, const void* x, const void* weight,
                                  const void* bias, const void* running_mean,
                                  const void* running_var, double eps, void* y);

struct BatchNormImpl {
  const char* name;  ///< "<backend>:<variant>", stable, selectable with BNORM_IMPL
  /// Returns "" when the implementation handles `p`, else why it declines.
  std::string (*supports)(const BatchNormProblem& p);
  StatsFn stats;
  NormalizeFn normalize;
  BackwardReduceFn backward_reduce;
  BackwardDxFn backward_dx;
  /// Null when the implementation has no fused epilogue (the op layer then uses the next one).
  NormalizeAddReluFn normalize_add_relu;
  /// Null when the implementation has no single-sweep kernels (the op layer runs two passes).
  ForwardTrainSweepFn forward_train_sweep;
  BackwardSweepFn backward_sweep;
  /// Null when the implementation has none (the op layer then computes the coefficients and
  /// calls normalize).
  NormalizeInferFn normalize_infer;
};

/// All implementations, fastest first, reference ("ref") last.
std::span<const BatchNormImpl> batch_norm_impls();

/// Returns the first implementation that supports `p`, or the one named by BNORM_IMPL (throws
/// ValueError when that name is unknown or it declines `p`). Prints the choice and every
/// decline reason to stderr when BNORM_VERBOSE=1.
const BatchNormImpl& batch_norm_select(const BatchNormProblem& p);

// The implementations, one declaration block per backend file.
namespace reference {
void normalize_add_relu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                        const double* scale, const double* shift, void* y, uint8_t* mask);
void stats(const BatchNormProblem& p, const void* x, double* mean, double* var);
void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y);
void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                     const double* mean, double* sum_dy, double* sum_dy_xmu);
void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                 const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                 void* dx, void* g_out);
}  // namespace reference

namespace cpu_hwy {
void normalize_add_relu(const BatchNormProblem& p, const void* x, const void* z, const double* mean,
                        const double* scale, const double* shift, void* y, uint8_t* mask);
void stats(const BatchNormProblem& p, const void* x, double* mean, double* var);
void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y);
void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                     const double* mean, double* sum_dy, double* sum_dy_xmu);
void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                 const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                 void* dx, void* g_out);
bool forward_train_sweep(const BatchNormProblem& p, const void* x, double* mean, double* var,
                         ChannelCallback coeffs, const double* scale, const double* shift, void* y);
bool backward_sweep(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                    const double* mean, double* sum_dy, double* sum_dy_xmu, ChannelCallback coeffs,
                    const double* k_dy, const double* k_xmu, const double* k_const, void* dx,
                    void* g_out);
void normalize_infer(const BatchNormProblem& p, const void* x, const void* weight, const void* bias,
                     const void* running_mean, const void* running_var, double eps, void* y);
/// The instruction set HWY_DYNAMIC_DISPATCH picked on this machine ("AVX3", "AVX2", …).
const char* target_name();
/// Caps the instruction sets cpu:hwy dispatches to at `name`, a Highway target name as
/// target_name() reports it ("AVX2", "SSE4", …): for measuring what a machine without the newer
/// ones would run. Results do not change (every target gives the same bits). Returns "" or, for a
/// name this machine and build do not support, an error message listing the ones they do.
std::string limit_simd(const std::string& name);
/// Applies the environment variable BNORM_SIMD (limit_simd) once, before the first dispatch;
/// every cpu:hwy entry point calls it. Throws ValueError if the variable names no supported target.
void apply_simd_env();
/// The bytes of all tensors of an elementwise pass together (inputs and outputs) above which it
/// writes its output with non-temporal stores: the L3 the system reports, clamped to 32–64 MiB;
/// 32 MiB on AMD, whose cores fill only their core complex's L3.
std::size_t stream_limit_bytes();
/// Replaces that limit (0: back to the default), for tests that need the streamed paths on
/// tensors of a few MiB; not to be called while kernels run.
void set_stream_limit_bytes(std::size_t bytes);
/// Whether this is an AMD CPU: tunings measured on Zen 5 and not on Intel (the channel ranges of
/// the NHWC backward sums, the row groups of streamed NHWC passes, NHWC reductions of whole rows of
/// at most 128 channels in memory order) follow it; so does stream_limit_bytes, from the CPU
/// itself. Changes no value, only speed.
bool amd_cpu();
/// Forces amd_cpu() to `amd` (1: AMD, 0: not; -1: back to the CPUID check), for tests that check
/// both sets of tunings give the same bits; not to be called while kernels run. The stream limit
/// does not follow it.
void set_amd_cpu(int amd);
/// The L2 cache of one core that the NHWC reductions size their walk units by (walk_positions):
/// what the system reports, clamped to 256 KiB–2 MiB, or 2 MiB when it reports none. Which size
/// changes no value, only speed.
std::size_t l2_cache_bytes();
/// Replaces it (0: back to the default), for tests that check every walk length gives the same
/// bits; not to be called while kernels run.
void set_l2_cache_bytes(std::size_t bytes);
}  // namespace cpu_hwy

namespace cpu_blocked {
void stats(const BatchNormProblem& p, const void* x, double* mean, double* var);
void normalize(const BatchNormProblem& p, const void* x, const double* mean, const double* scale,
               const double* shift, void* y);
void backward_reduce(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                     const double* mean, double* sum_dy, double* sum_dy_xmu);
void backward_dx(const BatchNormProblem& p, const void* x, const void* dy, const uint8_t* mask,
                 const double* mean, const double* k_dy, const double* k_xmu, const double* k_const,
                 void* dx, void* g_out);
}  // namespace cpu_blocked

}  // namespace bnorm::kernels
