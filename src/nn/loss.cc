// CrossEntropyLoss and MSELoss. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/loss.h"

#include <cmath>

#include "internal/checks.h"

namespace bnorm::nn {

double CrossEntropyLoss::forward(const Tensor& logits, const std::vector<int64_t>& targets) {
  detail::check_float_input("CrossEntropyLoss", "logits", logits, 2);
  const int64_t n = logits.size(0), k = logits.size(1);
  if (static_cast<int64_t>(targets.size()) != n) {
    throw ValueError(
        fmt::format("CrossEntropyLoss: targets must have N={} entries, got {}", n, targets.size()));
  }
  probs_ = Tensor::empty({n, k});
  const float* z = logits.data<float>();
  float* p = probs_.data<float>();
  double loss = 0;
  correct_ = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t t = targets[i];
    if (t < 0 || t >= k) {
      throw ValueError(
          fmt::format("CrossEntropyLoss: target {} must be in [0, {}), got {}", i, k, t));
    }
    // log-softmax with the max subtracted: never overflows.
    double m = z[i * k];
    int64_t arg = 0;
    for (int64_t j = 1; j < k; ++j) {
      if (z[i * k + j] > m) {
        m = z[i * k + j];
        arg = j;
      }
    }
    double sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += std::exp(z[i * k + j] - m);
    const double log_sum = std::log(sum);
    for (int64_t j = 0; j < k; ++j)
      p[i * k + j] = static_cast<float>(std::exp(z[i * k + j] - m - log_sum));
    loss += log_sum - (z[i * k + t] - m);
    if (arg == t) ++correct_;
  }
  targets_ = targets;
  return loss / static_cast<double>(n);
}

Tensor CrossEntropyLoss::backward() const {
  if (!probs_.defined()) throw ValueError("CrossEntropyLoss: backward called before forward");
  const int64_t n = probs_.size(0), k = probs_.size(1);
  Tensor g = probs_.clone();
  float* d = g.data<float>();
  const float inv_n = 1.0f / static_cast<float>(n);
  for (int64_t i = 0; i < n; ++i) {
    d[i * k + targets_[i]] -= 1.0f;
    for (int64_t j = 0; j < k; ++j) d[i * k + j] *= inv_n;
  }
  return g;
}

double MSELoss::forward(const Tensor& prediction, const Tensor& target) {
  if (!prediction.defined() || !target.defined() || prediction.shape() != target.shape()) {
    throw ValueError(fmt::format("MSELoss: target must have prediction's shape {}, got {}",
                                 prediction.defined() ? shape_str(prediction.shape()) : "undefined",
                                 target.defined() ? shape_str(target.shape()) : "undefined"));
  }
  const std::vector<double> a = prediction.to_vector(), b = target.to_vector();
  diff_ = Tensor::empty(prediction.shape());
  float* d = diff_.data<float>();
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    d[i] = static_cast<float>(a[i] - b[i]);
    s += (a[i] - b[i]) * (a[i] - b[i]);
  }
  return s / static_cast<double>(a.size());
}

Tensor MSELoss::backward() const {
  if (!diff_.defined()) throw ValueError("MSELoss: backward called before forward");
  Tensor g = diff_.clone();
  float* d = g.data<float>();
  const float scale = 2.0f / static_cast<float>(g.numel());
  for (int64_t i = 0; i < g.numel(); ++i) d[i] *= scale;
  return g;
}

}  // namespace bnorm::nn
