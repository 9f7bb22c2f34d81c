#include "bnorm/functional/relu_mask.h"

#include <fmt/format.h>

#include "bnorm/error.h"

namespace bnorm {

ReluMask::ReluMask(int64_t size) { resize(size); }

void ReluMask::resize(int64_t size) {
  if (size < 0) throw ValueError(fmt::format("ReluMask: size must be >= 0, got {}", size));
  size_ = size;
  bits_.assign(static_cast<std::size_t>((size + 7) / 8), 0);
}

}  // namespace bnorm
