// The training loop shared by `bnorm train`, `bnorm compare` and `bnorm bikes`: SGD or Adam
// over a DataLoader, periodic test evaluation, divergence detection, optional probes.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bnorm/data/idx.h"
#include "bnorm/nn/sequential.h"

namespace bnorm::cli {

struct TrainConfig {
  std::string optimizer = "sgd";  ///< "sgd" or "adam"
  double lr = 0.5;
  double momentum = 0.0;
  double weight_decay = 0.0;
  std::string schedule = "none";  ///< "none", "step" (×0.1 at 50% and 75%), "cosine"
  int64_t steps = 1000;
  int64_t batch_size = 60;
  int64_t eval_every = 100;      ///< steps between test evaluations (0: only at the end)
  int64_t eval_samples = 10000;  ///< test images per evaluation (the first ones)
  uint64_t seed = 1;             ///< batch order
  bool quiet = false;
  /// Resume: the steps already done (the batch order continues where it stopped) and the
  /// optimizer state saved with them.
  int64_t start_step = 0;
  std::vector<std::pair<std::string, Tensor>> optimizer_state;
  std::string label = "train";
};

struct CurvePoint {
  int64_t step;
  double train_loss;  ///< mean over the steps since the previous point
  double test_acc;
  double test_loss;
};

struct TrainResult {
  std::vector<CurvePoint> curve;
  bool diverged = false;
  int64_t diverged_at = -1;
  double final_test_acc = 0, final_test_loss = 0, final_train_acc = 0;
  double seconds = 0;
  double steps_per_second = 0;
  std::vector<std::pair<std::string, Tensor>> optimizer_state;  ///< at the end, for checkpoints
};

/// Accuracy and mean loss of `net` (eval mode) on the first `limit` rows of `set`.
std::pair<double, double> evaluate(nn::Sequential& net, const data::ImageSet& set, int64_t limit,
                                   bool as_images);

/// Trains `net` on `train`, evaluating on `test`. `probe(step)` is called at every evaluation
/// point (and at step 0) before the network is switched back to training. as_images reshapes
/// rows to (N, 1, side, side) for convolutional models. Never throws for divergence: it stops
/// and reports diverged = true when the loss becomes NaN/Inf or exceeds 1e4.
TrainResult train_classifier(nn::Sequential& net, const data::ImageSet& train,
                             const data::ImageSet& test, const TrainConfig& cfg, bool as_images,
                             const std::function<void(int64_t)>& probe = {});

}  // namespace bnorm::cli
