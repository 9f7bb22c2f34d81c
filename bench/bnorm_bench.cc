// bnorm_bench: every bnorm implementation of the registry and the peers (oneDNN, libtorch) on
// the shapes of bench/shapes/*.txt, in one process, with a STREAM-like triad measured in the same
// run as the bandwidth denominator. Each result is checked against bnorm's reference before it is
// timed: a wrong kernel never produces a number. Run through scripts/bench.sh, which prints the
// Markdown table of doc/benchmarks.md; or directly:
//   build/bench/bench/bnorm_bench --shapes bench/shapes --benchmark_filter=fwd_train
#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "bench_problem.h"
#include "bnorm/bnorm.h"
#include "kernels/batch_norm_impls.h"

namespace bnorm::bench {

const char* op_name(Op op) {
  switch (op) {
    case Op::kForwardTrain:
      return "fwd_train";
    case Op::kForwardInfer:
      return "fwd_infer";
    case Op::kBackward:
      return "bwd";
    case Op::kForwardAddRelu:
      return "fwd_add_relu";
    case Op::kBackwardAddRelu:
      return "bwd_add_relu";
  }
  return "?";
}

int64_t Problem::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string Problem::shape_str() const {
  std::string s;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += 'x';
    s += std::to_string(shape[i]);
  }
  return s;
}

// Moves z away from where BN(x) + z is within 1e-3 of 0, so that the ReLU's decisions (and the
// BN + Add + ReLU backward's results) cannot depend on rounding: every implementation, the
// reference included, then agrees on which gradients pass.
void keep_relu_input_off_zero(const Problem& p, Inputs& in) {
  const int64_t n = p.shape[0], c = p.channels(), hw = p.numel() / (n * c);
  auto at = [&](int64_t i, int64_t ch, int64_t s) {
    return static_cast<std::size_t>((i * c + ch) * hw + s);
  };
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0, sq = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < hw; ++s) sum += in.x[at(i, ch, s)];
    const double mean = sum / static_cast<double>(n * hw);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) {
        const double d = in.x[at(i, ch, s)] - mean;
        sq += d * d;
      }
    }
    const double invstd = 1.0 / std::sqrt(sq / static_cast<double>(n * hw) + 1e-5);
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t s = 0; s < hw; ++s) {
        const std::size_t k = at(i, ch, s);
        const double r = (in.x[k] - mean) * invstd * in.weight[ch] + in.bias[ch] + in.z[k];
        if (std::fabs(r) < 1e-3) in.z[k] += 2e-3f;
      }
    }
  }
}

Inputs make_inputs(const Problem& p, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  Inputs in;
  in.x.resize(static_cast<std::size_t>(p.numel()));
  in.dy.resize(in.x.size());
  for (float& v : in.x) v = 1.0f + 2.0f * nd(rng);
  for (float& v : in.dy) v = nd(rng);
  in.z.resize(in.x.size());
  for (float& v : in.z) v = nd(rng);
  for (int64_t c = 0; c < p.channels(); ++c) {
    in.weight.push_back(1.0f + 0.1f * nd(rng));
    in.bias.push_back(0.1f * nd(rng));
    in.running_mean.push_back(1.0f);
    in.running_var.push_back(4.0f);
  }
  keep_relu_input_off_zero(p, in);
  return in;
}

double floor_bytes(const Problem& p, Op op) {
  const double passes = op == Op::kForwardInfer      ? 2
                        : op == Op::kForwardTrain    ? 3
                        : op == Op::kForwardAddRelu  ? 4
                        : op == Op::kBackwardAddRelu ? 6
                                                     : 5;
  return passes * 4.0 * static_cast<double>(p.numel());
}

namespace {

double g_stream_gbs = 0;  // measured by stream_triad() before the benchmarks run

// a[i] = b[i] + s·c[i] over 3 × 128 MB, best of 5, on bnorm's threads: the bandwidth a
// streaming kernel can hope for on this machine (12 bytes per element counted, as STREAM does).
double stream_triad() {
  const int64_t n = int64_t{32} << 20;
  std::vector<float> a(n), b(n, 1.0f), c(n, 2.0f);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(0, n, 1 << 16, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) a[i] = b[i] + 3.0f * c[i];
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 12.0 * static_cast<double>(n) / s / 1e9);
  }
  benchmark::DoNotOptimize(a.data());
  return best;
}

std::vector<Problem> read_shapes(const std::string& dir) {
  std::vector<Problem> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".txt") continue;
    std::ifstream in(entry.path());
    std::string line;
    while (std::getline(in, line)) {
      if (line.empty() || line[0] == '#') continue;
      std::istringstream ss(line);
      Problem p;
      ss >> p.layer;
      int64_t v;
      while (ss >> v) p.shape.push_back(v);
      if (p.shape.size() != 2 && p.shape.size() != 4) {
        throw Error(fmt::format("{}: '{}' must be 'name N C' or 'name N C H W'",
                                entry.path().string(), line));
      }
      out.push_back(p);
    }
  }
  std::sort(out.begin(), out.end(),
            [](const Problem& a, const Problem& b) { return a.layer < b.layer; });
  return out;
}

double max_rel_diff(const std::vector<float>& a, const std::vector<double>& ref) {
  double worst = 0, scale = 1e-30;
  for (double r : ref) scale = std::max(scale, std::fabs(r));
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - ref[i]));
  return worst / scale;
}

// The reference result of (p, op) in logical order, from bnorm's "ref" implementation.
std::vector<double> reference_output(const Problem& p, Op op, const Inputs& in) {
  setenv("BNORM_IMPL", "ref", 1);
  const Shape shape(p.shape.begin(), p.shape.end());
  Tensor x = Tensor::from_vector(shape, in.x), dy = Tensor::from_vector(shape, in.dy);
  const Shape c{p.channels()};
  Tensor w = Tensor::from_vector(c, in.weight), b = Tensor::from_vector(c, in.bias);
  Tensor rm = Tensor::from_vector(c, in.running_mean), rv = Tensor::from_vector(c, in.running_var);
  std::vector<double> out;
  if (op == Op::kForwardInfer) {
    out = batch_norm_forward_infer(x, w, b, rm, rv, 1e-5).to_vector();
  } else if (op == Op::kForwardAddRelu) {
    out = batch_norm_forward_train(x, w, b, rm, rv, 0.1, 1e-5).y.to_vector();
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = std::max(0.0, out[i] + in.z[i]);
  } else if (op == Op::kBackwardAddRelu) {
    // The unfused composition: dy masked where relu(BN(x) + z) passed, then BN's backward.
    auto f = batch_norm_forward_train(x, w, b, rm, rv, 0.1, 1e-5);
    const auto y = f.y.to_vector();
    std::vector<float> g(in.dy);
    for (std::size_t i = 0; i < g.size(); ++i)
      if (!(y[i] + in.z[i] > 0)) g[i] = 0.0f;
    out = batch_norm_backward(Tensor::from_vector(shape, g), x, w, rm, rv, f.save_mean,
                              f.save_invstd, true, 1e-5)
              .dx.to_vector();
  } else {
    auto f = batch_norm_forward_train(x, w, b, rm, rv, 0.1, 1e-5);
    out = op == Op::kForwardTrain
              ? f.y.to_vector()
              : batch_norm_backward(dy, x, w, rm, rv, f.save_mean, f.save_invstd, true, 1e-5)
                    .dx.to_vector();
  }
  unsetenv("BNORM_IMPL");
  return out;
}

// bnorm through its public _out API with one registry implementation forced.
class BnormRunner : public Runner {
 public:
  BnormRunner(const Problem& p, Op op, const Inputs& in, std::string impl)
      : op_(op), impl_(std::move(impl)) {
    const Shape shape(p.shape.begin(), p.shape.end());
    const MemoryFormat fmt =
        p.layout == "NHWC" ? MemoryFormat::kChannelsLast : MemoryFormat::kContiguous;
    x_ = Tensor::from_vector(shape, in.x, fmt);
    dy_ = Tensor::from_vector(shape, in.dy, fmt);
    if (op == Op::kForwardAddRelu || op == Op::kBackwardAddRelu)
      z_ = Tensor::from_vector(shape, in.z, fmt);
    const Shape c{p.channels()};
    w_ = Tensor::from_vector(c, in.weight);
    b_ = Tensor::from_vector(c, in.bias);
    rm_ = Tensor::from_vector(c, in.running_mean);
    rv_ = Tensor::from_vector(c, in.running_var);
    y_ = Tensor::zeros(shape, DType::kFloat32, fmt);  // touched once, so timing has no page faults
    dx_ = Tensor::zeros(shape, DType::kFloat32, fmt);
    if (op == Op::kBackwardAddRelu) dz_ = Tensor::zeros(shape, DType::kFloat32, fmt);
    sm_ = Tensor::empty(c);
    si_ = Tensor::empty(c);
    dw_ = Tensor::empty(c);
    db_ = Tensor::empty(c);
    setenv("BNORM_IMPL", impl_.c_str(), 1);
    if (op == Op::kBackward)
      batch_norm_forward_train_out(x_, w_, b_, rm_, rv_, 0.1, 1e-5, y_, sm_, si_);
    if (op == Op::kBackwardAddRelu) {
      batch_norm_add_relu_forward_train_out(x_, z_, w_, b_, rm_, rv_, 0.1, 1e-5, y_, sm_, si_,
                                            mask_);
    }
  }
  void run() override {
    setenv("BNORM_IMPL", impl_.c_str(), 1);
    if (op_ == Op::kForwardAddRelu) {
      batch_norm_add_relu_forward_train_out(x_, z_, w_, b_, rm_, rv_, 0.1, 1e-5, y_, sm_, si_,
                                            mask_);
    } else if (op_ == Op::kForwardTrain) {
      batch_norm_forward_train_out(x_, w_, b_, rm_, rv_, 0.1, 1e-5, y_, sm_, si_);
    } else if (op_ == Op::kForwardInfer) {
      batch_norm_forward_infer_out(x_, w_, b_, rm_, rv_, 1e-5, y_);
    } else if (op_ == Op::kBackwardAddRelu) {
      batch_norm_add_relu_backward_out(dy_, x_, w_, Tensor(), Tensor(), sm_, si_, mask_, true, 1e-5,
                                       {true, true, true}, dx_, dz_, dw_, db_);
    } else {
      batch_norm_backward_out(dy_, x_, w_, Tensor(), Tensor(), sm_, si_, true, 1e-5,
                              {true, true, true}, dx_, dw_, db_);
    }
  }
  std::vector<float> output() override {
    const bool backward = op_ == Op::kBackward || op_ == Op::kBackwardAddRelu;
    const auto v = (backward ? dx_ : y_).to_vector();
    return std::vector<float>(v.begin(), v.end());
  }

 private:
  Op op_;
  std::string impl_;
  Tensor x_, dy_, z_, w_, b_, rm_, rv_, y_, dx_, dz_, sm_, si_, dw_, db_;
  ReluMask mask_;
};

// Inputs and reference results are made once per (layer, op) and shared by every implementation
// and layout (the reference of a 100 MB tensor takes a second).
const Inputs& cached_inputs(const Problem& p) {
  static std::map<std::string, Inputs> cache;
  auto it = cache.find(p.layer);
  if (it == cache.end()) {
    cache.clear();  // one layer at a time: the large ones are 100 MB per tensor
    it = cache.emplace(p.layer, make_inputs(p, 42)).first;
  }
  return it->second;
}

const std::vector<double>& cached_reference(const Problem& p, Op op, const Inputs& in) {
  static std::map<std::pair<std::string, int>, std::vector<double>> cache;
  const auto key = std::make_pair(p.layer, static_cast<int>(op));
  auto it = cache.find(key);
  if (it == cache.end()) {
    if (!cache.empty() && cache.begin()->first.first != p.layer) cache.clear();
    it = cache.emplace(key, reference_output(p, op, in)).first;
  }
  return it->second;
}

void register_all(const std::vector<Problem>& shapes,
                  const std::vector<std::unique_ptr<Peer>>& peers) {
  for (const Problem& base : shapes) {
    for (Op op : {Op::kForwardTrain, Op::kForwardInfer, Op::kBackward, Op::kForwardAddRelu,
                  Op::kBackwardAddRelu}) {
      std::vector<std::string> layouts = base.shape.size() == 2
                                             ? std::vector<std::string>{"NC"}
                                             : std::vector<std::string>{"NCHW", "NHWC"};
      std::vector<std::pair<std::string, std::string>> who;  // (who, layout)
      for (const std::string& l : layouts)
        for (const kernels::BatchNormImpl& impl : kernels::batch_norm_impls())
          if (std::string(impl.name) != "ref")
            who.emplace_back(std::string("bnorm:") + impl.name, l);
      for (const auto& peer : peers) {
        const auto peer_layouts = base.shape.size() == 2 ? layouts : peer->layouts_4d();
        for (const std::string& l : peer_layouts) who.emplace_back(peer->name(), l);
      }
      for (const auto& [name, layout] : who) {
        Problem p = base;
        p.layout = layout;
        Peer* peer = nullptr;
        for (const auto& pp : peers)
          if (pp->name() == name) peer = pp.get();
        const std::string bench_name =
            fmt::format("{}/{}:{}/{}/{}", op_name(op), p.layer, p.shape_str(), layout, name);
        benchmark::RegisterBenchmark(
            bench_name.c_str(),
            [p, op, name = name, peer, bench_name](benchmark::State& state) {
              // Google Benchmark calls this several times while it sizes the iteration count:
              // build and check the runner once and keep it for the next calls (one at a time:
              // the large layers take 400 MB per runner).
              static std::string current;
              static std::unique_ptr<Runner> runner;
              static std::string failure;
              static double err = 0;
              if (current != bench_name) {
                current = bench_name;
                runner.reset();
                failure.clear();
                const Inputs& in = cached_inputs(p);
                std::string why;
                if (peer) {
                  runner = peer->make(p, op, in, why);
                } else {
                  runner = std::make_unique<BnormRunner>(p, op, in, name.substr(6));
                }
                if (!runner) {
                  failure = "declined: " + why;
                } else {
                  try {
                    runner->run();
                  } catch (const std::exception& e) {
                    failure = std::string("failed: ") + e.what();
                    runner.reset();
                  }
                }
                if (runner) {
                  err = max_rel_diff(runner->output(), cached_reference(p, op, in));
                  if (!(err < 1e-3)) {
                    failure = fmt::format("wrong result: max |diff| / max |ref| = {:.3g}", err);
                  }
                }
              }
              if (!failure.empty()) {
                state.SkipWithError(failure.c_str());
                return;
              }
              for (auto _ : state) runner->run();
              const double bytes = floor_bytes(p, op);
              state.counters["GB/s"] =
                  benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
              state.counters["stream_GB/s"] = g_stream_gbs;
              state.counters["max_rel_err"] = err;
            })
            ->Unit(benchmark::kMillisecond)
            ->UseRealTime()
            ->MinTime(0.2);
      }
    }
  }
}

}  // namespace
}  // namespace bnorm::bench

int main(int argc, char** argv) {
  using namespace bnorm::bench;
  std::string shapes_dir = BNORM_BENCH_SHAPES_DIR;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--shapes") shapes_dir = argv[i + 1];
  // Every library gets the same threads: libtorch's start-up would otherwise lower OpenMP's
  // default to its count of physical cores, for oneDNN and bnorm too.
  const int threads = bnorm::get_num_threads();
  bnorm::set_num_threads(threads);
  std::vector<std::unique_ptr<Peer>> peers;
  if (auto p = make_libtorch_peer(threads)) peers.push_back(std::move(p));
  if (auto p = make_onednn_peer()) peers.push_back(std::move(p));
  g_stream_gbs = stream_triad();
  benchmark::AddCustomContext("stream_triad_GB/s", fmt::format("{:.1f}", g_stream_gbs));
  benchmark::AddCustomContext("bnorm_threads", std::to_string(bnorm::get_num_threads()));
  benchmark::AddCustomContext("bnorm_hwy_target", bnorm::kernels::cpu_hwy::target_name());
  for (const auto& p : peers) benchmark::AddCustomContext(p->name(), p->describe());
  fmt::print(stderr, "STREAM triad: {:.1f} GB/s on {} threads; peers:", g_stream_gbs,
             bnorm::get_num_threads());
  for (const auto& p : peers) fmt::print(stderr, " {};", p->describe());
  fmt::print(stderr, "\n");
  register_all(read_shapes(shapes_dir), peers);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
