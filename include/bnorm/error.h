// The exception types bnorm throws. Every check names the function, the argument, what was
// expected and what was given: "batch_norm_forward_train: weight must have C=64 elements, got 32".
// Tested by tests/core/error_test.cc and every *_bad_input test.
#pragma once

#include <stdexcept>
#include <string>

namespace bnorm {

/// Base class of every exception bnorm throws; catch this to catch them all.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

/// Thrown when an argument has the wrong shape, size, rank, dtype or value (PyTorch: ValueError /
/// RuntimeError from TORCH_CHECK).
class ValueError : public Error {
 public:
  explicit ValueError(const std::string& what) : Error(what) {}
};

/// Thrown when a file cannot be read or written, or its content is truncated or corrupt; the
/// message names the path and, where it applies, the byte offset and the expectation.
class IoError : public Error {
 public:
  explicit IoError(const std::string& what) : Error(what) {}
};

}  // namespace bnorm
