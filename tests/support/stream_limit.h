// Lowers cpu:hwy's streaming limit for a scope, so that tests on tensors of a few MiB take the
// non-temporal paths that real passes take from 32–64 MiB of tensors (stream_limit_bytes).
#pragma once

#include <cstddef>

#include "kernels/batch_norm_impls.h"

namespace bnorm::test {

class ScopedStreamLimit {
 public:
  explicit ScopedStreamLimit(std::size_t bytes) { kernels::cpu_hwy::set_stream_limit_bytes(bytes); }
  ~ScopedStreamLimit() { kernels::cpu_hwy::set_stream_limit_bytes(0); }
  ScopedStreamLimit(const ScopedStreamLimit&) = delete;
  ScopedStreamLimit& operator=(const ScopedStreamLimit&) = delete;
};

}  // namespace bnorm::test
