// nn::Flatten. Checked by tests/nn/layers_test.cc.
#include "bnorm/nn/flatten.h"

#include <algorithm>

#include "internal/checks.h"

namespace bnorm::nn {

Tensor Flatten::forward(const Tensor& x) {
  if (!x.defined() || x.dim() < 2) throw ValueError("Flatten: input must have at least 2 dims");
  in_shape_ = x.shape();
  Tensor c = x.is_contiguous() ? x : x.clone(MemoryFormat::kContiguous);
  return c.reshape({x.size(0), x.numel() / std::max<int64_t>(x.size(0), 1)});
}

Tensor Flatten::backward(const Tensor& dy) {
  if (in_shape_.empty()) throw ValueError("Flatten: backward called before forward");
  Tensor c = dy.is_contiguous() ? dy : dy.clone(MemoryFormat::kContiguous);
  return c.reshape(in_shape_);
}

}  // namespace bnorm::nn
