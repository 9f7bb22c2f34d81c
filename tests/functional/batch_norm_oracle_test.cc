// The functional API (with the default implementation and with BNORM_IMPL=ref) vs the literal
// test oracle of tests/support/oracle.cc, on random shapes, both layouts and dtypes.
#include <gtest/gtest.h>

#include <cstdlib>
#include <random>

#include "bnorm/bnorm.h"
#include "support/compare.h"
#include "support/fills.h"
#include "support/oracle.h"

namespace bnorm::test {
namespace {

void run_random_cases(const char* impl_name) {
  if (impl_name) {
    setenv("BNORM_IMPL", impl_name, 1);
  } else {
    unsetenv("BNORM_IMPL");
  }
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 40; ++iter) {
    const int rank = 2 + static_cast<int>(rng() % 4);
    Shape shape = {1 + static_cast<int64_t>(rng() % 6), 1 + static_cast<int64_t>(rng() % 9)};
    for (int d = 2; d < rank; ++d) shape.push_back(1 + static_cast<int64_t>(rng() % 6));
    if (shape[0] * spatial_size(shape) < 2) shape[0] = 2;
    const DType dt = iter % 2 ? DType::kFloat64 : DType::kFloat32;
    const MemoryFormat fmt =
        rank >= 4 && (iter / 2) % 2 ? MemoryFormat::kChannelsLast : MemoryFormat::kContiguous;
    const int64_t N = shape[0], C = shape[1], HW = spatial_size(shape);
    const std::size_t count = static_cast<std::size_t>(N * C * HW);
    SCOPED_TRACE(shape_str(shape) + " " + dtype_name(dt) + " " + memory_format_name(fmt));
    const auto xv = round_to(randn(count, iter, 1.5, 3.0), dt);
    const auto dyv = round_to(randn(count, iter + 100), dt);
    const auto wv = round_to(randn(C, iter + 200, 1.0, 0.3), dt);
    const auto bv = round_to(randn(C, iter + 300), dt);
    const auto rmv = round_to(randn(C, iter + 400), dt);
    std::vector<double> rvv = round_to(randn(C, iter + 500, 2.0, 0.2), dt);
    const double momentum = 0.25, eps = 1e-3;

    Tensor x = make_tensor(shape, xv, dt, fmt), dy = make_tensor(shape, dyv, dt, fmt);
    Tensor w = make_tensor({C}, wv, dt), b = make_tensor({C}, bv, dt);
    Tensor rm = make_tensor({C}, rmv, dt), rv = make_tensor({C}, rvv, dt);
    const double tol = dt == DType::kFloat32 ? 2e-6 : 1e-12;

    BatchNormForwardResult f = batch_norm_forward_train(x, w, b, rm, rv, momentum, eps);
    OracleForward o = oracle_forward_train(xv, N, C, HW, wv, bv, rmv, rvv, momentum, eps);
    EXPECT_TRUE(all_close(f.y.to_vector(), o.y, tol, tol));
    EXPECT_TRUE(all_close(f.save_mean.to_vector(), o.mean, tol, tol));
    EXPECT_TRUE(all_close(f.save_invstd.to_vector(), o.invstd, tol, tol));
    EXPECT_TRUE(all_close(rm.to_vector(), o.running_mean, tol, tol));
    EXPECT_TRUE(all_close(rv.to_vector(), o.running_var, tol, tol));

    BatchNormBackwardResult g =
        batch_norm_backward(dy, x, w, Tensor(), Tensor(), f.save_mean, f.save_invstd, true, eps);
    OracleBackward ob = oracle_backward(dyv, xv, N, C, HW, wv, f.save_mean.to_vector(),
                                        f.save_invstd.to_vector(), true);
    const double gtol = tol * 10;
    EXPECT_TRUE(all_close(g.dx.to_vector(), ob.dx, gtol, gtol));
    EXPECT_TRUE(all_close(g.dweight.to_vector(), ob.dweight, gtol * N * HW, gtol));
    EXPECT_TRUE(all_close(g.dbias.to_vector(), ob.dbias, gtol * N * HW, gtol));

    Tensor ye = batch_norm_forward_infer(x, w, b, rm, rv, eps);
    const auto rm_now = rm.to_vector(), rv_now = rv.to_vector();
    EXPECT_TRUE(all_close(
        ye.to_vector(), oracle_forward_infer(xv, N, C, HW, wv, bv, rm_now, rv_now, eps), tol, tol));
    BatchNormBackwardResult ge =
        batch_norm_backward(dy, x, w, rm, rv, Tensor(), Tensor(), false, eps);
    std::vector<double> inv(C);
    for (int64_t c = 0; c < C; ++c) inv[c] = 1.0 / std::sqrt(rv_now[c] + eps);
    OracleBackward obe = oracle_backward(dyv, xv, N, C, HW, wv, rm_now, inv, false);
    EXPECT_TRUE(all_close(ge.dx.to_vector(), obe.dx, gtol, gtol));
    EXPECT_TRUE(all_close(ge.dweight.to_vector(), obe.dweight, gtol * N * HW, gtol));
  }
  unsetenv("BNORM_IMPL");
}

TEST(BatchNormOracle, DefaultImplementation) { run_random_cases(nullptr); }
TEST(BatchNormOracle, ReferenceImplementation) { run_random_cases("ref"); }

TEST(BatchNormOracle, ImplementationIsNamedAndSelectable) {
  Tensor x = Tensor::ones({4, 3});
  EXPECT_STREQ(batch_norm_implementation_name(x), "cpu:hwy");
  setenv("BNORM_IMPL", "ref", 1);
  EXPECT_STREQ(batch_norm_implementation_name(x), "ref");
  setenv("BNORM_IMPL", "no-such-impl", 1);
  try {
    batch_norm_implementation_name(x);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("BNORM_IMPL must name one of cpu:hwy cpu:blocked ref, got "
                                         "no-such-impl"),
              std::string::npos)
        << e.what();
  }
  unsetenv("BNORM_IMPL");
}

}  // namespace
}  // namespace bnorm::test
