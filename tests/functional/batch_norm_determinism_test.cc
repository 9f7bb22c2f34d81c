// Bit-identical results for 1, 2, 3 and 8 threads and for contiguous vs channels-last input:
// forward (y, save_mean, save_invstd, running stats) and backward (dx, dweight, dbias).
// Shapes cover several row blocks, rows cut into segments (HW > 4096), C not a multiple of 64 and
// a tensor over 4 MiB (the NHWC walk path).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "bnorm/bnorm.h"
#include "support/compare.h"
#include "support/fills.h"

namespace bnorm::test {
namespace {

struct Outputs {
  std::vector<std::vector<double>> all;
};

// With planted, ±inf and NaN at fixed logical positions of some channels (below).
Outputs run(const Shape& shape, DType dt, MemoryFormat fmt, int threads, bool planted = false) {
  set_num_threads(threads);
  const int64_t C = shape[1];
  const std::size_t count = static_cast<std::size_t>(shape[0] * C * spatial_size(shape));
  std::vector<double> xv = randn(count, 21, 5.0, 3.0);
  if (planted) {
    // Channel c mod 4: 0 holds −inf and +inf at the same position of samples 0 and 1 (the same
    // accumulator slot: their sum is x86's default NaN, which has the sign bit set) and a NaN
    // (positive) in another slot, so NaNs of both signs meet in the slots' tree (without the
    // canonical NaN, NonFiniteChannelsAreTheSameBitsToo found 15 differing outputs, the 5-d
    // shape's save_mean, running_mean, y and dx among them); 1 a NaN; 2 +inf and a NaN; 3 nothing.
    // Logical index (n, c, s); N ≥ 2, HW ≥ 8.
    const int64_t hw = spatial_size(shape), n = shape[0];
    auto at = [&](int64_t i, int64_t c, int64_t s) -> double& { return xv[(i * C + c) * hw + s]; };
    for (int64_t c = 0; c < C; ++c) {
      if (c % 4 == 0) at(0, c, 3) = -INFINITY, at(1, c, 3) = INFINITY, at(0, c, 5) = NAN;
      if (c % 4 == 1) at(n / 2, c, 1) = NAN;
      if (c % 4 == 2) at(1, c, hw / 2) = INFINITY, at(n - 1, c, 0) = NAN;
    }
  }
  Tensor x = make_tensor(shape, xv, dt, fmt);
  Tensor dy = make_tensor(shape, randn(count, 22), dt, fmt);
  Tensor w = make_tensor({C}, randn(C, 23, 1.0, 0.2), dt);
  Tensor b = make_tensor({C}, randn(C, 24), dt);
  Tensor rm = Tensor::zeros({C}, dt), rv = Tensor::ones({C}, dt);
  BatchNormForwardResult f = batch_norm_forward_train(x, w, b, rm, rv, 0.1, 1e-5);
  BatchNormBackwardResult g =
      batch_norm_backward(dy, x, w, rm, rv, f.save_mean, f.save_invstd, true, 1e-5);
  Tensor ye = batch_norm_forward_infer(x, w, b, rm, rv, 1e-5);
  return {{f.y.to_vector(), f.save_mean.to_vector(), f.save_invstd.to_vector(), rm.to_vector(),
           rv.to_vector(), g.dx.to_vector(), g.dweight.to_vector(), g.dbias.to_vector(),
           ye.to_vector()}};
}

void expect_identical(const Outputs& a, const Outputs& b, const std::string& what) {
  const char* names[] = {"y",  "save_mean", "save_invstd", "running_mean", "running_var",
                         "dx", "dweight",   "dbias",       "y_eval"};
  for (std::size_t i = 0; i < a.all.size(); ++i) {
    EXPECT_TRUE(bit_identical(a.all[i], b.all[i]))
        << what << ": " << names[i] << " differs (max |diff| " << max_abs_diff(a.all[i], b.all[i])
        << ")";
  }
}

TEST(BatchNormDeterminism, SameBitsForAnyThreadCountAndLayout) {
  // {4, 200, 40, 40} and {2, 2060, 20, 15} are over 4 MiB: NHWC blocks read by walks, channel
  // ranges that depend on the thread count (the values must not); rows of 2060 channels take
  // ranges of whole pages where there are at most 2 threads (float) or 4 (double). The
  // reductions give a parallel chunk at least 32768 elements (smaller problems run on one
  // thread), so NCHW rows of HW < 8 (and NHWC rows of 13 channels) get a shape large enough to
  // be shared: {3000, 13, 1, 2}, 6 blocks of ~13000 elements.
  const Shape shapes[] = {{64, 5, 10, 10},  {2, 3, 70, 70},    {33, 130, 3, 5}, {3, 7, 2, 3, 50},
                          {4, 200, 40, 40}, {2, 2060, 20, 15}, {3000, 13, 1, 2}};
  for (const Shape& shape : shapes) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      const Outputs base = run(shape, dt, MemoryFormat::kContiguous, 1);
      for (int threads : {1, 2, 3, 8}) {
        for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
          expect_identical(base, run(shape, dt, fmt, threads),
                           shape_str(shape) + " " + dtype_name(dt) + " " + memory_format_name(fmt) +
                               " threads=" + std::to_string(threads));
        }
      }
    }
  }
  set_num_threads(2);
}

TEST(BatchNormDeterminism, NonFiniteChannelsAreTheSameBitsToo) {
  // A channel holding ±inf or NaN gives NaN statistics and outputs; their sign and payload came
  // from whichever NaN operand an addition met first (x86 keeps the first one's), which differed
  // between layouts (a random-shape comparison found mean nan in NCHW, −nan in NHWC). The finish
  // steps now give every NaN statistic as the one positive quiet NaN: all outputs match in bits.
  // Shapes with several blocks per channel, rows cut into segments, and the NHWC walks.
  for (const Shape& shape :
       {Shape{6, 8, 33, 40}, Shape{64, 12, 5, 7}, Shape{2, 2060, 20, 15}, Shape{2, 15, 2, 13, 2}}) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      const Outputs base = run(shape, dt, MemoryFormat::kContiguous, 1, true);
      for (int threads : {1, 2, 3}) {
        for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
          expect_identical(base, run(shape, dt, fmt, threads, true),
                           shape_str(shape) + " " + dtype_name(dt) + " " + memory_format_name(fmt) +
                               " threads=" + std::to_string(threads) + " (±inf, NaN planted)");
        }
      }
    }
  }
  set_num_threads(2);
}

TEST(BatchNormDeterminism, TwoDimensionalInputForAnyThreadCount) {
  // {40000, 3}: rows of fewer than 8 channels over 40 blocks, large enough to be shared.
  for (const Shape& shape : {Shape{5000, 3}, Shape{300, 130}, Shape{9000, 70}, Shape{40000, 3}}) {
    const Outputs base = run(shape, DType::kFloat32, MemoryFormat::kContiguous, 1);
    for (int threads : {2, 3, 8}) {
      expect_identical(base, run(shape, DType::kFloat32, MemoryFormat::kContiguous, threads),
                       shape_str(shape) + " threads=" + std::to_string(threads));
    }
  }
  set_num_threads(2);
}

}  // namespace
}  // namespace bnorm::test
