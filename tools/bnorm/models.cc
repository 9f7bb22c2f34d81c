// Model construction for the CLI.
#include "models.h"

#include <fmt/format.h>

#include <random>
#include <sstream>

#include "bnorm/nn/activation.h"
#include "bnorm/nn/batchnorm.h"
#include "bnorm/nn/conv2d.h"
#include "bnorm/nn/dropout.h"
#include "bnorm/nn/flatten.h"
#include "bnorm/nn/linear.h"
#include "bnorm/nn/maxpool2d.h"
#include "bnorm/random.h"

namespace bnorm::cli {

namespace {

std::unique_ptr<nn::Module> make_activation(const std::string& a) {
  if (a == "sigmoid") return std::make_unique<nn::Sigmoid>();
  if (a == "relu") return std::make_unique<nn::ReLU>();
  if (a == "tanh") return std::make_unique<nn::Tanh>();
  if (a == "none") return std::make_unique<nn::Identity>();
  throw ValueError(fmt::format("--activation must be sigmoid, relu, tanh or none, got '{}'", a));
}

void normal_init(Tensor& w, double std) {
  std::normal_distribution<float> d(0.0f, static_cast<float>(std));
  float* p = w.data<float>();
  for (int64_t i = 0; i < w.numel(); ++i) p[i] = d(generator());
}

}  // namespace

std::unique_ptr<nn::Sequential> build_model(const ModelSpec& spec) {
  nn::BatchNormOptions bn_options;
  bn_options.eps = spec.bn_eps;
  auto net = std::make_unique<nn::Sequential>();
  std::vector<int64_t> widths;
  if (spec.model == "mlp") {
    widths = {100, 100, 100};
  } else if (spec.model == "linear") {
    widths = {};
  } else if (spec.model == "cnn") {
    // conv3×3(32) → [BN] → act → pool2 → conv3×3(64) → [BN] → act → pool2 → fc 128 → [BN] → act →
    // fc.
    const bool bn = spec.batch_norm;
    int64_t side = spec.image_side;
    int64_t in_ch = 1;
    for (int64_t ch : {32, 64}) {
      auto& conv = net->add(std::make_unique<nn::Conv2d>(in_ch, ch, 3, 1, 1, spec.bias && !bn));
      if (spec.init_std > 0) normal_init(conv.weight().value, spec.init_std);
      if (bn) net->add(std::make_unique<nn::BatchNorm2d>(ch, bn_options));
      net->add(make_activation(spec.activation));
      net->add(std::make_unique<nn::MaxPool2d>(2));
      side /= 2;
      in_ch = ch;
    }
    net->add(std::make_unique<nn::Flatten>());
    auto& fc = net->add(std::make_unique<nn::Linear>(in_ch * side * side, 128, spec.bias && !bn));
    if (spec.init_std > 0) normal_init(fc.weight().value, spec.init_std);
    if (bn) net->add(std::make_unique<nn::BatchNorm1d>(128, bn_options));
    net->add(make_activation(spec.activation));
    if (spec.dropout > 0) net->add(std::make_unique<nn::Dropout>(spec.dropout));
    auto& out = net->add(std::make_unique<nn::Linear>(128, spec.classes, spec.bias));
    if (spec.init_std > 0) normal_init(out.weight().value, spec.init_std);
    return net;
  } else {
    std::stringstream ss(spec.model);
    std::string item;
    while (std::getline(ss, item, ',')) {
      try {
        widths.push_back(std::stoll(item));
      } catch (const std::exception&) {
        throw ValueError(
            fmt::format("--model must be mlp, cnn, linear or a list of widths like "
                        "'100,100', got '{}'",
                        spec.model));
      }
      if (widths.back() < 1)
        throw ValueError(fmt::format("--model widths must be >= 1, got {}", widths.back()));
    }
  }
  int64_t in = spec.inputs;
  for (int64_t w : widths) {
    auto& lin = net->add(std::make_unique<nn::Linear>(in, w, spec.bias && !spec.batch_norm));
    if (spec.init_std > 0) normal_init(lin.weight().value, spec.init_std);
    if (spec.batch_norm) net->add(std::make_unique<nn::BatchNorm1d>(w, bn_options));
    net->add(make_activation(spec.activation));
    if (spec.dropout > 0) net->add(std::make_unique<nn::Dropout>(spec.dropout));
    in = w;
  }
  auto& out = net->add(std::make_unique<nn::Linear>(in, spec.classes, spec.bias));
  if (spec.init_std > 0) normal_init(out.weight().value, spec.init_std);
  return net;
}

std::string describe(const ModelSpec& spec) {
  return fmt::format("{}{} {}{}{}{}", spec.model, spec.batch_norm ? "+bn" : "", spec.activation,
                     spec.init_std > 0 ? fmt::format(" init=N(0,{}²)", spec.init_std) : "",
                     spec.bias ? "" : " no-bias",
                     spec.dropout > 0 ? fmt::format(" dropout={}", spec.dropout) : "");
}

}  // namespace bnorm::cli
