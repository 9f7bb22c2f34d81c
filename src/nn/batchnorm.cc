// BatchNorm1d/2d/3d: PyTorch's _BatchNorm.forward logic (which statistics, which momentum,
// when num_batches_tracked counts) on top of the functional API. Checked by
// tests/nn/batchnorm_test.cc.
#include "bnorm/nn/batchnorm.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace bnorm::nn {

BatchNorm::BatchNorm(int64_t num_features, BatchNormOptions options)
    : num_features_(num_features), options_(options) {
  if (num_features < 1) {
    throw ValueError(fmt::format("BatchNorm: num_features must be >= 1, got {}", num_features));
  }
  if (!std::isfinite(options.eps) || options.eps < 0) {
    throw ValueError(fmt::format("BatchNorm: eps must be finite and >= 0, got {}", options.eps));
  }
  if (options.momentum && !(*options.momentum >= 0 && *options.momentum <= 1)) {
    throw ValueError(
        fmt::format("BatchNorm: momentum must be in [0, 1] or None, got {}", *options.momentum));
  }
  if (options_.affine) {
    weight_.value = Tensor::empty({num_features}, options_.dtype);
    bias_.value = Tensor::empty({num_features}, options_.dtype);
    weight_.grad = Tensor::zeros({num_features}, options_.dtype);
    bias_.grad = Tensor::zeros({num_features}, options_.dtype);
  }
  if (options_.track_running_stats) {
    running_mean_ = Tensor::empty({num_features}, options_.dtype);
    running_var_ = Tensor::empty({num_features}, options_.dtype);
  }
  reset_parameters();
}

void BatchNorm::reset_running_stats() {
  if (!options_.track_running_stats) return;
  running_mean_.fill(0.0);
  running_var_.fill(1.0);
  num_batches_tracked_ = 0;
}

void BatchNorm::reset_parameters() {
  reset_running_stats();
  if (options_.affine) {
    weight_.value.fill(1.0);
    bias_.value.fill(0.0);
  }
}

Tensor BatchNorm::forward(const Tensor& x) {
  if (!x.defined()) throw ValueError(fmt::format("{}: input must be defined", name()));
  check_input_dim(x);
  if (x.size(1) != num_features_) {
    throw ValueError(
        fmt::format("{}: input must have C=num_features={} channels, got {} (shape {})", name(),
                    num_features_, x.size(1), shape_str(x.shape())));
  }
  // PyTorch: bn_training = training or (running_mean is None and running_var is None).
  used_batch_stats_ = training_ || !options_.track_running_stats;
  const Tensor& w = weight_.value;
  const Tensor& b = bias_.value;
  if (!used_batch_stats_) {
    Tensor y = batch_norm_forward_infer(x, w, b, running_mean_, running_var_, options_.eps);
    x_ = x;
    return y;
  }
  double factor = 0.0;
  const bool update = training_ && options_.track_running_stats;
  if (update) {
    // PyTorch increments first and uses 1/num_batches_tracked; bnorm counts only after the call
    // succeeded, so a rejected batch leaves the counter unchanged.
    factor = options_.momentum ? *options_.momentum
                               : 1.0 / static_cast<double>(num_batches_tracked_ + 1);
  }
  // The batch statistics are kept in float64 for the backward, unrounded: a float32 mean's
  // rounding would cost the backward a pass over x to undo (batch_norm_backward_out).
  Tensor y = Tensor::empty(x.shape(), x.dtype(), x.memory_format());
  Tensor save_mean = Tensor::empty({num_features_}, DType::kFloat64);
  Tensor save_invstd = Tensor::empty({num_features_}, DType::kFloat64);
  batch_norm_forward_train_out(x, w, b, update ? running_mean_ : Tensor(),
                               update ? running_var_ : Tensor(), factor, options_.eps, y, save_mean,
                               save_invstd);
  if (update) ++num_batches_tracked_;
  x_ = x;
  save_mean_ = save_mean;
  save_invstd_ = save_invstd;
  return y;
}

Tensor BatchNorm::backward(const Tensor& dy) {
  if (!x_.defined()) {
    throw ValueError(fmt::format("{}: backward called before forward", name()));
  }
  const bool affine = options_.affine;
  BatchNormBackwardResult r = batch_norm_backward(
      dy, x_, weight_.value, running_mean_, running_var_, save_mean_, save_invstd_,
      /*train=*/used_batch_stats_, options_.eps, {true, affine, affine});
  if (affine) {
    const int64_t c = num_features_;
    if (options_.dtype == DType::kFloat32) {
      float* gw = weight_.grad.data<float>();
      float* gb = bias_.grad.data<float>();
      const float* dw = r.dweight.data<float>();
      const float* db = r.dbias.data<float>();
      for (int64_t i = 0; i < c; ++i) {
        gw[i] += dw[i];
        gb[i] += db[i];
      }
    } else {
      double* gw = weight_.grad.data<double>();
      double* gb = bias_.grad.data<double>();
      const double* dw = r.dweight.data<double>();
      const double* db = r.dbias.data<double>();
      for (int64_t i = 0; i < c; ++i) {
        gw[i] += dw[i];
        gb[i] += db[i];
      }
    }
  }
  return r.dx;
}

std::vector<std::pair<std::string, Parameter*>> BatchNorm::named_parameters() {
  if (!options_.affine) return {};
  return {{"weight", &weight_}, {"bias", &bias_}};
}

std::vector<std::pair<std::string, Tensor*>> BatchNorm::named_buffers() {
  if (!options_.track_running_stats) return {};
  return {{"running_mean", &running_mean_}, {"running_var", &running_var_}};
}

std::vector<std::pair<std::string, int64_t*>> BatchNorm::named_int_buffers() {
  if (!options_.track_running_stats) return {};
  return {{"num_batches_tracked", &num_batches_tracked_}};
}

std::string BatchNorm::repr() const {
  return fmt::format(
      "{}({}, eps={}, momentum={}, affine={}, track_running_stats={})", name(), num_features_,
      options_.eps, options_.momentum ? fmt::format("{}", *options_.momentum) : "None",
      options_.affine ? "True" : "False", options_.track_running_stats ? "True" : "False");
}

void BatchNorm1d::check_input_dim(const Tensor& x) const {
  if (x.dim() != 2 && x.dim() != 3) {
    throw ValueError(fmt::format("BatchNorm1d: expected 2D or 3D input (got {}D input)", x.dim()));
  }
}

void BatchNorm2d::check_input_dim(const Tensor& x) const {
  if (x.dim() != 4) {
    throw ValueError(fmt::format("BatchNorm2d: expected 4D input (got {}D input)", x.dim()));
  }
}

void BatchNorm3d::check_input_dim(const Tensor& x) const {
  if (x.dim() != 5) {
    throw ValueError(fmt::format("BatchNorm3d: expected 5D input (got {}D input)", x.dim()));
  }
}

}  // namespace bnorm::nn
