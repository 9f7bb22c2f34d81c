// Argument checks shared by the nn layers.
#pragma once

#include <fmt/format.h>

#include "bnorm/error.h"
#include "bnorm/tensor.h"

namespace bnorm::detail {

/// Throws ValueError unless t is a defined, contiguous float32 tensor of rank `rank`.
inline void check_float_input(const char* fn, const char* name, const Tensor& t, int64_t rank) {
  if (!t.defined()) throw ValueError(fmt::format("{}: {} must be defined", fn, name));
  if (t.dim() != rank) {
    throw ValueError(fmt::format("{}: {} must be {}-d, got {}-d {}", fn, name, rank, t.dim(),
                                 shape_str(t.shape())));
  }
  if (t.dtype() != DType::kFloat32) {
    throw ValueError(
        fmt::format("{}: {} must be float32, got {}", fn, name, dtype_name(t.dtype())));
  }
  if (!t.is_contiguous()) {
    throw ValueError(fmt::format("{}: {} must be contiguous, got {}", fn, name,
                                 memory_format_name(t.memory_format())));
  }
}

/// Throws ValueError unless dy has `shape` (the shape of the last forward's output).
inline void check_grad_shape(const char* fn, const Tensor& dy, const Shape& shape) {
  if (!dy.defined() || dy.shape() != shape) {
    throw ValueError(fmt::format("{}: dy must have the output's shape {}, got {}", fn,
                                 shape_str(shape),
                                 dy.defined() ? shape_str(dy.shape()) : "undefined"));
  }
}

}  // namespace bnorm::detail
