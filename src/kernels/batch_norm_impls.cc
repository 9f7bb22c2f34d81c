// The batch-norm registry table and the selection logic (BNORM_IMPL, BNORM_VERBOSE).
// Checked by tests/kernels/batch_norm_impls_test.cc.
#include "kernels/batch_norm_impls.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bnorm/error.h"

namespace bnorm::kernels {

namespace {

std::string supports_always(const BatchNormProblem&) { return ""; }

// Fastest first, reference last.
constexpr BatchNormImpl kImpls[] = {
    {"cpu:hwy", supports_always, cpu_hwy::stats, cpu_hwy::normalize, cpu_hwy::backward_reduce,
     cpu_hwy::backward_dx, cpu_hwy::normalize_add_relu, cpu_hwy::forward_train_sweep,
     cpu_hwy::backward_sweep, cpu_hwy::normalize_infer},
    {"cpu:blocked", supports_always, cpu_blocked::stats, cpu_blocked::normalize,
     cpu_blocked::backward_reduce, cpu_blocked::backward_dx, nullptr, nullptr, nullptr, nullptr},
    {"ref", supports_always, reference::stats, reference::normalize, reference::backward_reduce,
     reference::backward_dx, reference::normalize_add_relu, nullptr, nullptr, nullptr},
};

bool verbose() {
  const char* v = std::getenv("BNORM_VERBOSE");
  return v && *v && std::strcmp(v, "0") != 0;
}

}  // namespace

std::string problem_str(const BatchNormProblem& p) {
  return fmt::format("N={} C={} HW={} {} {}", p.n, p.c, p.hw,
                     p.layout == Layout::kNCHW ? "NCHW" : "NHWC", dtype_name(p.dtype));
}

std::span<const BatchNormImpl> batch_norm_impls() { return kImpls; }

const BatchNormImpl& batch_norm_select(const BatchNormProblem& p) {
  const char* forced = std::getenv("BNORM_IMPL");
  if (forced && *forced) {
    for (const BatchNormImpl& impl : kImpls) {
      if (std::strcmp(impl.name, forced) != 0) continue;
      const std::string why = impl.supports(p);
      if (!why.empty()) {
        throw ValueError(fmt::format("BNORM_IMPL={} declines {}: {}", forced, problem_str(p), why));
      }
      if (verbose())
        std::fprintf(stderr, "bnorm: %s (forced) for %s\n", impl.name, problem_str(p).c_str());
      return impl;
    }
    std::string names;
    for (const BatchNormImpl& impl : kImpls) names += fmt::format(" {}", impl.name);
    throw ValueError(fmt::format("BNORM_IMPL must name one of{}, got {}", names, forced));
  }
  for (const BatchNormImpl& impl : kImpls) {
    const std::string why = impl.supports(p);
    if (why.empty()) {
      if (verbose()) {
        const bool hwy = std::strcmp(impl.name, "cpu:hwy") == 0;
        std::fprintf(stderr, "bnorm: %s%s%s for %s\n", impl.name, hwy ? "/" : "",
                     hwy ? cpu_hwy::target_name() : "", problem_str(p).c_str());
      }
      return impl;
    }
    if (verbose()) std::fprintf(stderr, "bnorm: %s declines: %s\n", impl.name, why.c_str());
  }
  return kImpls[std::size(kImpls) - 1];
}

}  // namespace bnorm::kernels
