// data::DataLoader: seeded shuffling and batching of an (N, F) tensor with labels or targets.
// Checked by tests/data/data_test.cc.
#pragma once

#include <cstdint>
#include <vector>

#include "bnorm/tensor.h"

namespace bnorm::data {

struct Batch {
  Tensor x;                     ///< (B, F…)
  std::vector<int64_t> labels;  ///< B class indices (classification), or empty
  Tensor y;                     ///< (B, T) targets (regression), or undefined
};

struct DataLoaderOptions {
  int64_t batch_size = 64;
  bool shuffle = true;
  bool drop_last = false;
  uint64_t seed = 0;  ///< epoch e shuffles with seed + e: the same order on every run
};

class DataLoader {
 public:
  /// x's first dim is the sample; labels (if any) and y (if defined) must match it. Throws
  /// ValueError for batch_size < 1 or mismatched sizes.
  DataLoader(Tensor x, std::vector<int64_t> labels, Tensor y, DataLoaderOptions options);
  /// Number of batches per epoch.
  int64_t size() const;
  /// Starts epoch `epoch` (reshuffles deterministically).
  void start_epoch(int64_t epoch);
  /// Batch `i` (0 ≤ i < size()) of the current epoch.
  Batch batch(int64_t i) const;
  int64_t num_samples() const { return x_.size(0); }

 private:
  Tensor x_, y_;
  std::vector<int64_t> labels_;
  DataLoaderOptions options_;
  std::vector<int64_t> order_;
};

}  // namespace bnorm::data
