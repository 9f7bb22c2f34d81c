// IDX files (the MNIST / Fashion-MNIST format), gzipped or not, and the Fashion-MNIST data set
// as Debian's dataset-fashion-mnist installs it. Checked by tests/data/idx_test.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::data {

/// The default location of Debian's dataset-fashion-mnist package.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// The raw content of an unsigned-byte IDX file: its dimensions and values.
struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;
};

/// Reads an IDX file of unsigned bytes (type 0x08), gzipped (.gz, detected by content) or not.
/// Throws IoError naming the path, the byte offset and the expectation for a missing file, a
/// wrong magic, an unsupported type, or a file shorter or longer than its header says.
IdxArray read_idx(const std::string& path);

/// Images scaled to [0, 1] as (N, rows·cols) float32 and labels as class indices.
struct ImageSet {
  Tensor images;
  std::vector<int64_t> labels;
  int64_t rows = 0, cols = 0;
};

/// Reads an images file (magic 2051) and a labels file (magic 2049) and checks they match.
ImageSet read_idx_image_set(const std::string& images_path, const std::string& labels_path);

struct TrainTest {
  ImageSet train, test;
};

/// Loads train-*/t10k-* from `dir` (IoError naming the missing file and the Debian package).
TrainTest load_fashion_mnist(const std::string& dir = kFashionMnistDir);

/// The Fashion-MNIST class names, index → name.
const char* fashion_mnist_class_name(int64_t label);

}  // namespace bnorm::data
