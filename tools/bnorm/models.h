// The networks the CLI trains: the paper's 3×100 MLP, a small CNN, or a layer list; each with or
// without BatchNorm between the linear/convolutional part and the activation.
#pragma once

#include <memory>
#include <string>

#include "bnorm/nn/sequential.h"

namespace bnorm::cli {

struct ModelSpec {
  /// "mlp" (784-100-100-100-10), "cnn" (conv32-pool-conv64-pool-fc128-10), "linear" (784-10),
  /// or a layer list such as "100,100,10" (hidden widths then classes).
  std::string model = "mlp";
  bool batch_norm = true;
  /// "sigmoid" (the paper's), "relu", "tanh" or "none".
  std::string activation = "sigmoid";
  /// Standard deviation of N(0, σ²) weight init; 0 keeps PyTorch's default U(±1/√fan_in).
  double init_std = 0.0;
  /// Linear/conv biases (dropped automatically before a BatchNorm, where β subsumes them).
  bool bias = true;
  /// eps of every BatchNorm layer (PyTorch's default 1e-5).
  double bn_eps = 1e-5;
  /// Dropout probability after each hidden activation (0: none).
  double dropout = 0.0;
  int64_t inputs = 784, classes = 10, image_side = 28;
};

/// Builds the network; initial weights come from the global generator (bnorm::manual_seed).
/// Throws ValueError for an unknown model or activation.
std::unique_ptr<nn::Sequential> build_model(const ModelSpec& spec);

/// A one-line description: "mlp+bn sigmoid init=N(0,0.1²)".
std::string describe(const ModelSpec& spec);

}  // namespace bnorm::cli
