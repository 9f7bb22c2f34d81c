// What bnorm_bench measures: a shape from bench/shapes/*.txt, a layout, an op; and the interface
// every peer (oneDNN, libtorch) implements so that all of them run in one process.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace bnorm::bench {

/// kForwardAddRelu: training-mode y = relu(BN(x) + z), the ResNet block tail (fused in bnorm);
/// kBackwardAddRelu: its backward, dy → dx (and dz, dweight, dbias), after that forward.
enum class Op { kForwardTrain, kForwardInfer, kBackward, kForwardAddRelu, kBackwardAddRelu };
const char* op_name(Op op);

struct Problem {
  std::string layer;           ///< e.g. "conv1.bn1"
  std::vector<int64_t> shape;  ///< (N, C) or (N, C, H, W)
  std::string layout;          ///< "NCHW", "NHWC" (4-d) or "NC" (2-d); peers may add "nChw16c"
  int64_t numel() const;
  int64_t channels() const { return shape[1]; }
  std::string shape_str() const;
};

/// The inputs every implementation gets, in logical (N, C, H, W) order.
struct Inputs {
  std::vector<float> x, dy, z, weight, bias, running_mean, running_var;
};
Inputs make_inputs(const Problem& p, uint64_t seed);

/// Bytes an op must move at least, for a tensor larger than the caches: forward inference reads x
/// and writes y (2 passes), training forward also reads x for the statistics (3), backward reads
/// x and dy for the sums, again for dx, and writes dx (5); BN + Add + ReLU reads x twice and z
/// once and writes y (4; bnorm's 1-bit mask adds 1/32); its backward reads x and dy twice and
/// writes dx and dz (6; plus the mask twice, 1/16).
double floor_bytes(const Problem& p, Op op);

/// One peer implementation of one (problem, op).
class Runner {
 public:
  virtual ~Runner() = default;
  /// Runs the op once (outputs preallocated; no allocation in the timed call).
  virtual void run() = 0;
  /// The op's main output (y, or dx for backward) in logical order, after run().
  virtual std::vector<float> output() = 0;
};

/// A library that can run some problems.
class Peer {
 public:
  virtual ~Peer() = default;
  virtual std::string name() const = 0;
  /// Layouts it is measured on for 4-d problems (its fast blocked one included).
  virtual std::vector<std::string> layouts_4d() const { return {"NCHW", "NHWC"}; }
  /// Builds a runner, or returns null with `why` set when it cannot run the problem.
  virtual std::unique_ptr<Runner> make(const Problem& p, Op op, const Inputs& in,
                                       std::string& why) = 0;
  /// A line about the peer's build (version, instruction set).
  virtual std::string describe() const = 0;
};

std::unique_ptr<Peer> make_onednn_peer();  ///< null unless built with BNORM_WITH_ONEDNN
/// Null unless built with BNORM_WITH_LIBTORCH; sets libtorch's (and OpenMP's) threads.
std::unique_ptr<Peer> make_libtorch_peer(int threads);

}  // namespace bnorm::bench
