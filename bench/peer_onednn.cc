// oneDNN's batch_normalization primitive (Debian's libdnnl 2.6) as a bnorm_bench peer, on plain
// nchw/nhwc/nc and on its blocked nChw16c layout. Scale and shift are used; inference uses
// global statistics; backward is prop_kind::backward (dx, dscale, dshift).
#include "bench_problem.h"

#ifdef BNORM_WITH_ONEDNN
#include <fmt/format.h>

#include <cstring>
#include <oneapi/dnnl/dnnl.hpp>

namespace bnorm::bench {

namespace {

using dnnl::memory;
using tag = memory::format_tag;

class OnednnRunner : public Runner {
 public:
  OnednnRunner(dnnl::engine& eng, const Problem& p, Op op, const Inputs& in)
      : eng_(eng), stream_(eng), p_(p) {
    const memory::dims dims(p.shape.begin(), p.shape.end());
    const tag t = p.layout == "NC"     ? tag::nc
                  : p.layout == "NCHW" ? tag::nchw
                  : p.layout == "NHWC" ? tag::nhwc
                                       : tag::nChw16c;
    const memory::desc md(dims, memory::data_type::f32, t);
    const memory::desc plain(dims, memory::data_type::f32, p.layout == "NC" ? tag::nc : tag::nchw);
    const memory::desc cd({p.channels()}, memory::data_type::f32, tag::x);
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    const float eps = 1e-5f;
    src_ = import(md, plain, in.x);
    dst_ = memory(md, eng_);
    scale_ = memory(cd, eng_);
    shift_ = memory(cd, eng_);
    std::memcpy(scale_.get_data_handle(), in.weight.data(), in.weight.size() * 4);
    std::memcpy(shift_.get_data_handle(), in.bias.data(), in.bias.size() * 4);
    mean_ = memory(cd, eng_);
    var_ = memory(cd, eng_);
    op_ = op;
    if (op == Op::kForwardInfer) {
      std::memcpy(mean_.get_data_handle(), in.running_mean.data(), in.running_mean.size() * 4);
      std::memcpy(var_.get_data_handle(), in.running_var.data(), in.running_var.size() * 4);
      dnnl::batch_normalization_forward::desc d(
          dnnl::prop_kind::forward_inference, md, eps,
          flags | dnnl::normalization_flags::use_global_stats);
      dnnl::batch_normalization_forward::primitive_desc pd(d, eng_);
      fwd_ = dnnl::batch_normalization_forward(pd);
      args_ = {{DNNL_ARG_SRC, src_},     {DNNL_ARG_DST, dst_},   {DNNL_ARG_SCALE, scale_},
               {DNNL_ARG_SHIFT, shift_}, {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, var_}};
      return;
    }
    dnnl::batch_normalization_forward::desc d(dnnl::prop_kind::forward_training, md, eps, flags);
    dnnl::batch_normalization_forward::primitive_desc pd(d, eng_);
    fwd_ = dnnl::batch_normalization_forward(pd);
    args_ = {{DNNL_ARG_SRC, src_},     {DNNL_ARG_DST, dst_},   {DNNL_ARG_SCALE, scale_},
             {DNNL_ARG_SHIFT, shift_}, {DNNL_ARG_MEAN, mean_}, {DNNL_ARG_VARIANCE, var_}};
    if (op == Op::kBackward) {
      fwd_.execute(stream_, args_);  // the statistics the backward needs
      stream_.wait();
      diff_dst_ = import(md, plain, in.dy);
      diff_src_ = memory(md, eng_);
      diff_scale_ = memory(cd, eng_);
      diff_shift_ = memory(cd, eng_);
      dnnl::batch_normalization_backward::desc bd(dnnl::prop_kind::backward, md, md, eps, flags);
      dnnl::batch_normalization_backward::primitive_desc bpd(bd, eng_, pd);
      bwd_ = dnnl::batch_normalization_backward(bpd);
      // oneDNN 2.6's backward with use_shift also wants the shift (exec_arg_md lists it), though
      // dx does not depend on it; without it execute() fails with "could not execute".
      bargs_ = {{DNNL_ARG_SRC, src_},
                {DNNL_ARG_DIFF_DST, diff_dst_},
                {DNNL_ARG_SCALE, scale_},
                {DNNL_ARG_SHIFT, shift_},
                {DNNL_ARG_MEAN, mean_},
                {DNNL_ARG_VARIANCE, var_},
                {DNNL_ARG_DIFF_SRC, diff_src_},
                {DNNL_ARG_DIFF_SCALE, diff_scale_},
                {DNNL_ARG_DIFF_SHIFT, diff_shift_}};
    }
  }

  void run() override {
    if (op_ == Op::kBackward) {
      bwd_.execute(stream_, bargs_);
    } else {
      fwd_.execute(stream_, args_);
    }
    stream_.wait();
  }

  std::vector<float> output() override {
    memory& out = op_ == Op::kBackward ? diff_src_ : dst_;
    const memory::dims dims(p_.shape.begin(), p_.shape.end());
    memory plain({dims, memory::data_type::f32, p_.layout == "NC" ? tag::nc : tag::nchw}, eng_);
    dnnl::reorder(out, plain).execute(stream_, out, plain);
    stream_.wait();
    const float* d = static_cast<const float*>(plain.get_data_handle());
    return std::vector<float>(d, d + p_.numel());
  }

 private:
  memory import(const memory::desc& md, const memory::desc& plain_md, const std::vector<float>& v) {
    memory plain(plain_md, eng_);
    std::memcpy(plain.get_data_handle(), v.data(), v.size() * 4);
    memory m(md, eng_);
    dnnl::reorder(plain, m).execute(stream_, plain, m);
    stream_.wait();
    return m;
  }

  dnnl::engine& eng_;
  dnnl::stream stream_;
  Problem p_;
  Op op_;
  memory src_, dst_, scale_, shift_, mean_, var_, diff_dst_, diff_src_, diff_scale_, diff_shift_;
  dnnl::batch_normalization_forward fwd_;
  dnnl::batch_normalization_backward bwd_;
  std::unordered_map<int, memory> args_, bargs_;
};

class OnednnPeer : public Peer {
 public:
  std::string name() const override { return "onednn"; }
  std::vector<std::string> layouts_4d() const override { return {"NCHW", "NHWC", "nChw16c"}; }
  std::unique_ptr<Runner> make(const Problem& p, Op op, const Inputs& in,
                               std::string& why) override {
    if (op == Op::kForwardAddRelu || op == Op::kBackwardAddRelu) {
      why = "oneDNN has no BN + Add + ReLU on CPU (fuse_norm_add_relu is GPU-only)";
      return nullptr;
    }
    if (p.layout == "nChw16c" && p.channels() % 16 != 0) {
      why = "C not a multiple of 16";
      return nullptr;
    }
    try {
      return std::make_unique<OnednnRunner>(eng_, p, op, in);
    } catch (const dnnl::error& e) {
      why = e.what();
      return nullptr;
    }
  }
  std::string describe() const override {
    const dnnl_version_t* v = dnnl_version();
    return fmt::format("oneDNN {}.{}.{} (cpu runtime {}, ISA chosen at run time)", v->major,
                       v->minor, v->patch, v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : "other");
  }

 private:
  dnnl::engine eng_{dnnl::engine::kind::cpu, 0};
};

}  // namespace

std::unique_ptr<Peer> make_onednn_peer() { return std::make_unique<OnednnPeer>(); }

}  // namespace bnorm::bench

#else
namespace bnorm::bench {
std::unique_ptr<Peer> make_onednn_peer() { return nullptr; }
}  // namespace bnorm::bench
#endif
