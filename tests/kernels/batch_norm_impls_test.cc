// Every registry entry vs the reference kernels: every layout, both dtypes, C=1, HW=1, sizes that
// are not multiples of a vector width, and a block-boundary-crossing HW. Adding an implementation
// to the registry adds it here without edits.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "hwy/targets.h"
#include "kernels/batch_norm_impls.h"
#include "support/compare.h"
#include "support/fills.h"

namespace bnorm::kernels {
namespace {

struct Case {
  int64_t n, c, hw;
};

const Case kCases[] = {{2, 1, 1},
                       {7, 3, 1},
                       {1, 5, 9},
                       {3, 1, 17},
                       {4, 13, 31},
                       {2, 70, 5},
                       {5, 2, 257},
                       {2, 3, 4097},
                       {1, 2, 9000},
                       {33, 129, 3},
                       // NHWC: several 64-channel chunks walked by channel vectors.
                       {2, 300, 3},
                       {2, 80, 40},
                       // NHWC rows of at most 64 channels, read row by row; NCHW groups of 4
                       // channels with a masked row tail (49 = 6·8 + 1, 1030 = 1024 + 6).
                       {3, 64, 49},
                       {2, 40, 1030},
                       {300, 16, 1},
                       // Over 4 MiB (float): NHWC blocks read by walks with prefetch, not row by
                       // row; 138 = 17 vectors + 2 scalar channels; 4100 = 4·1024 + 4; walk
                       // units of several 49-position rows; 2-d rows walked linearly.
                       {2, 138, 4100},
                       {400, 72, 49},
                       {20000, 72, 1}};

// Stores logical-order `v` into the problem's layout.
template <typename T>
std::vector<T> to_layout(const BatchNormProblem& p, const std::vector<double>& v) {
  std::vector<T> out(v.size());
  for (int64_t n = 0; n < p.n; ++n)
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t s = 0; s < p.hw; ++s) {
        const int64_t li = (n * p.c + c) * p.hw + s;
        const int64_t mi = p.layout == Layout::kNCHW ? li : (n * p.hw + s) * p.c + c;
        out[mi] = static_cast<T>(v[li]);
      }
  return out;
}

// A packed ReLU mask (relu_mask_bits.h) with about half the bits set, and dy masked by it: the
// input of the unfused composition the fused backward must match.
std::vector<uint8_t> random_mask(std::size_t count, uint64_t seed) {
  const std::vector<double> u = test::randn(count, seed);
  std::vector<uint8_t> mask((count + 7) / 8, 0);
  for (std::size_t i = 0; i < count; ++i)
    if (u[i] > 0) mask[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
  return mask;
}
template <typename T>
std::vector<T> masked(const std::vector<T>& dy, const std::vector<uint8_t>& mask) {
  std::vector<T> out(dy.size());
  for (std::size_t i = 0; i < dy.size(); ++i) out[i] = (mask[i / 8] >> (i % 8)) & 1 ? dy[i] : T(0);
  return out;
}

template <typename T>
void check_impl(const BatchNormImpl& impl, const BatchNormProblem& p, uint64_t seed) {
  SCOPED_TRACE(std::string(impl.name) + " " + problem_str(p));
  const std::size_t count = static_cast<std::size_t>(p.n * p.c * p.hw);
  const std::vector<T> x = to_layout<T>(p, test::randn(count, seed, 3.0, 2.0));
  const std::vector<T> dy = to_layout<T>(p, test::randn(count, seed + 1));
  const std::size_t C = static_cast<std::size_t>(p.c);
  std::vector<double> mean(C), var(C), rmean(C), rvar(C);
  impl.stats(p, x.data(), mean.data(), var.data());
  reference::stats(p, x.data(), rmean.data(), rvar.data());
  const double tol = 1e-13;
  EXPECT_TRUE(test::all_close(mean, rmean, tol, tol));
  EXPECT_TRUE(test::all_close(var, rvar, tol, tol));

  std::vector<double> scale = test::randn(C, seed + 2), shift = test::randn(C, seed + 3);
  std::vector<T> y(count), ry(count);
  impl.normalize(p, x.data(), rmean.data(), scale.data(), shift.data(), y.data());
  reference::normalize(p, x.data(), rmean.data(), scale.data(), shift.data(), ry.data());
  const double out_tol = sizeof(T) == 4 ? 1e-6 : 1e-13;
  EXPECT_TRUE(test::all_close(std::vector<double>(y.begin(), y.end()),
                              std::vector<double>(ry.begin(), ry.end()), out_tol, out_tol));

  std::vector<double> s0(C), s1(C), rs0(C), rs1(C);
  impl.backward_reduce(p, x.data(), dy.data(), nullptr, rmean.data(), s0.data(), s1.data());
  reference::backward_reduce(p, x.data(), dy.data(), nullptr, rmean.data(), rs0.data(), rs1.data());
  const double red_tol = 1e-12 * std::sqrt(static_cast<double>(p.n * p.hw));
  EXPECT_TRUE(test::all_close(s0, rs0, red_tol, 1e-12));
  EXPECT_TRUE(test::all_close(s1, rs1, red_tol, 1e-12));

  std::vector<double> k3 = test::randn(C, seed + 4);
  std::vector<T> dx(count), rdx(count);
  impl.backward_dx(p, x.data(), dy.data(), nullptr, rmean.data(), scale.data(), shift.data(),
                   k3.data(), dx.data(), nullptr);
  reference::backward_dx(p, x.data(), dy.data(), nullptr, rmean.data(), scale.data(), shift.data(),
                         k3.data(), rdx.data(), nullptr);
  EXPECT_TRUE(test::all_close(std::vector<double>(dx.begin(), dx.end()),
                              std::vector<double>(rdx.begin(), rdx.end()), out_tol, out_tol));
  // In place: dx written over dy.
  std::vector<T> inplace = dy;
  impl.backward_dx(p, x.data(), inplace.data(), nullptr, rmean.data(), scale.data(), shift.data(),
                   k3.data(), inplace.data(), nullptr);
  EXPECT_EQ(inplace, dx);

  // The fused BN + ReLU backward (a ReLU mask) gives the bits of the same implementation run on
  // dy masked first; g_out receives that masked dy, also in place over dy.
  const std::vector<uint8_t> mask = random_mask(count, seed + 5);
  const std::vector<T> dym = masked(dy, mask);
  std::vector<double> m0(C), m1(C);
  impl.backward_reduce(p, x.data(), dy.data(), mask.data(), rmean.data(), m0.data(), m1.data());
  impl.backward_reduce(p, x.data(), dym.data(), nullptr, rmean.data(), s0.data(), s1.data());
  EXPECT_TRUE(test::bit_identical(m0, s0));
  EXPECT_TRUE(test::bit_identical(m1, s1));
  std::vector<T> g(count), dxm(count);
  impl.backward_dx(p, x.data(), dy.data(), mask.data(), rmean.data(), scale.data(), shift.data(),
                   k3.data(), dxm.data(), g.data());
  impl.backward_dx(p, x.data(), dym.data(), nullptr, rmean.data(), scale.data(), shift.data(),
                   k3.data(), dx.data(), nullptr);
  EXPECT_EQ(dxm, dx);
  EXPECT_EQ(g, dym);
  inplace = dy;
  impl.backward_dx(p, x.data(), inplace.data(), mask.data(), rmean.data(), scale.data(),
                   shift.data(), k3.data(), dxm.data(), inplace.data());
  EXPECT_EQ(inplace, dym);
  EXPECT_EQ(dxm, dx);

  // The fused forward epilogue: y = relu(normalize + z) and the mask bits, as the reference's.
  if (impl.normalize_add_relu) {
    std::vector<uint8_t> bits((count + 7) / 8, 0xff), rbits((count + 7) / 8, 0);
    impl.normalize_add_relu(p, x.data(), dy.data(), rmean.data(), scale.data(), shift.data(),
                            y.data(), bits.data());
    reference::normalize_add_relu(p, x.data(), dy.data(), rmean.data(), scale.data(), shift.data(),
                                  ry.data(), rbits.data());
    EXPECT_EQ(y, ry);
    EXPECT_EQ(bits, rbits);
  }
}

// Every optimized implementation follows Note [Canonical reduction order] with the same
// per-element operations, so it must give the same bits as "cpu:blocked", the portable one.
template <typename T>
void check_bit_identical(const BatchNormImpl& impl, const BatchNormImpl& base,
                         const BatchNormProblem& p, uint64_t seed) {
  SCOPED_TRACE(std::string(impl.name) + " vs " + base.name + " " + problem_str(p));
  const std::size_t count = static_cast<std::size_t>(p.n * p.c * p.hw),
                    C = static_cast<std::size_t>(p.c);
  const std::vector<T> x = to_layout<T>(p, test::randn(count, seed, -2.0, 3.0));
  const std::vector<T> dy = to_layout<T>(p, test::randn(count, seed + 1));
  std::vector<double> m1(C), v1(C), m2(C), v2(C);
  impl.stats(p, x.data(), m1.data(), v1.data());
  base.stats(p, x.data(), m2.data(), v2.data());
  EXPECT_TRUE(test::bit_identical(m1, m2));
  EXPECT_TRUE(test::bit_identical(v1, v2));
  const std::vector<double> sc = test::randn(C, seed + 2), sh = test::randn(C, seed + 3),
                            k3 = test::randn(C, seed + 4);
  std::vector<T> y1(count), y2(count);
  impl.normalize(p, x.data(), m2.data(), sc.data(), sh.data(), y1.data());
  base.normalize(p, x.data(), m2.data(), sc.data(), sh.data(), y2.data());
  EXPECT_EQ(y1, y2);
  std::vector<double> a0(C), a1(C), b0(C), b1(C);
  impl.backward_reduce(p, x.data(), dy.data(), nullptr, m2.data(), a0.data(), a1.data());
  base.backward_reduce(p, x.data(), dy.data(), nullptr, m2.data(), b0.data(), b1.data());
  EXPECT_TRUE(test::bit_identical(a0, b0));
  EXPECT_TRUE(test::bit_identical(a1, b1));
  impl.backward_dx(p, x.data(), dy.data(), nullptr, m2.data(), sc.data(), sh.data(), k3.data(),
                   y1.data(), nullptr);
  base.backward_dx(p, x.data(), dy.data(), nullptr, m2.data(), sc.data(), sh.data(), k3.data(),
                   y2.data(), nullptr);
  EXPECT_EQ(y1, y2);
  // With a ReLU mask (the fused BN + ReLU backward).
  const std::vector<uint8_t> mask = random_mask(count, seed + 5);
  impl.backward_reduce(p, x.data(), dy.data(), mask.data(), m2.data(), a0.data(), a1.data());
  base.backward_reduce(p, x.data(), dy.data(), mask.data(), m2.data(), b0.data(), b1.data());
  EXPECT_TRUE(test::bit_identical(a0, b0));
  EXPECT_TRUE(test::bit_identical(a1, b1));
  std::vector<T> g1(count), g2(count);
  impl.backward_dx(p, x.data(), dy.data(), mask.data(), m2.data(), sc.data(), sh.data(), k3.data(),
                   y1.data(), g1.data());
  base.backward_dx(p, x.data(), dy.data(), mask.data(), m2.data(), sc.data(), sh.data(), k3.data(),
                   y2.data(), g2.data());
  EXPECT_EQ(y1, y2);
  EXPECT_EQ(g1, g2);
}

TEST(BatchNormImpls, OptimizedImplementationsAreBitIdenticalToBlocked) {
  const BatchNormImpl* base = nullptr;
  for (const BatchNormImpl& impl : batch_norm_impls())
    if (std::string(impl.name) == "cpu:blocked") base = &impl;
  ASSERT_NE(base, nullptr);
  uint64_t seed = 500;
  for (const BatchNormImpl& impl : batch_norm_impls()) {
    const std::string name = impl.name;
    if (name == "ref" || name == "cpu:blocked") continue;
    for (const Case& k : kCases)
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        BatchNormProblem p{k.n, k.c, k.hw, layout, DType::kFloat32};
        if (!impl.supports(p).empty()) continue;
        check_bit_identical<float>(impl, *base, p, ++seed);
        p.dtype = DType::kFloat64;
        check_bit_identical<double>(impl, *base, p, ++seed);
      }
  }
}

// cpu:hwy on every instruction set this machine supports (SSE4, AVX2, AVX3, …), not only the one
// dynamic dispatch picks: each must match cpu:blocked bit for bit.
TEST(BatchNormImpls, HighwayKernelOnEverySupportedTarget) {
  const BatchNormImpl* hwy_impl = nullptr;
  const BatchNormImpl* base = nullptr;
  for (const BatchNormImpl& impl : batch_norm_impls()) {
    if (std::string(impl.name) == "cpu:hwy") hwy_impl = &impl;
    if (std::string(impl.name) == "cpu:blocked") base = &impl;
  }
  ASSERT_NE(hwy_impl, nullptr);
  int tested = 0;
  for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    EXPECT_STREQ(cpu_hwy::target_name(), hwy::TargetName(target));
    uint64_t seed = 900;
    for (const Case& k : kCases) {
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        check_bit_identical<float>(*hwy_impl, *base, {k.n, k.c, k.hw, layout, DType::kFloat32},
                                   ++seed);
        check_bit_identical<double>(*hwy_impl, *base, {k.n, k.c, k.hw, layout, DType::kFloat64},
                                    ++seed);
      }
    }
    ++tested;
  }
  hwy::SetSupportedTargetsForTest(0);
  EXPECT_GE(tested, 1);
}

TEST(BatchNormImpls, RegistryEndsWithReference) {
  auto impls = batch_norm_impls();
  ASSERT_GE(impls.size(), 2u);
  EXPECT_STREQ(impls.back().name, "ref");
}

TEST(BatchNormImpls, EveryImplementationMatchesTheReference) {
  uint64_t seed = 1;
  for (const BatchNormImpl& impl : batch_norm_impls()) {
    for (const Case& k : kCases) {
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        for (DType dt : {DType::kFloat32, DType::kFloat64}) {
          BatchNormProblem p{k.n, k.c, k.hw, layout, dt};
          if (!impl.supports(p).empty()) continue;
          if (dt == DType::kFloat32) {
            check_impl<float>(impl, p, ++seed);
          } else {
            check_impl<double>(impl, p, ++seed);
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace bnorm::kernels
