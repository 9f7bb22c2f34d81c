// Optimizer base, SGD, Adam and the schedules. Checked by tests/optim/optim_test.cc.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "bnorm/error.h"
#include "bnorm/optim/adam.h"
#include "bnorm/optim/lr_scheduler.h"
#include "bnorm/optim/sgd.h"

namespace bnorm::optim {

Optimizer::Optimizer(std::vector<nn::Parameter*> params, double lr)
    : params_(std::move(params)), lr_(lr) {
  if (!(lr >= 0)) throw ValueError(fmt::format("Optimizer: lr must be >= 0, got {}", lr));
  for (nn::Parameter* p : params_) {
    if (!p->value.defined() || p->value.dtype() != DType::kFloat32 || !p->grad.defined()) {
      throw ValueError("Optimizer: parameters must be float32 with a grad");
    }
  }
}

void Optimizer::zero_grad() {
  for (nn::Parameter* p : params_) p->grad.fill(0.0);
}

std::vector<nn::Parameter*> parameters_of(nn::Module& m) {
  std::vector<nn::Parameter*> out;
  for (auto& [name, p] : m.named_parameters()) out.push_back(p);
  return out;
}

SGD::SGD(std::vector<nn::Parameter*> params, double lr, SGDOptions options)
    : Optimizer(std::move(params), lr), options_(options) {
  if (options.momentum < 0 || options.weight_decay < 0) {
    throw ValueError(fmt::format("SGD: momentum and weight_decay must be >= 0, got {} and {}",
                                 options.momentum, options.weight_decay));
  }
  if (options.nesterov && (options.momentum <= 0 || options.dampening != 0)) {
    throw ValueError("SGD: Nesterov momentum requires a momentum and zero dampening");
  }
  buffers_.resize(params_.size());
}

void SGD::step() {
  for (std::size_t i = 0; i < params_.size(); ++i) {
    float* p = params_[i]->value.data<float>();
    const float* g = params_[i]->grad.data<float>();
    const int64_t n = params_[i]->value.numel();
    std::vector<float>& b = buffers_[i];
    const bool first = b.empty() && options_.momentum != 0;
    if (first) b.resize(static_cast<std::size_t>(n));
    const float mom = static_cast<float>(options_.momentum);
    const float damp = static_cast<float>(1 - options_.dampening);
    const float wd = static_cast<float>(options_.weight_decay);
    const float lr = static_cast<float>(lr_);
    for (int64_t j = 0; j < n; ++j) {
      float d = g[j] + wd * p[j];
      if (mom != 0) {
        b[j] = first ? d : mom * b[j] + damp * d;
        d = options_.nesterov ? d + mom * b[j] : b[j];
      }
      p[j] -= lr * d;
    }
  }
}

Adam::Adam(std::vector<nn::Parameter*> params, double lr, AdamOptions options)
    : Optimizer(std::move(params), lr), options_(options) {
  if (!(options.beta1 >= 0 && options.beta1 < 1 && options.beta2 >= 0 && options.beta2 < 1)) {
    throw ValueError(
        fmt::format("Adam: betas must be in [0, 1), got ({}, {})", options.beta1, options.beta2));
  }
  for (nn::Parameter* p : params_) {
    m_.emplace_back(static_cast<std::size_t>(p->value.numel()), 0.0f);
    v_.emplace_back(static_cast<std::size_t>(p->value.numel()), 0.0f);
  }
}

void Adam::step() {
  ++t_;
  const double bc1 = 1 - std::pow(options_.beta1, static_cast<double>(t_));
  const double bc2 = 1 - std::pow(options_.beta2, static_cast<double>(t_));
  const float b1 = static_cast<float>(options_.beta1), b2 = static_cast<float>(options_.beta2);
  const float step = static_cast<float>(lr_ / bc1);
  const float sqrt_bc2 = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(options_.eps),
              wd = static_cast<float>(options_.weight_decay);
  for (std::size_t i = 0; i < params_.size(); ++i) {
    float* p = params_[i]->value.data<float>();
    const float* g = params_[i]->grad.data<float>();
    float* m = m_[i].data();
    float* v = v_[i].data();
    for (int64_t j = 0; j < params_[i]->value.numel(); ++j) {
      const float d = g[j] + wd * p[j];
      m[j] = b1 * m[j] + (1 - b1) * d;
      v[j] = b2 * v[j] + (1 - b2) * d * d;
      p[j] -= step * m[j] / (std::sqrt(v[j]) / sqrt_bc2 + eps);
    }
  }
}

namespace {
Tensor to_tensor(const std::vector<float>& v) {
  return Tensor::from_vector<float>({static_cast<int64_t>(v.size())}, v);
}
// Finds `name` in `state` and copies it into `dst` (resized), checking its size.
bool restore(const std::vector<std::pair<std::string, Tensor>>& state, const std::string& name,
             int64_t size, std::vector<float>& dst) {
  for (const auto& [n, t] : state) {
    if (n != name) continue;
    if (t.numel() != size || t.dtype() != DType::kFloat32) {
      throw ValueError(fmt::format("load_state: '{}' must have {} float32 elements, got {}", name,
                                   size, t.numel()));
    }
    dst.assign(t.data<float>(), t.data<float>() + size);
    return true;
  }
  return false;
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> SGD::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (std::size_t i = 0; i < buffers_.size(); ++i)
    if (!buffers_[i].empty())
      out.emplace_back(fmt::format("momentum_buffer.{}", i), to_tensor(buffers_[i]));
  return out;
}

void SGD::load_state(const std::vector<std::pair<std::string, Tensor>>& state) {
  std::vector<std::vector<float>> b(params_.size());
  for (std::size_t i = 0; i < params_.size(); ++i) {
    if (!restore(state, fmt::format("momentum_buffer.{}", i), params_[i]->value.numel(), b[i]) &&
        options_.momentum != 0 && !state.empty()) {
      throw ValueError(fmt::format("SGD.load_state: missing momentum_buffer.{}", i));
    }
  }
  buffers_ = std::move(b);
}

std::vector<std::pair<std::string, Tensor>> Adam::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("step", Tensor::full({1}, static_cast<double>(t_)));
  for (std::size_t i = 0; i < m_.size(); ++i) {
    out.emplace_back(fmt::format("exp_avg.{}", i), to_tensor(m_[i]));
    out.emplace_back(fmt::format("exp_avg_sq.{}", i), to_tensor(v_[i]));
  }
  return out;
}

void Adam::load_state(const std::vector<std::pair<std::string, Tensor>>& state) {
  std::vector<float> step;
  if (!restore(state, "step", 1, step)) throw ValueError("Adam.load_state: missing step");
  std::vector<std::vector<float>> m(m_.size()), v(v_.size());
  for (std::size_t i = 0; i < m_.size(); ++i) {
    const int64_t n = params_[i]->value.numel();
    if (!restore(state, fmt::format("exp_avg.{}", i), n, m[i]) ||
        !restore(state, fmt::format("exp_avg_sq.{}", i), n, v[i])) {
      throw ValueError(fmt::format("Adam.load_state: missing exp_avg.{} or exp_avg_sq.{}", i, i));
    }
  }
  t_ = static_cast<int64_t>(step[0]);
  m_ = std::move(m);
  v_ = std::move(v);
}

StepLR::StepLR(Optimizer& opt, int64_t step_size, double gamma)
    : opt_(opt), base_lr_(opt.lr()), step_size_(step_size), gamma_(gamma) {
  if (step_size < 1)
    throw ValueError(fmt::format("StepLR: step_size must be >= 1, got {}", step_size));
}

void StepLR::step() {
  ++t_;
  opt_.set_lr(base_lr_ * std::pow(gamma_, static_cast<double>(t_ / step_size_)));
}

CosineAnnealingLR::CosineAnnealingLR(Optimizer& opt, int64_t t_max, double eta_min)
    : opt_(opt), base_lr_(opt.lr()), t_max_(t_max), eta_min_(eta_min) {
  if (t_max < 1)
    throw ValueError(fmt::format("CosineAnnealingLR: t_max must be >= 1, got {}", t_max));
}

void CosineAnnealingLR::step() {
  ++t_;
  const double t = static_cast<double>(std::min(t_, t_max_));
  opt_.set_lr(eta_min_ + (base_lr_ - eta_min_) *
                             (1 + std::cos(std::numbers::pi * t / static_cast<double>(t_max_))) /
                             2);
}

}  // namespace bnorm::optim
