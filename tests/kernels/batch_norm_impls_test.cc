// Every registry entry vs the reference kernels: every layout, both dtypes, C=1, HW=1, sizes that
// are not multiples of a vector width, and a block-boundary-crossing HW. Adding an implementation
// to the registry adds it here without edits.
#include <gtest/gtest.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "bnorm/parallel.h"
#include "hwy/aligned_allocator.h"
#include "hwy/targets.h"
#include "kernels/batch_norm_impls.h"
#include "support/compare.h"
#include "support/fills.h"
#include "support/stream_limit.h"

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
                       // NHWC rows of at most 64 channels (backward sums read row by row on AMD;
                       // 1030: a 6-position last segment); NCHW groups of 4 channels with a
                       // masked row tail (49 = 6·8 + 1, 1030 = 1024 + 6).
                       {3, 64, 49},
                       {2, 40, 1030},
                       {300, 16, 1},
                       // NHWC rows of 8–128 channels read in memory order on AMD (the backward
                       // sums; the statistics over 4 MiB): a block of 3 positions, whose other 5
                       // slots no position reaches; and over 4 MiB, rows of 12 float vectors and
                       // a tail of 4 channels, runs of 10 positions (a slot cycle and 2).
                       {1, 20, 3},
                       {1100, 100, 10},
                       // Over 4 MiB (float): NHWC blocks read by walks with prefetch (rows of at
                       // most 128 channels row by row on AMD, walks elsewhere); 138 = 17 vectors
                       // + 2 scalar channels; 4100 = 4·1024 + 4; walk units of several
                       // 49-position rows; 2-d rows walked linearly.
                       {2, 138, 4100},
                       {400, 72, 49},
                       {20000, 72, 1},
                       // NHWC walks of 4, 2 and 1 channel vectors (88 = 8 + 2 + 1 float
                       // vectors of 8).
                       {3, 88, 4100},
                       // NHWC rows of over 8 KiB: shorter walk units (walk_positions), short
                       // rows grouped by fewer positions and long rows cut into shorter pieces;
                       // 2060 = 257 float vectors + 4 scalar channels.
                       {3, 2060, 12},
                       {1, 2060, 100},
                       // Over 4 MiB with rows of over 4 KiB: NHWC ranges of whole pages (two
                       // of 1088 and 972 channels for float on up to 2 threads).
                       {2, 2060, 300},
                       // NCHW planes of 3 with a sample of 6000 elements (the elementwise
                       // passes' coefficient period; 16 samples: at least 8 periods, so they
                       // run periodic) and NHWC rows of 7 channels (a block's 8·7 accumulators
                       // in 7 vectors; 37 positions: a masked last chunk).
                       {16, 2000, 3},
                       {37, 7, 1},
                       // NCHW rows of 2, 4, 6, 7 (HW < 8: a channels-last copy of each block,
                       // de-interleaved by vector loads for 2 and 4, or rows rotated into the
                       // slot lanes); several blocks; 13 and 37 channels end in a partial
                       // vector; 130 = a 128-channel range and one of 2.
                       {1100, 13, 2},
                       {600, 37, 4},
                       {40, 9, 6},
                       {50, 130, 7}};

// The registry entry named `name`, or null.
const BatchNormImpl* find_impl(const std::string& name) {
  for (const BatchNormImpl& impl : batch_norm_impls())
    if (name == impl.name) return &impl;
  return nullptr;
}

// Backward coefficients for channels [c0, c1) from the sums (u0, u1) = (Σdy, Σdy·(x − mean)), of
// the op layer's form (scale, −u1·scale·f, −u0·scale·f), f standing in for 1/(N·HW).
void backward_test_coeffs(const std::vector<double>& scale, double f, const std::vector<double>& u0,
                          const std::vector<double>& u1, std::vector<double>& q1,
                          std::vector<double>& q2, std::vector<double>& q3, int64_t c0,
                          int64_t c1) {
  for (int64_t c = c0; c < c1; ++c) {
    q1[c] = scale[c];
    q2[c] = -u1[c] * scale[c] * f;
    q3[c] = -u0[c] * scale[c] * f;
  }
}

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

// Per-channel inference inputs in x's dtype (running_var > 0), and the coefficients the op layer
// derives from them for normalize: mean, scale = weight / sqrt(running_var + eps), shift = bias
// (weight 1 and bias 0 when `affine` is false).
template <typename T>
struct InferInputs {
  std::vector<T> w, b, rm, rv;
  std::vector<double> mean, scale, shift;
  double eps = 1e-5;
  InferInputs(std::size_t c, uint64_t seed, bool affine) {
    auto cast = [](const std::vector<double>& v) { return std::vector<T>(v.begin(), v.end()); };
    w = cast(test::randn(c, seed, 1.0, 0.5));
    b = cast(test::randn(c, seed + 1));
    rm = cast(test::randn(c, seed + 2, 0.5, 2.0));
    rv = cast(test::randn(c, seed + 3));
    for (T& v : rv) v = v * v + T(0.01);
    for (std::size_t i = 0; i < c; ++i) {
      mean.push_back(static_cast<double>(rm[i]));
      scale.push_back((affine ? static_cast<double>(w[i]) : 1.0) /
                      std::sqrt(static_cast<double>(rv[i]) + eps));
      shift.push_back(affine ? static_cast<double>(b[i]) : 0.0);
    }
    if (!affine) w.clear(), b.clear();
  }
  const T* weight() const { return w.empty() ? nullptr : w.data(); }
  const T* bias() const { return b.empty() ? nullptr : b.data(); }
};

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
  if (impl.normalize_infer) {
    const InferInputs<T> in(C, seed + 6, /*affine=*/true);
    impl.normalize_infer(p, x.data(), in.weight(), in.bias(), in.rm.data(), in.rv.data(), in.eps,
                         y1.data());
    base.normalize(p, x.data(), in.mean.data(), in.scale.data(), in.shift.data(), y2.data());
    EXPECT_EQ(y1, y2) << "normalize_infer";
  }
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
  const BatchNormImpl* base = find_impl("cpu:blocked");
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
  const BatchNormImpl* hwy_impl = find_impl("cpu:hwy");
  const BatchNormImpl* base = find_impl("cpu:blocked");
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

// limit_simd (BNORM_SIMD) caps the dispatch at a named target, and names the supported ones
// when given another name.
TEST(BatchNormImpls, SimdLimitCapsTheTarget) {
  const std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  ASSERT_FALSE(targets.empty());
  const std::string best = hwy::TargetName(targets.front());
  const std::string lowest = hwy::TargetName(targets.back());
  EXPECT_EQ(cpu_hwy::limit_simd(lowest), "");
  EXPECT_EQ(std::string(cpu_hwy::target_name()), lowest);
  hwy::DisableTargets(0);  // undo the cap for the other tests
  EXPECT_EQ(std::string(cpu_hwy::target_name()), best);
  const std::string error = cpu_hwy::limit_simd("AVX9");
  EXPECT_NE(error.find("BNORM_SIMD"), std::string::npos) << error;
  EXPECT_NE(error.find("got AVX9"), std::string::npos) << error;
  EXPECT_NE(error.find(best), std::string::npos) << error;
  EXPECT_EQ(std::string(cpu_hwy::target_name()), best);
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

// The single-sweep kernels (forward_train_sweep, backward_sweep) against the same
// implementation's two passes, bit for bit: statistics, sums, outputs, with and without the ReLU
// mask, g_out, in place, for 1–3 threads. coeffs must be called once per channel, after that
// channel's statistics are final. Where a sweep declines it must return false and write nothing.
template <typename T>
int check_sweeps(const BatchNormImpl& impl, const BatchNormProblem& p, uint64_t seed) {
  SCOPED_TRACE(std::string(impl.name) + " sweeps " + problem_str(p));
  const std::size_t count = static_cast<std::size_t>(p.n * p.c * p.hw),
                    C = static_cast<std::size_t>(p.c);
  const std::vector<T> x = to_layout<T>(p, test::randn(count, seed, -2.0, 3.0));
  const std::vector<T> dy = to_layout<T>(p, test::randn(count, seed + 1));
  const std::vector<double> w = test::randn(C, seed + 2), b = test::randn(C, seed + 3);
  const std::vector<uint8_t> mask = random_mask(count, seed + 4);

  // Two passes: stats, coefficients, normalize; backward_reduce, coefficients, backward_dx.
  std::vector<double> mean(C), var(C), scale(C), sum0(C), sum1(C), k1(C), k2(C), k3(C);
  impl.stats(p, x.data(), mean.data(), var.data());
  for (std::size_t c = 0; c < C; ++c) scale[c] = w[c] / std::sqrt(var[c] + 1e-5);
  std::vector<T> y(count);
  impl.normalize(p, x.data(), mean.data(), scale.data(), b.data(), y.data());
  auto backward_coeffs = [&](const std::vector<double>& s0, const std::vector<double>& s1,
                             std::vector<double>& a1, std::vector<double>& a2,
                             std::vector<double>& a3, int64_t c0, int64_t c1) {
    backward_test_coeffs(scale, 1e-3, s0, s1, a1, a2, a3, c0, c1);
  };

  int swept = 0;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    SCOPED_TRACE("threads=" + std::to_string(threads));
    // Forward, also in place over x.
    for (bool in_place : {false, true}) {
      std::vector<double> m(C, -1), v(C, -1), sc(C, 0);
      std::vector<int> calls(C, 0);
      std::vector<T> out = in_place ? x : std::vector<T>(count, T(7));
      const std::vector<T> before = out;
      auto coeffs = [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          ++calls[c];
          sc[c] = w[c] / std::sqrt(v[c] + 1e-5);
        }
      };
      const bool done =
          impl.forward_train_sweep(p, in_place ? out.data() : x.data(), m.data(), v.data(),
                                   channel_callback(coeffs), sc.data(), b.data(), out.data());
      if (!done) {
        EXPECT_EQ(out, before) << "a declining sweep wrote its output";
        EXPECT_EQ(m, std::vector<double>(C, -1)) << "a declining sweep wrote statistics";
        EXPECT_EQ(calls, std::vector<int>(C, 0));
        continue;
      }
      EXPECT_TRUE(test::bit_identical(m, mean));
      EXPECT_TRUE(test::bit_identical(v, var));
      EXPECT_EQ(out, y) << "in_place=" << in_place;
      EXPECT_EQ(calls, std::vector<int>(C, 1));
      ++swept;
    }
    // Backward: plain and masked (g_out fresh, or over dy with dx fresh; or dx over dy).
    for (int variant = 0; variant < 4; ++variant) {
      const bool masked_bw = variant > 0;
      const uint8_t* mk = masked_bw ? mask.data() : nullptr;
      impl.backward_reduce(p, x.data(), dy.data(), mk, mean.data(), sum0.data(), sum1.data());
      backward_coeffs(sum0, sum1, k1, k2, k3, 0, p.c);
      std::vector<T> dx(count), g(count);
      impl.backward_dx(p, x.data(), dy.data(), mk, mean.data(), k1.data(), k2.data(), k3.data(),
                       dx.data(), masked_bw ? g.data() : nullptr);

      std::vector<double> s0(C, -1), s1(C, -1), a1(C), a2(C), a3(C);
      std::vector<int> calls(C, 0);
      auto coeffs = [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) ++calls[c];
        backward_coeffs(s0, s1, a1, a2, a3, c0, c1);
      };
      std::vector<T> dyc = dy, dx2(count, T(7)), g2(count, T(7));
      T* dx_out = variant == 3 ? dyc.data() : dx2.data();
      T* g_out = variant == 1 ? g2.data() : variant == 2 ? dyc.data() : nullptr;
      const bool done = impl.backward_sweep(p, x.data(), dyc.data(), mk, mean.data(), s0.data(),
                                            s1.data(), channel_callback(coeffs), a1.data(),
                                            a2.data(), a3.data(), dx_out, g_out);
      if (!done) {
        EXPECT_EQ(dyc, dy) << "a declining sweep wrote its output";
        EXPECT_EQ(dx2, std::vector<T>(count, T(7)));
        EXPECT_EQ(s0, std::vector<double>(C, -1)) << "a declining sweep wrote sums";
        continue;
      }
      SCOPED_TRACE("variant " + std::to_string(variant));
      EXPECT_TRUE(test::bit_identical(s0, sum0));
      EXPECT_TRUE(test::bit_identical(s1, sum1));
      EXPECT_EQ(variant == 3 ? dyc : dx2, dx);
      if (variant == 1) {
        EXPECT_EQ(g2, g);
      } else if (variant == 2) {
        EXPECT_EQ(dyc, g);
      }
      EXPECT_EQ(calls, std::vector<int>(C, 1));
      ++swept;
    }
  }
  set_num_threads(2);
  return swept;
}

// Random inputs of an elementwise pass over p: x, dy, a ReLU mask and per-channel coefficients.
struct ElementwiseInputs {
  ElementwiseInputs(const BatchNormProblem& p, uint64_t& seed)
      : count(static_cast<std::size_t>(p.n * p.c * p.hw)),
        x(to_layout<float>(p, test::randn(count, ++seed, -2.0, 3.0))),
        dy(to_layout<float>(p, test::randn(count, ++seed))),
        mask(random_mask(count, ++seed)) {
    const std::size_t C = static_cast<std::size_t>(p.c);
    m = test::randn(C, ++seed);
    k1 = test::randn(C, ++seed);
    k2 = test::randn(C, ++seed);
    k3 = test::randn(C, ++seed);
  }
  std::size_t count;
  std::vector<float> x, dy;
  std::vector<uint8_t> mask;
  std::vector<double> m, k1, k2, k3;
};

// An aligned output of count floats with 16 more after it, all 7.0 (to see what is written).
hwy::AlignedFreeUniquePtr<float[]> guarded_buffer(std::size_t count) {
  auto b = hwy::AllocateAligned<float>(count + 16);
  std::fill(b.get(), b.get() + count + 16, 7.0f);
  return b;
}

// Passes over more than stream_limit_bytes() of tensors write with non-temporal stores (32–64 MiB
// by default; lowered to 16 MiB here, so that every pass over these ~17 MB tensors streams), and
// inputs of 4 MiB or more are prefetched ahead (cpu:hwy's stream_output, prefetch_distance):
// NCHW planes of whole cache lines (4112 floats) and planes that are not (130, and 13: consecutive
// planes stream as one run, the fused epilogue included, a vector spanning two planes at every
// lane offset), NHWC rows of 64 and 256 channels (one row per group of stores) and 1024 (groups
// of four rows on AMD, two elsewhere; the 4101 rows end in a single one), written at a 64-byte
// boundary and one element past it (NCHW streams after a scalar prologue; NHWC rows are then not
// vector-aligned and go through the cache). The smaller cases above never stream. The fused
// epilogue is compared with the reference's (cpu:blocked has none).
TEST(BatchNormImpls, StreamedOutputsAreBitIdenticalToBlocked) {
  const test::ScopedStreamLimit limit(std::size_t{16} << 20);
  const BatchNormImpl* hwy_impl = find_impl("cpu:hwy");
  const BatchNormImpl* base = find_impl("cpu:blocked");
  ASSERT_NE(hwy_impl, nullptr);
  ASSERT_NE(base, nullptr);
  // The last two are periodic runs (periodic_runs): NCHW planes of 3 elements, and rows of 3
  // channels (both layouts: NCHW with HW = 1 is read as NHWC).
  const Case cases[] = {{16, 64, 4112},  {32, 1024, 130}, {1700, 200, 13}, {16400, 256, 1},
                        {4101, 1024, 1}, {1400, 1000, 3}, {1400000, 3, 1}};
  uint64_t seed = 7000;
  for (const Case& k : cases) {
    for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
      const BatchNormProblem p{k.n, k.c, k.hw, layout, DType::kFloat32};
      ASSERT_GE(p.n * p.c * p.hw * 4, int64_t{16} << 20);
      const ElementwiseInputs in_(p, seed);
      const std::size_t count = in_.count, C = static_cast<std::size_t>(p.c);
      const std::vector<float>& x = in_.x;
      const std::vector<float>& dy = in_.dy;
      const std::vector<uint8_t>& mask = in_.mask;
      const std::vector<double>&m = in_.m, &k1 = in_.k1, &k2 = in_.k2, &k3 = in_.k3;
      for (std::size_t offset : {0, 1}) {
        SCOPED_TRACE(problem_str(p) + " offset " + std::to_string(offset));
        auto buffer = [&] { return guarded_buffer(count); };
        auto y1 = buffer(), y2 = buffer(), g1 = buffer(), g2 = buffer();
        auto same = [&](const float* a, const float* b) { return std::equal(a, a + count, b); };
        hwy_impl->normalize(p, x.data(), m.data(), k1.data(), k2.data(), y1.get() + offset);
        base->normalize(p, x.data(), m.data(), k1.data(), k2.data(), y2.get() + offset);
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "normalize";
        const InferInputs<float> in(C, seed, /*affine=*/true);
        hwy_impl->normalize_infer(p, x.data(), in.weight(), in.bias(), in.rm.data(), in.rv.data(),
                                  in.eps, y1.get() + offset);
        base->normalize(p, x.data(), in.mean.data(), in.scale.data(), in.shift.data(),
                        y2.get() + offset);
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "normalize_infer";
        hwy_impl->backward_dx(p, x.data(), dy.data(), mask.data(), m.data(), k1.data(), k2.data(),
                              k3.data(), y1.get() + offset, g1.get() + offset);
        base->backward_dx(p, x.data(), dy.data(), mask.data(), m.data(), k1.data(), k2.data(),
                          k3.data(), y2.get() + offset, g2.get() + offset);
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "dx";
        EXPECT_TRUE(same(g1.get() + offset, g2.get() + offset)) << "masked dy";
        std::vector<uint8_t> bits1((count + 7) / 8), bits2((count + 7) / 8);
        hwy_impl->normalize_add_relu(p, x.data(), dy.data(), m.data(), k1.data(), k2.data(),
                                     y1.get() + offset, bits1.data());
        reference::normalize_add_relu(p, x.data(), dy.data(), m.data(), k1.data(), k2.data(),
                                      y2.get() + offset, bits2.data());
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "add + relu";
        EXPECT_EQ(bits1, bits2);
        // Nothing written outside [offset, offset + count).
        for (const auto* b : {&y1, &g1}) {
          EXPECT_TRUE(std::all_of(b->get(), b->get() + offset, [](float v) { return v == 7.0f; }));
          EXPECT_TRUE(std::all_of(b->get() + offset + count, b->get() + count + 16,
                                  [](float v) { return v == 7.0f; }));
        }
        // The NCHW single sweeps write range by range, streamed under the same rule: the two
        // passes' bits.
        if (!hwy_impl->forward_train_sweep || layout != Layout::kNCHW) continue;  // HW < 8 declines
        std::vector<double> mean(C), var(C), sc(C), m2(C), v2(C), sc2(C);
        hwy_impl->stats(p, x.data(), mean.data(), var.data());
        for (std::size_t i = 0; i < C; ++i) sc[i] = k1[i] / std::sqrt(var[i] + 1e-5);
        hwy_impl->normalize(p, x.data(), mean.data(), sc.data(), k2.data(), y2.get() + offset);
        auto fwd_coeffs = [&](int64_t c0, int64_t c1) {
          for (int64_t i = c0; i < c1; ++i) sc2[i] = k1[i] / std::sqrt(v2[i] + 1e-5);
        };
        if (!hwy_impl->forward_train_sweep(p, x.data(), m2.data(), v2.data(),
                                           channel_callback(fwd_coeffs), sc2.data(), k2.data(),
                                           y1.get() + offset)) {
          EXPECT_LT(p.hw, 8) << "the sweep declined a problem it should take";
          continue;
        }
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "forward sweep";
        std::vector<double> s0(C), s1(C), a1(C), a2(C), a3(C), t0(C), t1(C), b1(C), b2(C), b3(C);
        hwy_impl->backward_reduce(p, x.data(), dy.data(), mask.data(), mean.data(), s0.data(),
                                  s1.data());
        backward_test_coeffs(sc, 1e-6, s0, s1, a1, a2, a3, 0, p.c);
        hwy_impl->backward_dx(p, x.data(), dy.data(), mask.data(), mean.data(), a1.data(),
                              a2.data(), a3.data(), y2.get() + offset, g2.get() + offset);
        auto sweep_coeffs = [&](int64_t c0, int64_t c1) {
          backward_test_coeffs(sc, 1e-6, t0, t1, b1, b2, b3, c0, c1);
        };
        ASSERT_TRUE(hwy_impl->backward_sweep(p, x.data(), dy.data(), mask.data(), mean.data(),
                                             t0.data(), t1.data(), channel_callback(sweep_coeffs),
                                             b1.data(), b2.data(), b3.data(), y1.get() + offset,
                                             g1.get() + offset));
        EXPECT_TRUE(same(y1.get() + offset, y2.get() + offset)) << "backward sweep";
        EXPECT_TRUE(same(g1.get() + offset, g2.get() + offset)) << "backward sweep, masked dy";
      }
    }
  }
}

// The streamed passes on every instruction set this machine supports, not only the one dispatch
// picks (the test above): on SSE4, Highway's non-temporal store of 2 floats writes 16 bytes, which
// crashed on 8-byte-aligned outputs and would have written past the end of the last vector.
TEST(BatchNormImpls, StreamedOutputsOnEverySupportedTarget) {
  const test::ScopedStreamLimit limit(std::size_t{16} << 20);
  const BatchNormImpl* hwy_impl = find_impl("cpu:hwy");
  const BatchNormImpl* base = find_impl("cpu:blocked");
  ASSERT_NE(hwy_impl, nullptr);
  ASSERT_NE(base, nullptr);
  // NHWC rows of 1020 and 3 channels and NCHW planes of 3 elements are not vector-aligned: one
  // periodic run per thread, its first elements scalar up to an aligned output address.
  const BatchNormProblem problems[] = {{1700, 200, 13, Layout::kNCHW, DType::kFloat32},
                                       {4100, 1024, 1, Layout::kNHWC, DType::kFloat32},
                                       {4100, 1020, 1, Layout::kNHWC, DType::kFloat32},
                                       {720000, 3, 1, Layout::kNHWC, DType::kFloat32},
                                       {1400, 1000, 3, Layout::kNCHW, DType::kFloat32}};
  uint64_t seed = 7100;
  for (const BatchNormProblem& p : problems) {
    const ElementwiseInputs in(p, seed);
    const std::size_t count = in.count;
    const std::vector<float>&x = in.x, &dy = in.dy;
    const std::vector<uint8_t>& mask = in.mask;
    const std::vector<double>&m = in.m, &k1 = in.k1, &k2 = in.k2, &k3 = in.k3;
    auto buffer = [&] { return guarded_buffer(count); };
    // The blocked kernel's outputs at offset 0; the same values are expected at every offset.
    auto want_y = buffer(), want_dx = buffer(), want_g = buffer();
    base->normalize(p, x.data(), m.data(), k1.data(), k2.data(), want_y.get());
    base->backward_dx(p, x.data(), dy.data(), mask.data(), m.data(), k1.data(), k2.data(),
                      k3.data(), want_dx.get(), want_g.get());
    for (int64_t target : hwy::SupportedAndGeneratedTargets()) {
      hwy::SetSupportedTargetsForTest(target);
      for (std::size_t offset : {0, 1, 3}) {
        SCOPED_TRACE(problem_str(p) + " " + hwy::TargetName(target) + " offset " +
                     std::to_string(offset));
        auto y = buffer(), g = buffer();
        auto same = [&](const float* a, const float* b) { return std::equal(a, a + count, b); };
        auto untouched = [&](const float* b) {
          return std::all_of(b, b + offset, [](float v) { return v == 7.0f; }) &&
                 std::all_of(b + offset + count, b + count + 16, [](float v) { return v == 7.0f; });
        };
        hwy_impl->normalize(p, x.data(), m.data(), k1.data(), k2.data(), y.get() + offset);
        EXPECT_TRUE(same(y.get() + offset, want_y.get())) << "normalize";
        EXPECT_TRUE(untouched(y.get()));
        hwy_impl->backward_dx(p, x.data(), dy.data(), mask.data(), m.data(), k1.data(), k2.data(),
                              k3.data(), y.get() + offset, g.get() + offset);
        EXPECT_TRUE(same(y.get() + offset, want_dx.get())) << "dx";
        EXPECT_TRUE(same(g.get() + offset, want_g.get())) << "masked dy";
        EXPECT_TRUE(untouched(y.get()));
        EXPECT_TRUE(untouched(g.get()));
      }
    }
    hwy::SetSupportedTargetsForTest(0);
  }
}

// normalize_infer computes its coefficients in each thread; for 1–3 threads, with and without
// weight and bias, in place and not, its output must be the reference normalize's with the op
// layer's coefficients, and a second call with other statistics must not reuse the first call's
// coefficients.
template <typename T>
void check_normalize_infer(const BatchNormImpl& impl, const BatchNormProblem& p, uint64_t seed) {
  const std::size_t count = static_cast<std::size_t>(p.n * p.c * p.hw),
                    C = static_cast<std::size_t>(p.c);
  const std::vector<T> x = to_layout<T>(p, test::randn(count, seed, -2.0, 3.0));
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    for (bool affine : {true, false}) {
      for (bool in_place : {false, true}) {
        SCOPED_TRACE(std::string(impl.name) + " " + problem_str(p) + " threads " +
                     std::to_string(threads) + (affine ? " affine" : " no affine") +
                     (in_place ? " in place" : ""));
        for (uint64_t call = 0; call < 2; ++call) {
          const InferInputs<T> in(C, seed + 10 * call + (affine ? 1 : 2), affine);
          std::vector<T> y = in_place ? x : std::vector<T>(count), ry(count);
          impl.normalize_infer(p, in_place ? y.data() : x.data(), in.weight(), in.bias(),
                               in.rm.data(), in.rv.data(), in.eps, y.data());
          reference::normalize(p, x.data(), in.mean.data(), in.scale.data(), in.shift.data(),
                               ry.data());
          EXPECT_EQ(y, ry) << "call " << call;
        }
      }
    }
  }
  set_num_threads(2);
}

TEST(BatchNormImpls, InferenceFromRunningStatisticsIsBitIdenticalToNormalize) {
  int tested = 0;
  uint64_t seed = 6000;
  for (const BatchNormImpl& impl : batch_norm_impls()) {
    if (!impl.normalize_infer) continue;
    for (const Case& k : kCases) {
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        check_normalize_infer<float>(impl, {k.n, k.c, k.hw, layout, DType::kFloat32}, ++seed);
        check_normalize_infer<double>(impl, {k.n, k.c, k.hw, layout, DType::kFloat64}, ++seed);
      }
    }
    ++tested;
  }
  EXPECT_GE(tested, 1);
}

TEST(BatchNormImpls, SingleSweepsAreBitIdenticalToTwoPasses) {
  // NCHW tensors over the sweep's 4 MiB threshold (ranges of several 4-channel groups; channels
  // not a multiple of 4; a masked row tail: 49 = 6·8 + 1, 4100 = 4·1024 + 4), and problems the
  // sweeps decline (NHWC, small, HW < 8). Sweeps with streamed outputs: StreamedOutputs… above.
  const Case cases[] = {{400, 72, 49}, {2, 138, 4100}, {3, 1001, 400}, {2, 70, 5}, {20000, 72, 1}};
  int swept = 0;
  uint64_t seed = 4000;
  for (const BatchNormImpl& impl : batch_norm_impls()) {
    if (!impl.forward_train_sweep || !impl.backward_sweep) continue;
    for (const Case& k : cases) {
      for (Layout layout : {Layout::kNCHW, Layout::kNHWC}) {
        BatchNormProblem p{k.n, k.c, k.hw, layout, DType::kFloat32};
        if (!impl.supports(p).empty()) continue;
        swept += check_sweeps<float>(impl, p, ++seed) > 0;
        p.dtype = DType::kFloat64;
        swept += check_sweeps<double>(impl, p, ++seed) > 0;
      }
    }
  }
  EXPECT_GE(swept, 6);  // the three NCHW shapes over 4 MiB, in both dtypes
}

// The default limit is the L3 the system reports, clamped to 32–64 MiB, and 32 MiB on AMD (a
// core complex's L3, where VMs report the package's); a set limit replaces it until it is set
// back to 0.
TEST(BatchNormImpls, StreamLimitDefaultsToTheL3WithinBounds) {
  const std::size_t def = cpu_hwy::stream_limit_bytes();
  EXPECT_GE(def, std::size_t{32} << 20);
  EXPECT_LE(def, std::size_t{64} << 20);
#if defined(__x86_64__) || defined(__i386__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __get_cpuid(0, &eax, &ebx, &ecx, &edx);
  const std::string vendor = std::string(reinterpret_cast<const char*>(&ebx), 4) +
                             std::string(reinterpret_cast<const char*>(&edx), 4) +
                             std::string(reinterpret_cast<const char*>(&ecx), 4);
  if (vendor == "AuthenticAMD") {
    EXPECT_EQ(def, std::size_t{32} << 20);
  }
#endif
  {
    const test::ScopedStreamLimit limit(12345);
    EXPECT_EQ(cpu_hwy::stream_limit_bytes(), 12345u);
  }
  EXPECT_EQ(cpu_hwy::stream_limit_bytes(), def);
}

// check_bit_identical on every case of kCases in NHWC, float and double, seeds from seed + 1;
// returns the last seed used.
uint64_t check_every_nhwc_case(const BatchNormImpl& impl, const BatchNormImpl& base,
                               uint64_t seed) {
  for (const Case& k : kCases) {
    check_bit_identical<float>(impl, base, {k.n, k.c, k.hw, Layout::kNHWC, DType::kFloat32},
                               ++seed);
    check_bit_identical<double>(impl, base, {k.n, k.c, k.hw, Layout::kNHWC, DType::kFloat64},
                                ++seed);
  }
  return seed;
}

// The NHWC reductions size their walk units by the core's L2 (shorter units for a smaller L2,
// down to one slot cycle); the order of every slot's terms does not depend on it, so each size
// gives cpu:blocked's bits. On the 2060-channel rows (8 KiB float, 16 KiB double), 256 KiB gives
// units of 8 positions throughout, 2 MiB units of 24 (float backward), 56 (float statistics),
// 8 (double backward) and 24 (double statistics). Rows of 100 and 300 positions leave pieces a
// remainder of 4 at several of these sizes (100 = 4·24 + 4, 300 = 37·8 + 4), which the walks
// spread over the other pieces (a piece made one position short fails this test).
TEST(BatchNormImpls, WalkUnitsSizedByTheL2ChangeNoBit) {
  const BatchNormImpl* hwy_impl = find_impl("cpu:hwy");
  const BatchNormImpl* base = find_impl("cpu:blocked");
  ASSERT_NE(hwy_impl, nullptr);
  const std::size_t def = cpu_hwy::l2_cache_bytes();
  EXPECT_GE(def, std::size_t{256} << 10);
  EXPECT_LE(def, std::size_t{2} << 20);
  for (const std::size_t l2 : {std::size_t{256} << 10, std::size_t{2} << 20}) {
    cpu_hwy::set_l2_cache_bytes(l2);
    SCOPED_TRACE(l2);
    EXPECT_EQ(cpu_hwy::l2_cache_bytes(), l2);
    check_every_nhwc_case(*hwy_impl, *base, 1300);
  }
  cpu_hwy::set_l2_cache_bytes(0);
  EXPECT_EQ(cpu_hwy::l2_cache_bytes(), def);
}

// The tunings that follow amd_cpu() — NHWC backward sums in 128-channel ranges, streamed NHWC
// rows of 4 KiB in groups of four instead of two, NHWC rows up to 512 bytes as periodic runs
// (the 72-channel cases over 2^18 elements) — change no bit: both settings give
// cpu:blocked's bits on every NHWC case and on streamed 1024-channel rows (4101 of them: the
// groups end in a single row), whichever CPU runs the test.
TEST(BatchNormImpls, AmdTuningsChangeNoBit) {
  const BatchNormImpl* hwy_impl = find_impl("cpu:hwy");
  const BatchNormImpl* base = find_impl("cpu:blocked");
  ASSERT_NE(hwy_impl, nullptr);
  ASSERT_NE(base, nullptr);
  for (const int amd : {0, 1}) {
    cpu_hwy::set_amd_cpu(amd);
    SCOPED_TRACE(amd ? "AMD tunings" : "other tunings");
    ASSERT_EQ(cpu_hwy::amd_cpu(), amd == 1);
    uint64_t seed = check_every_nhwc_case(*hwy_impl, *base, 1500);
    const test::ScopedStreamLimit limit(std::size_t{16} << 20);
    const BatchNormProblem p{4101, 1024, 1, Layout::kNHWC, DType::kFloat32};
    const ElementwiseInputs in(p, seed);
    auto y1 = guarded_buffer(in.count), y2 = guarded_buffer(in.count);
    auto g1 = guarded_buffer(in.count), g2 = guarded_buffer(in.count);
    auto same = [&](const float* a, const float* b) { return std::equal(a, a + in.count, b); };
    hwy_impl->normalize(p, in.x.data(), in.m.data(), in.k1.data(), in.k2.data(), y1.get());
    base->normalize(p, in.x.data(), in.m.data(), in.k1.data(), in.k2.data(), y2.get());
    EXPECT_TRUE(same(y1.get(), y2.get())) << "normalize";
    hwy_impl->backward_dx(p, in.x.data(), in.dy.data(), in.mask.data(), in.m.data(), in.k1.data(),
                          in.k2.data(), in.k3.data(), y1.get(), g1.get());
    base->backward_dx(p, in.x.data(), in.dy.data(), in.mask.data(), in.m.data(), in.k1.data(),
                      in.k2.data(), in.k3.data(), y2.get(), g2.get());
    EXPECT_TRUE(same(y1.get(), y2.get())) << "dx";
    EXPECT_TRUE(same(g1.get(), g2.get())) << "masked dy";
  }
  cpu_hwy::set_amd_cpu(-1);
}

}  // namespace
}  // namespace bnorm::kernels
