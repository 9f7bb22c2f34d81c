// Batch Normalization as free functions, mirroring ATen's native_batch_norm and
// native_batch_norm_backward. Math and PyTorch semantics: doc/batch_norm.md.
// Checked by tests/functional/batch_norm_golden_test.cc (PyTorch values),
// batch_norm_oracle_test.cc, batch_norm_gradcheck_test.cc, batch_norm_numerics_test.cc,
// batch_norm_determinism_test.cc and batch_norm_bad_input_test.cc.
//
// Shapes: x is (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W), float32 or float64, contiguous
// or channels-last (4-d/5-d). Per-channel tensors (weight, bias, running_mean, running_var,
// save_mean, save_invstd) are 1-d of C elements, contiguous, with x's dtype; save_mean and
// save_invstd may also be float64 for a float32 x (the statistics unrounded: the backward then
// needs no pass to undo a float32 mean's rounding, see batch_norm_backward). An undefined Tensor
// (Tensor()) stands for an absent optional argument. Statistics are per channel over N and the
// spatial dims; HW below is the product of the spatial dims (1 for 2-d input).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "bnorm/functional/relu_mask.h"
#include "bnorm/tensor.h"

namespace bnorm {

/// PyTorch's defaults.
inline constexpr double kDefaultEps = 1e-5;
inline constexpr double kDefaultMomentum = 0.1;

/// Outputs of a training-mode forward.
struct BatchNormForwardResult {
  Tensor y;            ///< same shape, dtype and memory format as x
  Tensor save_mean;    ///< (C): the batch mean
  Tensor save_invstd;  ///< (C): 1/sqrt(biased batch var + eps); 0 where var == 0 and eps == 0
};

/// Normalizes x with its own batch statistics (training mode) and returns y, save_mean and
/// save_invstd: y = (x − mean)·invstd·weight + bias, var biased (1/(N·HW)).
/// When running_mean / running_var are defined they are updated in place:
/// running_mean = (1 − momentum)·running_mean + momentum·mean,
/// running_var = (1 − momentum)·running_var + momentum·var·n/(n − 1) (unbiased), n = N·HW.
/// weight/bias default to 1/0. Statistics accumulate in double in an order fixed by the shape,
/// so results are bit-identical for any thread count and for both memory formats.
/// Throws ValueError (nothing written) for: rank < 2 or > 5, N·HW == 1 ("Expected more than 1
/// value per channel when training"), an empty x, a per-channel tensor of the wrong size, dtype or
/// rank, eps < 0 or non-finite, momentum outside [0, 1], running_mean defined without running_var.
/// PyTorch: torch.native_batch_norm(x, weight, bias, running_mean, running_var, True, momentum,
/// eps).
BatchNormForwardResult batch_norm_forward_train(const Tensor& x, const Tensor& weight,
                                                const Tensor& bias, const Tensor& running_mean,
                                                const Tensor& running_var,
                                                double momentum = kDefaultMomentum,
                                                double eps = kDefaultEps);

/// Same as batch_norm_forward_train, writing into caller-owned y (x's shape and dtype, any of the
/// two memory formats; y may be x itself for an in-place forward), save_mean and save_invstd ((C)).
/// Throws ValueError when an output overlaps an input other than y == x.
void batch_norm_forward_train_out(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var,
                                  double momentum, double eps, Tensor& y, Tensor& save_mean,
                                  Tensor& save_invstd);

/// Normalizes x with fixed statistics (evaluation mode): y = (x − running_mean)/sqrt(running_var
/// + eps)·weight + bias. running_mean and running_var are required ("running_mean must be defined
/// in evaluation mode"). PyTorch: torch.native_batch_norm(..., training=False, ...).
Tensor batch_norm_forward_infer(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                const Tensor& running_mean, const Tensor& running_var,
                                double eps = kDefaultEps);

/// Same as batch_norm_forward_infer into caller-owned y (may be x itself).
void batch_norm_forward_infer_out(const Tensor& x, const Tensor& weight, const Tensor& bias,
                                  const Tensor& running_mean, const Tensor& running_var, double eps,
                                  Tensor& y);

/// Gradients of a batch_norm_forward_* call.
struct BatchNormBackwardResult {
  Tensor dx;       ///< x's shape and memory format; undefined unless output_mask[0]
  Tensor dweight;  ///< (C); undefined unless output_mask[1]
  Tensor dbias;    ///< (C); undefined unless output_mask[2]
};

/// Computes dx, dweight, dbias from dy.
/// train = true: statistics came from the batch; save_mean and save_invstd (from the forward)
///   are required. dx = invstd·w·(dy − Σdy/n − (x − mean)·invstd²·Σ((x − mean)·dy)/n).
/// train = false: statistics were fixed; running_mean and running_var are required and
///   invstd = 1/sqrt(running_var + eps); dx = dy·invstd·w.
/// Always dweight = Σ dy·(x − mean)·invstd and dbias = Σ dy per channel.
/// A float32 save_mean is x's batch mean rounded to float; where that rounding matters (some
/// channel's |mean| > 16 standard deviations) one statistics pass over x recovers the mean in
/// double for the channels whose save_mean is exactly its rounding (doc/batch_norm.md, section 4).
/// Throws ValueError for mismatched shapes, dtypes or sizes, as the forward does.
/// PyTorch: torch.ops.aten.native_batch_norm_backward(dy, x, weight, running_mean, running_var,
/// save_mean, save_invstd, train, eps, output_mask).
BatchNormBackwardResult batch_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                            const Tensor& running_mean, const Tensor& running_var,
                                            const Tensor& save_mean, const Tensor& save_invstd,
                                            bool train, double eps = kDefaultEps,
                                            std::array<bool, 3> output_mask = {true, true, true});

/// Same as batch_norm_backward into caller-owned outputs; an output whose mask bit is false is
/// not touched and may be undefined. dx may be dy itself (in-place); it must not overlap x.
void batch_norm_backward_out(const Tensor& dy, const Tensor& x, const Tensor& weight,
                             const Tensor& running_mean, const Tensor& running_var,
                             const Tensor& save_mean, const Tensor& save_invstd, bool train,
                             double eps, std::array<bool, 3> output_mask, Tensor& dx,
                             Tensor& dweight, Tensor& dbias);

/// Fused BN + Add + ReLU, the tail of a ResNet block, training mode: y = max(0, BN(x) + z) in
/// one pass over x after the statistics, BN exactly as batch_norm_forward_train_out (statistics,
/// save_mean/save_invstd, running buffers). z, the residual, may be undefined (BN + ReLU); it
/// must have x's shape, dtype and memory format; y may be x or z itself. `mask` is resized to
/// x.numel() and filled. NaN stays NaN through the ReLU (as torch.relu). Throws as the unfused op,
/// plus for a bad z. PyTorch: torch.relu(F.batch_norm(x, …, training=True) + z); oneDNN has no
/// BN + Add + ReLU on CPU.
void batch_norm_add_relu_forward_train_out(const Tensor& x, const Tensor& z, const Tensor& weight,
                                           const Tensor& bias, const Tensor& running_mean,
                                           const Tensor& running_var, double momentum, double eps,
                                           Tensor& y, Tensor& save_mean, Tensor& save_invstd,
                                           ReluMask& mask);

/// Fused BN + Add + ReLU with fixed statistics (evaluation mode).
void batch_norm_add_relu_forward_infer_out(const Tensor& x, const Tensor& z, const Tensor& weight,
                                           const Tensor& bias, const Tensor& running_mean,
                                           const Tensor& running_var, double eps, Tensor& y,
                                           ReluMask& mask);

/// Backward of the fused op: with g = dy where the mask is set, else 0 (the gradient of BN's
/// output and of the residual z), dx, dweight and dbias are batch_norm_backward of g and dz = g.
/// One fused reduction over (dy, mask, x) and one pass writing dx and dz, bit-identical to
/// masking dy first and calling batch_norm_backward. dz may be undefined (BN + ReLU: no residual)
/// or dy itself; dx may be dy itself, not dz. Throws ValueError for a mask of the wrong size and
/// as batch_norm_backward_out, before writing anything.
void batch_norm_add_relu_backward_out(const Tensor& dy, const Tensor& x, const Tensor& weight,
                                      const Tensor& running_mean, const Tensor& running_var,
                                      const Tensor& save_mean, const Tensor& save_invstd,
                                      const ReluMask& mask, bool train, double eps,
                                      std::array<bool, 3> output_mask, Tensor& dx, Tensor& dz,
                                      Tensor& dweight, Tensor& dbias);

/// What the forward and backward do with NaN or Inf in the data. kPropagate (the default) does
/// what PyTorch does: the affected channel's statistics and outputs become NaN/Inf. kThrow makes
/// batch_norm_forward_train and batch_norm_backward throw ValueError naming the first bad channel
/// before writing anything (found from the statistics, at no extra pass), and
/// batch_norm_forward_infer throw for non-finite running_mean/running_var/weight/bias.
enum class NonFinitePolicy { kPropagate, kThrow };
/// Sets the process-wide policy (thread-safe to read; set it before training starts).
void set_nonfinite_policy(NonFinitePolicy policy);
NonFinitePolicy get_nonfinite_policy();

/// Names the implementation that would run batch norm on x (e.g. "cpu:blocked", "ref"); the
/// environment variable BNORM_IMPL=<name> forces one, BNORM_VERBOSE=1 prints each choice.
const char* batch_norm_implementation_name(const Tensor& x);

}  // namespace bnorm
