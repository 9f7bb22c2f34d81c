// BatchNorm1d/2d/3d modules with PyTorch's options, defaults, parameter and buffer names.
// Checked by tests/nn/batchnorm_test.cc (PyTorch golden values over several steps, momentum
// None, affine off, track_running_stats off, bad input).
#pragma once

#include <cstdint>
#include <optional>

#include "bnorm/functional/batch_norm.h"
#include "bnorm/nn/module.h"

namespace bnorm::nn {

/// Options of a BatchNorm module; the defaults are PyTorch's.
struct BatchNormOptions {
  double eps = kDefaultEps;
  /// Weight of the new batch statistic in the running average. std::nullopt (PyTorch: None)
  /// means a cumulative moving average: factor 1/num_batches_tracked.
  std::optional<double> momentum = kDefaultMomentum;
  /// Learnable weight (init 1) and bias (init 0).
  bool affine = true;
  /// Keep running_mean (init 0), running_var (init 1) and num_batches_tracked (init 0); when
  /// false there are no buffers and batch statistics are used in eval mode too.
  bool track_running_stats = true;
  DType dtype = DType::kFloat32;
};

/// The shared implementation of BatchNorm1d/2d/3d (PyTorch: _BatchNorm).
class BatchNorm : public Module {
 public:
  /// Throws ValueError for num_features < 1, eps < 0 or momentum outside [0, 1].
  BatchNorm(int64_t num_features, BatchNormOptions options = {});

  /// Training mode: batch statistics, running buffers updated (num_batches_tracked += 1).
  /// Eval mode: running statistics, or batch statistics when track_running_stats is false.
  /// Throws ValueError for the wrong rank ("BatchNorm2d: expected 4D input (got 3D input)"),
  /// a channel count other than num_features, or one value per channel in training.
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;

  std::vector<std::pair<std::string, Parameter*>> named_parameters() override;
  std::vector<std::pair<std::string, Tensor*>> named_buffers() override;
  std::vector<std::pair<std::string, int64_t*>> named_int_buffers() override;
  std::string repr() const override;

  int64_t num_features() const { return num_features_; }
  const BatchNormOptions& options() const { return options_; }
  Parameter& weight() { return weight_; }
  Parameter& bias() { return bias_; }
  Tensor& running_mean() { return running_mean_; }
  Tensor& running_var() { return running_var_; }
  int64_t num_batches_tracked() const { return num_batches_tracked_; }
  void set_num_batches_tracked(int64_t n) { num_batches_tracked_ = n; }
  /// Restores running_mean = 0, running_var = 1, num_batches_tracked = 0.
  void reset_running_stats();
  /// Also restores weight = 1, bias = 0.
  void reset_parameters();

 protected:
  /// Throws unless x's rank suits the subclass.
  virtual void check_input_dim(const Tensor& x) const = 0;
  virtual const char* name() const = 0;

 private:
  int64_t num_features_;
  BatchNormOptions options_;
  Parameter weight_, bias_;
  Tensor running_mean_, running_var_;
  int64_t num_batches_tracked_ = 0;
  // Cached by forward for backward.
  Tensor x_, save_mean_, save_invstd_;
  bool used_batch_stats_ = true;
};

/// Batch norm over (N, C) or (N, C, L) input, per feature C. PyTorch: nn.BatchNorm1d.
class BatchNorm1d : public BatchNorm {
 public:
  using BatchNorm::BatchNorm;

 protected:
  void check_input_dim(const Tensor& x) const override;
  const char* name() const override { return "BatchNorm1d"; }
};

/// Batch norm over (N, C, H, W) input, per channel. PyTorch: nn.BatchNorm2d.
class BatchNorm2d : public BatchNorm {
 public:
  using BatchNorm::BatchNorm;

 protected:
  void check_input_dim(const Tensor& x) const override;
  const char* name() const override { return "BatchNorm2d"; }
};

/// Batch norm over (N, C, D, H, W) input, per channel. PyTorch: nn.BatchNorm3d.
class BatchNorm3d : public BatchNorm {
 public:
  using BatchNorm::BatchNorm;

 protected:
  void check_input_dim(const Tensor& x) const override;
  const char* name() const override { return "BatchNorm3d"; }
};

}  // namespace bnorm::nn
