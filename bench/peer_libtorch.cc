// libtorch 1.13 (Debian's libtorch-dev) as a bnorm_bench peer: at::native_batch_norm and
// at::native_batch_norm_backward. Its CPU build has no out= kernels for these
// (native_batch_norm.out is not registered for CPU in 1.13), so every call allocates its outputs; a
// caching CPU allocator installed here hands back the same, already faulted-in blocks, so the time
// is the kernel's and not the page faults of a fresh 100 MB output (100–200 ms each here).
#include "bench_problem.h"

#ifdef BNORM_WITH_LIBTORCH
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/Version.h>
#include <fmt/format.h>
#include <torch/csrc/api/include/torch/version.h>

#include <c10/core/CPUAllocator.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <regex>

namespace bnorm::bench {

namespace {

// Keeps freed blocks by size and reuses them: steady-state allocation without page faults.
class CachingAllocator : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) const override {
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex());
      auto& pool = cache();
      auto it = pool.find(n);
      if (it != pool.end()) {
        p = it->second;
        pool.erase(it);
      }
    }
    if (!p && posix_memalign(&p, 64, std::max<size_t>(n, 64)) != 0) throw std::bad_alloc();
    sizes()[p] = n;
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &release; }

 private:
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::multimap<size_t, void*>& cache() {
    static std::multimap<size_t, void*> c;
    return c;
  }
  static std::map<void*, size_t>& sizes() {
    static std::map<void*, size_t> s;
    return s;
  }
  static void release(void* p) {
    std::lock_guard<std::mutex> lock(mutex());
    cache().emplace(sizes()[p], p);
  }
};

at::Tensor from(const std::vector<float>& v, const std::vector<int64_t>& shape) {
  return at::from_blob(const_cast<float*>(v.data()), shape, at::kFloat).clone();
}

class TorchRunner : public Runner {
 public:
  TorchRunner(const Problem& p, Op op, const Inputs& in) : op_(op) {
    const auto fmt =
        p.layout == "NHWC" ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    x_ = from(in.x, p.shape).contiguous(fmt);
    dy_ = from(in.dy, p.shape).contiguous(fmt);
    if (op == Op::kForwardAddRelu || op == Op::kBackwardAddRelu)
      z_ = from(in.z, p.shape).contiguous(fmt);
    const std::vector<int64_t> c{p.channels()};
    w_ = from(in.weight, c);
    b_ = from(in.bias, c);
    rm_ = from(in.running_mean, c);
    rv_ = from(in.running_var, c);
    y_ = at::empty_like(x_);
    sm_ = at::empty(c);
    si_ = at::empty(c);
    dx_ = at::empty_like(x_);
    dw_ = at::empty(c);
    db_ = at::empty(c);
    if (op == Op::kBackward || op == Op::kBackwardAddRelu)
      std::tie(y_, sm_, si_) = at::native_batch_norm(x_, w_, b_, rm_, rv_, true, 0.1, 1e-5);
    if (op == Op::kBackwardAddRelu) y_.add_(z_).relu_();
  }
  void run() override {
    if (op_ == Op::kBackward) {
      std::tie(dx_, dw_, db_) = at::native_batch_norm_backward(dy_, x_, w_, rm_, rv_, sm_, si_,
                                                               true, 1e-5, {true, true, true});
    } else if (op_ == Op::kBackwardAddRelu) {
      // What autograd runs for relu(bn(x) + z): ReluBackward0 (threshold_backward on the output),
      // whose result is also z's gradient (AddBackward passes it through), then BN's backward.
      dz_ = at::threshold_backward(dy_, y_, 0);
      std::tie(dx_, dw_, db_) = at::native_batch_norm_backward(dz_, x_, w_, rm_, rv_, sm_, si_,
                                                               true, 1e-5, {true, true, true});
    } else if (op_ == Op::kForwardAddRelu) {
      // What a PyTorch ResNet block does: batch_norm, then add_ and relu_ in place.
      at::Tensor sm, si;
      std::tie(y_, sm, si) = at::native_batch_norm(x_, w_, b_, rm_, rv_, true, 0.1, 1e-5);
      y_.add_(z_).relu_();
    } else {
      at::Tensor sm, si;
      std::tie(y_, sm, si) =
          at::native_batch_norm(x_, w_, b_, rm_, rv_, op_ == Op::kForwardTrain, 0.1, 1e-5);
    }
  }
  std::vector<float> output() override {
    const bool backward = op_ == Op::kBackward || op_ == Op::kBackwardAddRelu;
    at::Tensor o = (backward ? dx_ : y_).contiguous();
    return std::vector<float>(o.data_ptr<float>(), o.data_ptr<float>() + o.numel());
  }

 private:
  Op op_;
  at::Tensor x_, dy_, z_, w_, b_, rm_, rv_, y_, sm_, si_, dx_, dz_, dw_, db_;
};

class TorchPeer : public Peer {
 public:
  explicit TorchPeer(int threads) {
    static CachingAllocator allocator;
    c10::SetCPUAllocator(&allocator, /*priority=*/100);
    at::set_num_threads(threads);  // also OpenMP's default, which oneDNN reads
  }
  std::string name() const override { return "libtorch"; }
  std::unique_ptr<Runner> make(const Problem& p, Op op, const Inputs& in, std::string&) override {
    return std::make_unique<TorchRunner>(p, op, in);
  }
  std::string describe() const override {
    const std::string cfg = at::show_config();
    std::smatch m;
    const std::string cap =
        std::regex_search(cfg, m, std::regex("CPU capability usage: (\\w+)")) ? m[1].str() : "?";
    return fmt::format("libtorch {}.{}.{} (CPU capability {}, {} threads)", TORCH_VERSION_MAJOR,
                       TORCH_VERSION_MINOR, TORCH_VERSION_PATCH, cap, at::get_num_threads());
  }
};

}  // namespace

std::unique_ptr<Peer> make_libtorch_peer(int threads) {
  return std::make_unique<TorchPeer>(threads);
}

}  // namespace bnorm::bench

#else
namespace bnorm::bench {
std::unique_ptr<Peer> make_libtorch_peer(int) { return nullptr; }
}  // namespace bnorm::bench
#endif
