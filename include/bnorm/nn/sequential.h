// nn::Sequential: modules applied in order; names "0.weight", "1.running_mean", … as PyTorch's
// state_dict. Checked by tests/nn/layers_test.cc and tests/io/safetensors_test.cc.
#pragma once

#include <memory>
#include <vector>

#include "bnorm/nn/module.h"

namespace bnorm::nn {

class Sequential : public Module {
 public:
  Sequential() = default;
  /// Appends a module; returns a reference to it.
  template <typename M>
  M& add(std::unique_ptr<M> m) {
    M& ref = *m;
    modules_.push_back(std::move(m));
    return ref;
  }
  Tensor forward(const Tensor& x) override;
  Tensor backward(const Tensor& dy) override;
  void train(bool on = true) override;
  std::vector<std::pair<std::string, Parameter*>> named_parameters() override;
  std::vector<std::pair<std::string, Tensor*>> named_buffers() override;
  std::vector<std::pair<std::string, int64_t*>> named_int_buffers() override;
  std::string repr() const override;

  std::size_t size() const { return modules_.size(); }
  Module& operator[](std::size_t i) { return *modules_.at(i); }

 private:
  std::vector<std::unique_ptr<Module>> modules_;
};

}  // namespace bnorm::nn
