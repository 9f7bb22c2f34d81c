// safetensors checkpoints: round trip with PyTorch keys, a file made by PyTorch
// (tests/data/pytorch_bn_mlp.safetensors), truncated/corrupt files, another architecture.
#include "bnorm/io/safetensors.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "bnorm/nn/activation.h"
#include "bnorm/nn/batchnorm.h"
#include "bnorm/nn/linear.h"
#include "bnorm/nn/sequential.h"
#include "bnorm/random.h"

#include "support/expect_error.h"

namespace bnorm::io {
namespace {

std::unique_ptr<nn::Sequential> mlp(int64_t hidden) {
  auto net = std::make_unique<nn::Sequential>();
  net->add(std::make_unique<nn::Linear>(4, hidden, false));
  net->add(std::make_unique<nn::BatchNorm1d>(hidden));
  net->add(std::make_unique<nn::ReLU>());
  net->add(std::make_unique<nn::Linear>(hidden, 2));
  return net;
}

std::string tmp(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "bnorm_io_test";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

template <typename Fn>
void expect_io_error(Fn fn, const std::string& text) {
  test::expect_error<IoError>(fn, text);
}

TEST(Safetensors, RoundTripKeepsEveryTensorAndCounter) {
  manual_seed(1);
  auto a = mlp(3);
  a->forward(Tensor::ones({5, 4}));  // updates running stats and num_batches_tracked
  const std::string p = tmp("a.safetensors");
  save_safetensors(*a, p, {{"note", "test"}});
  manual_seed(2);
  auto b = mlp(3);
  load_safetensors(*b, p);
  auto pa = a->named_parameters(), pb = b->named_parameters();
  for (std::size_t i = 0; i < pa.size(); ++i)
    EXPECT_EQ(pa[i].second->value.to_vector(), pb[i].second->value.to_vector());
  EXPECT_EQ(b->named_buffers()[0].second->to_vector(), a->named_buffers()[0].second->to_vector());
  EXPECT_EQ(*b->named_int_buffers()[0].second, 1);
  EXPECT_EQ(read_safetensors_metadata(p).at("note"), "test");
}

TEST(Safetensors, LoadsAFileWrittenByPyTorch) {
  // Made by scripts/golden/gen_safetensors.py: nn.Sequential(Linear(4,3,bias=False),
  // BatchNorm1d(3), ReLU(), Linear(3,2)) with weights 0.1·k and running stats after one step.
  const std::string p = std::string(BNORM_TEST_DATA_DIR) + "/pytorch_bn_mlp.safetensors";
  auto net = mlp(3);
  load_safetensors(*net, p);
  EXPECT_NEAR(net->named_parameters()[0].second->value.item({0, 1}), 0.1, 1e-7);
  EXPECT_NEAR(net->named_parameters()[0].second->value.item({2, 3}), 1.1, 1e-7);
  EXPECT_EQ(*net->named_int_buffers()[0].second, 1);
  EXPECT_NEAR(net->named_buffers()[1].second->item({0}), 0.9, 1e-6);  // running_var after x = const
}

TEST(Safetensors, TruncatedCorruptAndForeignFilesAreClearErrors) {
  manual_seed(3);
  auto a = mlp(3);
  const std::string p = tmp("b.safetensors");
  save_safetensors(*a, p);
  std::string bytes;
  {
    std::ifstream in(p, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  auto write = [&](const std::string& content) { std::ofstream(p, std::ios::binary) << content; };
  const auto before = a->named_parameters()[0].second->value.to_vector();
  write(bytes.substr(0, bytes.size() - 4));
  expect_io_error([&] { load_safetensors(*a, p); }, "truncated: tensor");
  write(bytes.substr(0, 5));
  expect_io_error([&] { load_safetensors(*a, p); }, "truncated at byte 5");
  std::string corrupt = bytes;
  corrupt[9] = '#';
  write(corrupt);
  expect_io_error([&] { load_safetensors(*a, p); }, "corrupt JSON header");
  EXPECT_EQ(a->named_parameters()[0].second->value.to_vector(), before);  // nothing changed
  write(bytes);
  auto other = mlp(5);
  expect_io_error([&] { load_safetensors(*other, p); },
                  "key '0.weight' must be F32 (5, 4) for this model, got F32 (3, 4)");
  nn::Sequential smaller;
  smaller.add(std::make_unique<nn::Linear>(4, 3, false));
  expect_io_error([&] { load_safetensors(smaller, p); }, "unexpected key");
}

}  // namespace
}  // namespace bnorm::io
