// Fused BN + Add + ReLU: the same values as the unfused composition relu(BN(x) + z), the same
// statistics and running buffers, the mask, bit-identity between implementations, gradients by
// finite differences (float64), and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "bnorm/bnorm.h"
#include "support/compare.h"
#include "support/expect_error.h"
#include "support/fills.h"
#include "support/stream_limit.h"

namespace bnorm::test {
namespace {

struct Fused {
  Tensor y, save_mean, save_invstd, rm, rv;
  ReluMask mask;
};

Fused run_fused(const Tensor& x, const Tensor& z, const Tensor& w, const Tensor& b) {
  const int64_t C = x.size(1);
  Fused f;
  f.y = Tensor::empty(x.shape(), x.dtype(), x.memory_format());
  f.save_mean = Tensor::empty({C}, x.dtype());
  f.save_invstd = Tensor::empty({C}, x.dtype());
  f.rm = Tensor::zeros({C}, x.dtype());
  f.rv = Tensor::ones({C}, x.dtype());
  batch_norm_add_relu_forward_train_out(x, z, w, b, f.rm, f.rv, 0.1, 1e-5, f.y, f.save_mean,
                                        f.save_invstd, f.mask);
  return f;
}

void expect_matches_unfused(const Shape& shape, DType dt, MemoryFormat fmt, bool with_z,
                            uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + dtype_name(dt) + memory_format_name(fmt) + (with_z ? " +z" : ""));
  const int64_t C = shape[1];
  const std::size_t count = static_cast<std::size_t>(shape[0] * C * spatial_size(shape));
  const auto xv = round_to(randn(count, seed), dt), zv = round_to(randn(count, seed + 1), dt);
  Tensor x = make_tensor(shape, xv, dt, fmt);
  Tensor z = with_z ? make_tensor(shape, zv, dt, fmt) : Tensor();
  Tensor w = make_tensor({C}, randn(C, seed + 2, 1.0, 0.3), dt),
         b = make_tensor({C}, randn(C, seed + 3), dt);
  Fused f = run_fused(x, z, w, b);
  Tensor rm = Tensor::zeros({C}, dt), rv = Tensor::ones({C}, dt);
  BatchNormForwardResult u = batch_norm_forward_train(x, w, b, rm, rv, 0.1, 1e-5);
  EXPECT_TRUE(bit_identical(f.save_mean.to_vector(), u.save_mean.to_vector()));
  EXPECT_TRUE(bit_identical(f.rv.to_vector(), rv.to_vector()));
  const auto ybn = u.y.to_vector(), yf = f.y.to_vector();
  std::vector<double> expect(ybn.size());
  for (std::size_t i = 0; i < ybn.size(); ++i) {
    expect[i] = std::max(0.0, ybn[i] + (with_z ? zv[i] : 0.0));
  }
  const double tol = dt == DType::kFloat32 ? 2e-6 : 1e-13;
  EXPECT_TRUE(all_close(yf, expect, tol, tol));
  // The mask is 1 exactly where y > 0 (memory order; compare through the output).
  const Tensor ymem = f.y.to(DType::kFloat64);
  const double* yp = ymem.data<double>();
  for (int64_t i = 0; i < f.mask.size(); ++i) ASSERT_EQ(f.mask[i], yp[i] > 0);
}

TEST(BatchNormAddRelu, MatchesTheUnfusedComposition) {
  const Shape shapes[] = {{8, 5}, {4, 3, 7, 5}, {2, 17, 3, 3}, {3, 4, 2, 3, 5}};
  uint64_t seed = 1;
  for (const Shape& shape : shapes) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
        if (fmt == MemoryFormat::kChannelsLast && shape.size() < 4) continue;
        for (bool with_z : {false, true}) expect_matches_unfused(shape, dt, fmt, with_z, seed += 4);
      }
    }
  }
}

// Passes over more than stream_limit_bytes() of tensors (lowered here to 16 MiB) go out with
// non-temporal stores (planes of whole cache lines here).
TEST(BatchNormAddRelu, StreamedOutputMatchesTheUnfusedComposition) {
  const test::ScopedStreamLimit limit(std::size_t{16} << 20);
  for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast})
    expect_matches_unfused({4, 64, 128, 130}, DType::kFloat32, fmt, /*with_z=*/true, 77);
}

TEST(BatchNormAddRelu, ImplementationsGiveTheSameBits) {
  Tensor x = make_tensor({6, 40, 5, 7}, randn(6 * 40 * 35, 3), DType::kFloat32,
                         MemoryFormat::kChannelsLast);
  Tensor z = make_tensor({6, 40, 5, 7}, randn(6 * 40 * 35, 4), DType::kFloat32,
                         MemoryFormat::kChannelsLast);
  Tensor w = Tensor::ones({40}), b = Tensor::full({40}, 0.1);
  Fused base = run_fused(x, z, w, b);
  for (const char* impl : {"cpu:blocked", "ref"}) {
    setenv("BNORM_IMPL", impl, 1);
    Fused other = run_fused(x, z, w, b);
    unsetenv("BNORM_IMPL");
    EXPECT_EQ(other.mask, base.mask) << impl;
    // Every implementation applies the same double operations per element: the same bits.
    EXPECT_TRUE(bit_identical(other.y.to_vector(), base.y.to_vector())) << impl;
  }
}

TEST(BatchNormAddRelu, GradientsByFiniteDifferences) {
  const Shape shape{3, 2, 2, 3};
  const int64_t C = 2;
  const std::size_t count = 36;
  const DType dt = DType::kFloat64;
  const auto xv = randn(count, 7, 0.3, 1.5), zv = randn(count, 8, 0.2), g = randn(count, 9);
  Tensor w = make_tensor({C}, {1.3, 0.7}, dt), b = make_tensor({C}, {0.2, -0.1}, dt);
  auto loss = [&](const std::vector<double>& xs, const std::vector<double>& zs, const Tensor& ww,
                  const Tensor& bb) {
    Fused f = run_fused(make_tensor(shape, xs, dt), make_tensor(shape, zs, dt), ww, bb);
    const auto y = f.y.to_vector();
    double s = 0;
    for (std::size_t i = 0; i < y.size(); ++i) s += y[i] * g[i];
    return s;
  };
  Tensor x = make_tensor(shape, xv, dt), z = make_tensor(shape, zv, dt);
  Fused f = run_fused(x, z, w, b);
  Tensor dx = Tensor::empty(shape, dt), dz = Tensor::empty(shape, dt);
  Tensor dw = Tensor::empty({C}, dt), db = Tensor::empty({C}, dt);
  batch_norm_add_relu_backward_out(make_tensor(shape, g, dt), x, w, Tensor(), Tensor(), f.save_mean,
                                   f.save_invstd, f.mask, /*train=*/true, 1e-5, {true, true, true},
                                   dx, dz, dw, db);
  const double h = 1e-6;
  std::vector<double> ndx(count), ndz(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto p = xv, m = xv;
    p[i] += h;
    m[i] -= h;
    ndx[i] = (loss(p, zv, w, b) - loss(m, zv, w, b)) / (2 * h);
    auto pz = zv, mz = zv;
    pz[i] += h;
    mz[i] -= h;
    ndz[i] = (loss(xv, pz, w, b) - loss(xv, mz, w, b)) / (2 * h);
  }
  EXPECT_TRUE(all_close(dx.to_vector(), ndx, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(dz.to_vector(), ndz, 1e-6, 1e-6));
  std::vector<double> ndw(C), ndb(C);
  for (int64_t c = 0; c < C; ++c) {
    Tensor wp = w.clone(), wm = w.clone(), bp = b.clone(), bm = b.clone();
    wp.set_item({c}, w.item({c}) + h);
    wm.set_item({c}, w.item({c}) - h);
    bp.set_item({c}, b.item({c}) + h);
    bm.set_item({c}, b.item({c}) - h);
    ndw[c] = (loss(xv, zv, wp, b) - loss(xv, zv, wm, b)) / (2 * h);
    ndb[c] = (loss(xv, zv, w, bp) - loss(xv, zv, w, bm)) / (2 * h);
  }
  EXPECT_TRUE(all_close(dw.to_vector(), ndw, 1e-6, 1e-6));
  EXPECT_TRUE(all_close(db.to_vector(), ndb, 1e-6, 1e-6));
}

// dy masked by the forward's ReLU mask, in memory order: what the unfused composition feeds to
// batch_norm_backward.
template <typename T>
Tensor masked_dy(const Tensor& dy, const ReluMask& mask) {
  Tensor g = dy.clone();
  T* p = static_cast<T*>(g.raw_data());
  for (int64_t i = 0; i < mask.size(); ++i)
    if (!mask[i]) p[i] = T(0);
  return g;
}

void expect_backward_is_composition(const Shape& shape, DType dt, MemoryFormat fmt, uint64_t seed) {
  SCOPED_TRACE(shape_str(shape) + dtype_name(dt) + memory_format_name(fmt));
  const int64_t C = shape[1];
  const std::size_t count = static_cast<std::size_t>(shape[0] * C * spatial_size(shape));
  Tensor x = make_tensor(shape, randn(count, seed, 0.5, 2.0), dt, fmt);
  Tensor z = make_tensor(shape, randn(count, seed + 1), dt, fmt);
  Tensor dy = make_tensor(shape, randn(count, seed + 2), dt, fmt);
  Tensor w = make_tensor({C}, randn(C, seed + 3, 1.0, 0.3), dt),
         b = make_tensor({C}, randn(C, seed + 4), dt);
  Fused f = run_fused(x, z, w, b);
  const Tensor g =
      dt == DType::kFloat32 ? masked_dy<float>(dy, f.mask) : masked_dy<double>(dy, f.mask);
  const BatchNormBackwardResult u =
      batch_norm_backward(g, x, w, Tensor(), Tensor(), f.save_mean, f.save_invstd, true, 1e-5);
  auto empty = [&] { return Tensor::empty(shape, dt, fmt); };
  // Fresh dx and dz; no dz (BN + ReLU); dz over dy; dx over dy.
  for (int variant = 0; variant < 4; ++variant) {
    SCOPED_TRACE(variant);
    Tensor dyv = variant >= 2 ? dy.clone() : dy;
    Tensor dx = variant == 3 ? dyv : empty();
    Tensor dz = variant == 1 ? Tensor() : variant == 2 ? dyv : empty();
    Tensor dw = Tensor::empty({C}, dt), db = Tensor::empty({C}, dt);
    batch_norm_add_relu_backward_out(dyv, x, w, Tensor(), Tensor(), f.save_mean, f.save_invstd,
                                     f.mask, true, 1e-5, {true, true, true}, dx, dz, dw, db);
    EXPECT_TRUE(bit_identical(dx.to_vector(), u.dx.to_vector()));
    EXPECT_TRUE(bit_identical(dw.to_vector(), u.dweight.to_vector()));
    EXPECT_TRUE(bit_identical(db.to_vector(), u.dbias.to_vector()));
    if (dz.defined()) {
      EXPECT_TRUE(bit_identical(dz.to_vector(), g.to_vector()));
    }
  }
}

// The fused backward reads dy and the mask in its reduction and writes dx and dz in one pass:
// the same bits as masking dy and calling batch_norm_backward, on every path (row tails, NHWC
// rows and walks, and — with the streaming limit lowered to 16 MiB for the last shape — outputs
// streamed past the cache).
TEST(BatchNormAddRelu, BackwardIsTheCompositionBitForBit) {
  const Shape shapes[] = {{8, 5}, {4, 3, 7, 5}, {2, 17, 3, 3}, {3, 4, 2, 3, 5}, {3, 72, 7, 7}};
  uint64_t seed = 300;
  for (const Shape& shape : shapes) {
    for (DType dt : {DType::kFloat32, DType::kFloat64}) {
      for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast}) {
        if (fmt == MemoryFormat::kChannelsLast && shape.size() < 4) continue;
        expect_backward_is_composition(shape, dt, fmt, seed += 5);
      }
    }
  }
  const test::ScopedStreamLimit limit(std::size_t{16} << 20);
  for (MemoryFormat fmt : {MemoryFormat::kContiguous, MemoryFormat::kChannelsLast})
    expect_backward_is_composition({4, 64, 128, 130}, DType::kFloat32, fmt, 99);
}

TEST(BatchNormAddRelu, EvalModeAndNaN) {
  Tensor x = make_tensor({4, 3}, randn(12, 11), DType::kFloat32);
  x.set_item({2, 1}, NAN);
  Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3}), y = Tensor::empty({4, 3});
  ReluMask mask;
  batch_norm_add_relu_forward_infer_out(x, Tensor(), Tensor(), Tensor(), rm, rv, 1e-5, y, mask);
  EXPECT_TRUE(std::isnan(y.item({2, 1})));  // NaN stays NaN, as torch.relu
  EXPECT_EQ(mask[2 * 3 + 1], 0);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ(y.item({i, 0}), std::max(0.0, static_cast<double>(static_cast<float>(
                                                x.item({i, 0}) / std::sqrt(1 + 1e-5)))));
}

TEST(BatchNormAddRelu, BadInput) {
  Tensor x = Tensor::ones({4, 3, 2, 2}), y = Tensor::empty({4, 3, 2, 2});
  Tensor sm = Tensor::empty({3}), si = Tensor::empty({3});
  ReluMask mask;
  expect_error<ValueError>(
      [&] {
        batch_norm_add_relu_forward_train_out(x, Tensor::ones({4, 3, 2, 3}), Tensor(), Tensor(),
                                              Tensor(), Tensor(), 0.1, 1e-5, y, sm, si, mask);
      },
      "batch_norm_add_relu_forward_train: z must have x's shape (4, 3, 2, 2), got (4, 3, 2, 3)");
  EXPECT_TRUE(mask.empty());  // nothing written
  Tensor dx = Tensor::empty({4, 3, 2, 2}), dz, dw, db;
  expect_error<ValueError>(
      [&] {
        batch_norm_add_relu_backward_out(x, x, Tensor(), Tensor(), Tensor(), sm, si, ReluMask(5),
                                         true, 1e-5, {true, false, false}, dx, dz, dw, db);
      },
      "mask must have x.numel()=48 entries (from the forward), got 5");
  ReluMask full(48);
  expect_error<ValueError>(
      [&] {
        batch_norm_add_relu_backward_out(x, x, Tensor(), Tensor(), Tensor(), sm, si, full, true,
                                         1e-5, {true, false, false}, dx, dx, dw, db);
      },
      "batch_norm_add_relu_backward: dz must not overlap dx");
  // A NaN in dy under NonFinitePolicy::kThrow: found by the reduction, before dx or dz is
  // written (the unfused composition wrote dz first).
  Tensor xs = make_tensor({4, 3, 2, 2}, randn(48, 5), DType::kFloat32);
  Tensor dy = Tensor::ones({4, 3, 2, 2});
  dy.set_item({1, 2, 0, 1}, NAN);
  ReluMask all(48);
  for (int64_t i = 0; i < 6; ++i) all.data()[i] = 0xff;
  Tensor dz2 = Tensor::full({4, 3, 2, 2}, 7.0), dx2 = Tensor::full({4, 3, 2, 2}, 7.0);
  Fused f = run_fused(xs, Tensor(), Tensor(), Tensor());
  set_nonfinite_policy(NonFinitePolicy::kThrow);
  expect_error<ValueError>(
      [&] {
        batch_norm_add_relu_backward_out(dy, xs, Tensor(), Tensor(), Tensor(), f.save_mean,
                                         f.save_invstd, all, true, 1e-5, {true, false, false}, dx2,
                                         dz2, dw, db);
      },
      "NaN or Inf in channel 2");
  set_nonfinite_policy(NonFinitePolicy::kPropagate);
  for (double v : dz2.to_vector()) ASSERT_EQ(v, 7.0);
  for (double v : dx2.to_vector()) ASSERT_EQ(v, 7.0);
}

}  // namespace
}  // namespace bnorm::test
