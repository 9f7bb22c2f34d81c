// bnorm vs exact values on random and pathological inputs (tests/data/batch_norm_pathological.json,
// made by scripts/golden/gen_pathological.py with PyTorch 1.13 and exact rational arithmetic):
// means 1e3–1e9 over spreads 1e-3–10, constant channels with eps 0, |x| ~ 1e30 and ~ 1e-30,
// scales 1e-6–1e6, integers, zeros, ±inf/NaN, dy ~ 3e6 ± 1e6; eps 0 and momentum 0 and 1.
// Every output of the training forward and backward and of the evaluation forward and backward
// must be within kUlps units of rounding of its own scale of the exact value (the scale: what the
// quantity is computed from, e.g. |dy|·invstd·|weight| for dx, whose terms cancel), plus what the
// mean's rounding to a double costs; non-finite results where and as PyTorch's float64 gives them.
// PyTorch's own float32 and float64 values are in the file too; the test prints how far they are
// from exact by the same measure (not asserted: PyTorch fails it by orders of magnitude).
// Run: ctest -R pathological
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "bnorm/bnorm.h"
#include "support/golden.h"

namespace bnorm::test {
namespace {

// Units of rounding (2^-24 for float32 results, 2^-53 for float64) allowed per unit of scale.
constexpr double kUlps = 32;

const nlohmann::json& cases() {
  static const nlohmann::json doc = load_golden("batch_norm_pathological.json");
  return doc.at("cases");
}

// A field as doubles; "nan", "inf", "-inf" strings for the non-finite values.
std::vector<double> values(const nlohmann::json& c, const std::string& field) {
  std::vector<double> out;
  if (!c.contains(field) || c.at(field).is_null()) return out;
  for (const auto& v : c.at(field)) {
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      out.push_back(s == "nan" ? NAN : (s == "inf" ? INFINITY : -INFINITY));
    } else {
      out.push_back(v.get<double>());
    }
  }
  return out;
}

Tensor tensor(const nlohmann::json& c, const char* field, const Shape& shape, DType dtype,
              MemoryFormat format = MemoryFormat::kContiguous) {
  if (!c.contains(field) || c.at(field).is_null()) return Tensor();
  return make_tensor(shape, values(c, field), dtype, format);
}

// One case's inputs in logical order, and per-channel helpers for the scales.
struct Case {
  int64_t n, c, s;
  DType dtype;
  std::vector<double> x, dy, w, b, rm0, rv0, mean, invstd, var;
  double momentum, eps;
  std::vector<double> channel(const std::vector<double>& v, int64_t ch) const {
    std::vector<double> out;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < s; ++j) out.push_back(v[(i * c + ch) * s + j]);
    return out;
  }
  double weight(int64_t ch) const { return w.empty() ? 1.0 : w[ch]; }
  double bias(int64_t ch) const { return b.empty() ? 0.0 : b[ch]; }
};

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m = std::isfinite(e) ? std::fmax(m, std::fabs(e)) : m;
  return m;
}
double sum_abs(const std::vector<double>& v) {
  double m = 0;
  for (double e : v) m += std::isfinite(e) ? std::fabs(e) : 0.0;
  return m;
}

// The scale of each output in channel ch (what its rounding errors are relative to), and the part
// of its error that comes from the channel mean's rounding to a double (δ = 2^-53·|mean|).
struct Scale {
  double scale, mean_slack;
};
Scale scale_of(const Case& k, const std::string& f, int64_t ch) {
  const std::vector<double> xs = k.channel(k.x, ch), gs = k.channel(k.dy, ch);
  const double m = k.mean[ch], is = k.invstd[ch], w = std::fabs(k.weight(ch));
  const double delta = std::ldexp(std::fabs(m), -53);
  double spread = 0, dot = 0, dot_eval = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if (!std::isfinite(xs[i])) continue;  // the channel's statistics are not finite then
    spread = std::fmax(spread, std::fabs(xs[i] - m));
    dot += std::fabs(gs[i] * (xs[i] - m));
    if (!k.rm0.empty()) dot_eval += std::fabs(gs[i] * (xs[i] - k.rm0[ch]));
  }
  const double g_max = max_abs(gs), g_sum = sum_abs(gs);
  if (f == "y") return {spread * is * w + std::fabs(k.bias(ch)), delta * is * w};
  if (f == "save_mean") return {std::fmax(std::fabs(m), spread), 0};
  if (f == "save_invstd") return {is, 0};
  if (f == "dx") return {g_max * is * w, delta * is * is * w * g_max};
  if (f == "dweight") return {dot * is, delta * is * g_sum};
  if (f == "dbias" || f == "dbias_eval") return {g_sum, 0};
  const double mo = k.momentum;
  if (f == "running_mean") {
    return {std::fabs((1 - mo) * k.rm0[ch]) + std::fabs(mo * m) + mo * spread, 0};
  }
  if (f == "running_var") return {std::fabs((1 - mo) * k.rv0[ch]) + mo * k.var[ch] * 2, 0};
  const double ie = 1 / std::sqrt(k.rv0[ch] + k.eps);
  double spread_eval = 0;
  for (double v : xs) {
    if (std::isfinite(v)) spread_eval = std::fmax(spread_eval, std::fabs(v - k.rm0[ch]));
  }
  if (f == "y_eval") return {spread_eval * ie * w + std::fabs(k.bias(ch)), 0};
  if (f == "dx_eval") return {g_max * ie * w, 0};
  if (f == "dweight_eval") return {dot_eval * ie, 0};
  ADD_FAILURE() << "no scale for " << f;
  return {0, 0};
}

// Worst error in units of kUlps-scaled rounding (≤ 1 passes), per data kind, for ours and PyTorch.
std::map<std::string, std::pair<double, double>> g_worst;

void check_field(const nlohmann::json& c, const Case& k, const std::string& f,
                 const std::vector<double>& ours) {
  SCOPED_TRACE(c.at("name").get<std::string>() + " " + f);
  const std::vector<double> exact = values(c, "exact_" + f), torch = values(c, f);
  ASSERT_EQ(ours.size(), exact.size());
  const bool f32 = k.dtype == DType::kFloat32;
  const double u = std::ldexp(1.0, f32 ? -24 : -53);
  const bool per_element = ours.size() != static_cast<std::size_t>(k.c);
  auto& worst = g_worst[c.at("kind").get<std::string>()];
  int reported = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    const int64_t ch = per_element ? static_cast<int64_t>(i) / k.s % k.c : static_cast<int64_t>(i);
    const double want = f32 ? static_cast<double>(static_cast<float>(exact[i])) : exact[i];
    if (!std::isfinite(want)) {
      const bool same = std::isnan(want) ? std::isnan(ours[i]) : ours[i] == want;
      EXPECT_TRUE(same) << "element " << i << ": " << ours[i] << ", expected " << want;
      continue;
    }
    if (!std::isfinite(ours[i])) {
      ADD_FAILURE() << "element " << i << ": " << ours[i] << ", expected " << want;
      continue;
    }
    const Scale sc = scale_of(k, f, ch);
    const double bound = kUlps * u * sc.scale + 4 * sc.mean_slack;
    if (!std::isfinite(bound)) {
      ADD_FAILURE() << "element " << i << ": no finite bound for a finite result";
      continue;
    }
    const double err = std::fabs(ours[i] - want);
    const double units = bound > 0 ? err / bound : (err > 0 ? INFINITY : 0);
    worst.first = std::fmax(worst.first, units);
    if (std::isfinite(torch[i])) {
      const double terr = std::fabs(torch[i] - want);
      worst.second = std::fmax(worst.second, bound > 0 ? terr / bound : (terr > 0 ? INFINITY : 0));
    } else {
      worst.second = INFINITY;
    }
    if (err > bound && reported++ < 3) {
      ADD_FAILURE() << "element " << i << " (channel " << ch << "): " << ours[i] << ", exact "
                    << exact[i] << ", |error| " << err << " > bound " << bound << " (scale "
                    << sc.scale << "); PyTorch " << torch[i];
    }
  }
}

TEST(BatchNormPathological, FileHasEveryKind) {
  std::map<std::string, int> kinds;
  for (const auto& c : cases()) ++kinds[c.at("kind").get<std::string>()];
  EXPECT_EQ(kinds.size(), 11u);
  for (const auto& [kind, count] : kinds) EXPECT_GE(count, 10) << kind;
}

TEST(BatchNormPathological, EveryOutputWithinItsRoundingOfExact) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.at("name").get<std::string>());
    const Shape shape = c.at("shape").get<Shape>();
    Case k;
    k.n = shape[0];
    k.c = shape[1];
    k.s = 1;
    for (std::size_t i = 2; i < shape.size(); ++i) k.s *= shape[i];
    k.dtype = golden_dtype(c);
    const MemoryFormat fmt = golden_format(c);
    k.momentum = c.at("momentum");
    k.eps = c.at("eps");
    k.x = values(c, "x");
    k.dy = values(c, "dy");
    k.w = values(c, "weight");
    k.b = values(c, "bias");
    k.rm0 = values(c, "running_mean_in");
    k.rv0 = values(c, "running_var_in");
    k.mean = values(c, "exact_save_mean");
    k.invstd = values(c, "exact_save_invstd");
    for (int64_t ch = 0; ch < k.c; ++ch) {  // the variance, only as a scale
      double m2 = 0;
      for (double v : k.channel(k.x, ch))
        m2 += std::isfinite(v) ? (v - k.mean[ch]) * (v - k.mean[ch]) : 0;
      k.var.push_back(m2 / static_cast<double>(k.n * k.s));
    }
    Tensor x = tensor(c, "x", shape, k.dtype, fmt), dy = tensor(c, "dy", shape, k.dtype, fmt);
    Tensor w = tensor(c, "weight", {k.c}, k.dtype), b = tensor(c, "bias", {k.c}, k.dtype);
    Tensor rm = tensor(c, "running_mean_in", {k.c}, k.dtype);
    Tensor rv = tensor(c, "running_var_in", {k.c}, k.dtype);
    const bool affine = w.defined(), running = rm.defined();
    Tensor rm_in = running ? rm.clone() : Tensor(), rv_in = running ? rv.clone() : Tensor();

    BatchNormForwardResult f = batch_norm_forward_train(x, w, b, rm, rv, k.momentum, k.eps);
    BatchNormBackwardResult g = batch_norm_backward(dy, x, w, rm, rv, f.save_mean, f.save_invstd,
                                                    true, k.eps, {true, affine, affine});
    check_field(c, k, "y", f.y.to_vector());
    check_field(c, k, "save_mean", f.save_mean.to_vector());
    check_field(c, k, "save_invstd", f.save_invstd.to_vector());
    check_field(c, k, "dx", g.dx.to_vector());
    if (affine) {
      check_field(c, k, "dweight", g.dweight.to_vector());
      check_field(c, k, "dbias", g.dbias.to_vector());
    }
    if (!running) continue;
    check_field(c, k, "running_mean", rm.to_vector());
    check_field(c, k, "running_var", rv.to_vector());
    Tensor ye = batch_norm_forward_infer(x, w, b, rm_in, rv_in, k.eps);
    BatchNormBackwardResult ge = batch_norm_backward(dy, x, w, rm_in, rv_in, Tensor(), Tensor(),
                                                     false, k.eps, {true, affine, affine});
    check_field(c, k, "y_eval", ye.to_vector());
    check_field(c, k, "dx_eval", ge.dx.to_vector());
    if (affine) {
      check_field(c, k, "dweight_eval", ge.dweight.to_vector());
      check_field(c, k, "dbias_eval", ge.dbias.to_vector());
    }
  }
  std::printf("worst error in bounds (1 = the bound), per data kind: bnorm, PyTorch\n");
  for (const auto& [kind, w] : g_worst) {
    std::printf("  %-10s %10.3g %10.3g\n", kind.c_str(), w.first, w.second);
  }
}

}  // namespace
}  // namespace bnorm::test
