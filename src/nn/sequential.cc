// nn::Sequential. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/sequential.h"

#include <fmt/format.h>

namespace bnorm::nn {

Tensor Sequential::forward(const Tensor& x) {
  Tensor h = x;
  for (auto& m : modules_) h = m->forward(h);
  return h;
}

Tensor Sequential::backward(const Tensor& dy) {
  Tensor g = dy;
  for (auto it = modules_.rbegin(); it != modules_.rend(); ++it) g = (*it)->backward(g);
  return g;
}

void Sequential::train(bool on) {
  training_ = on;
  for (auto& m : modules_) m->train(on);
}

std::vector<std::pair<std::string, Parameter*>> Sequential::named_parameters() {
  std::vector<std::pair<std::string, Parameter*>> out;
  for (std::size_t i = 0; i < modules_.size(); ++i)
    for (auto& [name, p] : modules_[i]->named_parameters())
      out.emplace_back(fmt::format("{}.{}", i, name), p);
  return out;
}

std::vector<std::pair<std::string, Tensor*>> Sequential::named_buffers() {
  std::vector<std::pair<std::string, Tensor*>> out;
  for (std::size_t i = 0; i < modules_.size(); ++i)
    for (auto& [name, t] : modules_[i]->named_buffers())
      out.emplace_back(fmt::format("{}.{}", i, name), t);
  return out;
}

std::vector<std::pair<std::string, int64_t*>> Sequential::named_int_buffers() {
  std::vector<std::pair<std::string, int64_t*>> out;
  for (std::size_t i = 0; i < modules_.size(); ++i)
    for (auto& [name, t] : modules_[i]->named_int_buffers())
      out.emplace_back(fmt::format("{}.{}", i, name), t);
  return out;
}

std::string Sequential::repr() const {
  std::string s = "Sequential(\n";
  for (std::size_t i = 0; i < modules_.size(); ++i)
    s += fmt::format("  ({}): {}\n", i, modules_[i]->repr());
  return s + ")";
}

}  // namespace bnorm::nn
