// data::DataLoader. Checked by tests/data/data_test.cc.
#include "bnorm/data/dataloader.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>

#include "bnorm/error.h"

namespace bnorm::data {

DataLoader::DataLoader(Tensor x, std::vector<int64_t> labels, Tensor y, DataLoaderOptions options)
    : x_(std::move(x)), y_(std::move(y)), labels_(std::move(labels)), options_(options) {
  if (!x_.defined() || x_.dim() < 2 || !x_.is_contiguous() || x_.dtype() != DType::kFloat32) {
    throw ValueError("DataLoader: x must be a contiguous float32 tensor of rank >= 2");
  }
  if (options_.batch_size < 1) {
    throw ValueError(
        fmt::format("DataLoader: batch_size must be >= 1, got {}", options_.batch_size));
  }
  const int64_t n = x_.size(0);
  // With drop_last, a batch larger than the data set leaves no batch at all: an epoch of
  // nothing, and a caller counting steps per epoch would divide by zero.
  if (options_.drop_last && options_.batch_size > n) {
    throw ValueError(fmt::format(
        "DataLoader: batch_size must be <= N={} (the number of samples) with drop_last, got {}", n,
        options_.batch_size));
  }
  if (!labels_.empty() && static_cast<int64_t>(labels_.size()) != n) {
    throw ValueError(
        fmt::format("DataLoader: labels must have N={} entries, got {}", n, labels_.size()));
  }
  if (y_.defined() && (y_.size(0) != n || y_.dtype() != DType::kFloat32 || !y_.is_contiguous())) {
    throw ValueError(fmt::format("DataLoader: y must be contiguous float32 with N={} rows", n));
  }
  start_epoch(0);
}

int64_t DataLoader::size() const {
  const int64_t n = x_.size(0), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch) {
  order_.resize(static_cast<std::size_t>(x_.size(0)));
  std::iota(order_.begin(), order_.end(), 0);
  if (options_.shuffle) {
    std::mt19937_64 rng(options_.seed + static_cast<uint64_t>(epoch));
    std::shuffle(order_.begin(), order_.end(), rng);
  }
}

Batch DataLoader::batch(int64_t i) const {
  if (i < 0 || i >= size()) {
    throw ValueError(fmt::format("DataLoader::batch: i must be in [0, {}), got {}", size(), i));
  }
  const int64_t n = x_.size(0), b0 = i * options_.batch_size;
  const int64_t b = std::min(options_.batch_size, n - b0);
  Shape xs = x_.shape();
  xs[0] = b;
  Batch out;
  out.x = Tensor::empty(xs);
  const int64_t row = x_.numel() / n;
  for (int64_t k = 0; k < b; ++k) {
    const int64_t src = order_[b0 + k];
    std::memcpy(out.x.data<float>() + k * row, x_.data<float>() + src * row, sizeof(float) * row);
    if (!labels_.empty()) out.labels.push_back(labels_[src]);
  }
  if (y_.defined()) {
    Shape ys = y_.shape();
    ys[0] = b;
    out.y = Tensor::empty(ys);
    const int64_t yrow = y_.numel() / n;
    for (int64_t k = 0; k < b; ++k)
      std::memcpy(out.y.data<float>() + k * yrow, y_.data<float>() + order_[b0 + k] * yrow,
                  sizeof(float) * yrow);
  }
  return out;
}

}  // namespace bnorm::data
