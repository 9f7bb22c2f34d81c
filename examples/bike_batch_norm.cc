// The seed article's example: bikes described by age (0–20 years) and distance ridden
// (0–300,000 km), two features whose ranges differ by four orders of magnitude. A BatchNorm1d(2)
// brings both to mean 0 and standard deviation 1 per mini-batch (train mode) and, after some
// batches, with its running statistics (eval mode).
// Run: build/release/examples/bike_batch_norm   (scripts/demo.sh builds and runs it)
// Expected: before, age mean ~10 std ~5.8 and distance mean ~1.5e5 std ~8.7e4; after (train),
// mean 0.0000 and std 1.0000 for both; eval mode close to that.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "bnorm/bnorm.h"

namespace {

// Draws `n` bikes: age uniform in [0, 20] years, distance ~ age·15,000 km/year ± noise, clipped
// to [0, 300,000].
bnorm::Tensor make_bikes(int64_t n, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> age(0.0, 20.0);
  std::normal_distribution<double> noise(0.0, 20000.0);
  std::vector<float> v;
  for (int64_t i = 0; i < n; ++i) {
    const double a = age(rng);
    const double d = std::clamp(a * 15000.0 + noise(rng), 0.0, 300000.0);
    v.push_back(static_cast<float>(a));
    v.push_back(static_cast<float>(d));
  }
  return bnorm::Tensor::from_vector<float>({n, 2}, v);
}

void print_stats(const char* title, const bnorm::Tensor& x) {
  const int64_t n = x.size(0);
  fmt::print("{:<34}", title);
  const char* names[] = {"age", "distance"};
  for (int64_t f = 0; f < 2; ++f) {
    double sum = 0, sq = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; ++i) {
      const double v = x.item({i, f});
      sum += v;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    const double mean = sum / static_cast<double>(n);
    for (int64_t i = 0; i < n; ++i) sq += (x.item({i, f}) - mean) * (x.item({i, f}) - mean);
    fmt::print("  {:>8}: mean {:>11.4f} std {:>10.4f} range [{:.4g}, {:.4g}]", names[f], mean,
               std::sqrt(sq / static_cast<double>(n)), lo, hi);
  }
  fmt::print("\n");
}

}  // namespace

int main() {
  std::mt19937_64 rng(42);
  bnorm::nn::BatchNorm1d bn(2);
  fmt::print("{}\n\n", bn.repr());

  bnorm::Tensor batch = make_bikes(64, rng);
  print_stats("raw batch", batch);
  bnorm::Tensor y = bn.forward(batch);
  print_stats("after BatchNorm1d (train mode)", y);
  fmt::print("\nrunning_mean after 1 batch: [{:.4f}, {:.4f}], running_var: [{:.4g}, {:.4g}]\n",
             bn.running_mean().item({0}), bn.running_mean().item({1}), bn.running_var().item({0}),
             bn.running_var().item({1}));

  for (int step = 0; step < 99; ++step) bn.forward(make_bikes(64, rng));
  fmt::print("running_mean after {} batches: [{:.4f}, {:.4f}], running_var: [{:.4g}, {:.4g}]\n\n",
             bn.num_batches_tracked(), bn.running_mean().item({0}), bn.running_mean().item({1}),
             bn.running_var().item({0}), bn.running_var().item({1}));

  bn.eval();
  bnorm::Tensor fresh = make_bikes(64, rng);
  print_stats("new batch, raw", fresh);
  print_stats("new batch, BatchNorm1d (eval)", bn.forward(fresh));
  fmt::print(
      "\nIn eval mode the layer uses running statistics, so a new batch is close to, but "
      "not exactly,\nmean 0 / std 1; in train mode every batch is normalized exactly.\n");
  return 0;
}
