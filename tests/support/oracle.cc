// The test-side oracle; see oracle.h.
#include "support/oracle.h"

#include <cmath>

namespace bnorm::test {

namespace {
double at(const std::vector<double>& v, std::size_t i, double fallback) {
  return v.empty() ? fallback : v[i];
}
}  // namespace

OracleForward oracle_forward_train(const std::vector<double>& x, int64_t n, int64_t c, int64_t hw,
                                   const std::vector<double>& weight,
                                   const std::vector<double>& bias,
                                   const std::vector<double>& running_mean,
                                   const std::vector<double>& running_var, double momentum,
                                   double eps) {
  OracleForward r;
  r.y.assign(x.size(), 0);
  r.running_mean = running_mean;
  r.running_var = running_var;
  const double count = static_cast<double>(n * hw);
  for (int64_t ch = 0; ch < c; ++ch) {
    std::vector<double> values;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < hw; ++s) values.push_back(x[(i * c + ch) * hw + s]);
    long double sum = 0;  // extended precision: an oracle should be at least as exact as bnorm
    for (double v : values) sum += v;
    const double m = static_cast<double>(sum / count);
    long double sq = 0;
    for (double v : values)
      sq += (static_cast<long double>(v) - m) * (static_cast<long double>(v) - m);
    const double var = static_cast<double>(sq / count);
    const double is = (var == 0 && eps == 0) ? 0.0 : 1.0 / std::sqrt(var + eps);
    r.mean.push_back(m);
    r.invstd.push_back(is);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < hw; ++s) {
        const std::size_t k = (i * c + ch) * hw + s;
        const double xhat = (x[k] - m) * is;
        r.y[k] = at(weight, ch, 1.0) * xhat + at(bias, ch, 0.0);
      }
    if (!running_mean.empty()) {
      r.running_mean[ch] = (1 - momentum) * running_mean[ch] + momentum * m;
      r.running_var[ch] = (1 - momentum) * running_var[ch] + momentum * var * count / (count - 1);
    }
  }
  return r;
}

std::vector<double> oracle_forward_infer(const std::vector<double>& x, int64_t n, int64_t c,
                                         int64_t hw, const std::vector<double>& weight,
                                         const std::vector<double>& bias,
                                         const std::vector<double>& running_mean,
                                         const std::vector<double>& running_var, double eps) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t ch = 0; ch < c; ++ch)
      for (int64_t s = 0; s < hw; ++s) {
        const std::size_t k = (i * c + ch) * hw + s;
        const double xhat = (x[k] - running_mean[ch]) / std::sqrt(running_var[ch] + eps);
        y[k] = at(weight, ch, 1.0) * xhat + at(bias, ch, 0.0);
      }
  return y;
}

OracleBackward oracle_backward(const std::vector<double>& dy, const std::vector<double>& x,
                               int64_t n, int64_t c, int64_t hw, const std::vector<double>& weight,
                               const std::vector<double>& mean, const std::vector<double>& invstd,
                               bool train) {
  OracleBackward r;
  r.dx.assign(x.size(), 0);
  const double count = static_cast<double>(n * hw);
  for (int64_t ch = 0; ch < c; ++ch) {
    long double sdy = 0, sdyxhat = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < hw; ++s) {
        const std::size_t k = (i * c + ch) * hw + s;
        const long double xhat = (static_cast<long double>(x[k]) - mean[ch]) * invstd[ch];
        sdy += dy[k];
        sdyxhat += dy[k] * xhat;
      }
    const double g = at(weight, ch, 1.0);
    r.dbias.push_back(static_cast<double>(sdy));
    r.dweight.push_back(static_cast<double>(sdyxhat));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < hw; ++s) {
        const std::size_t k = (i * c + ch) * hw + s;
        if (!train) {
          r.dx[k] = g * invstd[ch] * dy[k];
          continue;
        }
        const long double xhat = (static_cast<long double>(x[k]) - mean[ch]) * invstd[ch];
        r.dx[k] =
            static_cast<double>(g * invstd[ch] * (dy[k] - sdy / count - xhat * sdyxhat / count));
      }
  }
  return r;
}

}  // namespace bnorm::test
