// Tensor: an owning, strided n-d array of float32 or float64 with a memory format (contiguous
// NC… or channels-last NHWC/NDHWC). Storage is 64-byte aligned and shared between copies, like
// at::Tensor; clone() makes a deep copy. Tested by tests/core/tensor_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "bnorm/error.h"

namespace bnorm {

/// Element types. Adding bfloat16/float16 storage means a new enumerator, its element size in
/// dtype_size(), and a conversion in the kernels' load/store helpers; compute stays in
/// float/double.
enum class DType { kFloat32, kFloat64 };

/// Returns the size in bytes of one element of `dtype`.
std::size_t dtype_size(DType dtype);
/// Returns "float32" or "float64".
const char* dtype_name(DType dtype);

/// Maps a C++ element type to its DType.
template <typename T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct dtype_of<double> {
  static constexpr DType value = DType::kFloat64;
};

/// How the dimensions of a tensor are ordered in memory. kChannelsLast applies to 4-d (NHWC) and
/// 5-d (NDHWC) tensors, as PyTorch's channels_last / channels_last_3d.
enum class MemoryFormat { kContiguous, kChannelsLast };

/// Returns "contiguous" or "channels_last".
const char* memory_format_name(MemoryFormat format);

using Shape = std::vector<int64_t>;

/// Formats a shape as "(2, 3, 4)".
std::string shape_str(const Shape& shape);

/// An n-d array. A default-constructed Tensor is *undefined* (defined() is false): the functional
/// API uses it for an absent optional argument, like an undefined at::Tensor.
class Tensor {
 public:
  Tensor() = default;

  /// Allocates an uninitialized tensor. Throws ValueError for a negative size or for
  /// kChannelsLast with a rank other than 4 or 5.
  static Tensor empty(const Shape& shape, DType dtype = DType::kFloat32,
                      MemoryFormat format = MemoryFormat::kContiguous);
  /// Allocates a tensor filled with `value`.
  static Tensor full(const Shape& shape, double value, DType dtype = DType::kFloat32,
                     MemoryFormat format = MemoryFormat::kContiguous);
  static Tensor zeros(const Shape& shape, DType dtype = DType::kFloat32,
                      MemoryFormat format = MemoryFormat::kContiguous);
  static Tensor ones(const Shape& shape, DType dtype = DType::kFloat32,
                     MemoryFormat format = MemoryFormat::kContiguous);
  /// Copies `values`, given in logical (row-major NC…) order, into a new tensor of `format`.
  /// Throws ValueError when values.size() differs from the shape's element count.
  template <typename T>
  static Tensor from_vector(const Shape& shape, const std::vector<T>& values,
                            MemoryFormat format = MemoryFormat::kContiguous);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int64_t dim() const { return static_cast<int64_t>(shape_.size()); }
  /// Returns the size of dimension `d`; negative `d` counts from the end.
  int64_t size(int64_t d) const;
  int64_t numel() const;
  /// The format the strides match. A tensor matching both (e.g. C=1 or H=W=1) reports
  /// kContiguous, except N×C×1×1 built as channels-last, which reports kChannelsLast.
  MemoryFormat memory_format() const { return format_; }
  /// Whether the strides are exactly those of `format` for this shape.
  bool is_contiguous(MemoryFormat format = MemoryFormat::kContiguous) const;

  /// Returns a typed pointer to the first element. Throws ValueError when T is not the dtype.
  template <typename T>
  T* data();
  template <typename T>
  const T* data() const;
  void* raw_data() { return storage_ ? storage_->bytes + offset_bytes_ : nullptr; }
  const void* raw_data() const { return storage_ ? storage_->bytes + offset_bytes_ : nullptr; }
  std::size_t nbytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  /// Reads the element at a logical index (any dtype, returned as double); for tests and tools.
  double item(std::initializer_list<int64_t> index) const;
  double item(const std::vector<int64_t>& index) const;
  /// Writes the element at a logical index.
  void set_item(const std::vector<int64_t>& index, double value);
  /// Reads a one-element tensor.
  double item() const;

  /// Returns all elements in logical order, converted to double.
  std::vector<double> to_vector() const;
  /// Returns a deep copy in `format` (default: the same format).
  Tensor clone() const;
  Tensor clone(MemoryFormat format) const;
  /// Returns a deep copy converted to `dtype`.
  Tensor to(DType dtype) const;
  /// Returns a tensor sharing storage with a new shape of equal numel. Contiguous only.
  Tensor reshape(const Shape& shape) const;
  /// Copies `src` (same shape, any format, any dtype) into this tensor, converting.
  void copy_from(const Tensor& src);
  /// Sets every element to `value`.
  void fill(double value);
  /// Whether the two tensors share the same storage and their byte ranges intersect.
  bool overlaps(const Tensor& other) const;
  /// Whether both view the same storage at the same offset with the same strides.
  bool is_same_view(const Tensor& other) const;

 private:
  struct Storage {
    std::byte* bytes = nullptr;
    std::size_t size = 0;
    ~Storage();
  };
  std::shared_ptr<Storage> storage_;
  std::size_t offset_bytes_ = 0;
  DType dtype_ = DType::kFloat32;
  Shape shape_;
  Shape strides_;
  MemoryFormat format_ = MemoryFormat::kContiguous;

  int64_t offset_of(const std::vector<int64_t>& index) const;
};

/// Tensors of at least 64 KiB give their storage, when freed, to a cache from which the next
/// tensor of the same byte size takes it: a fresh large block costs a page fault per 4 KiB on
/// first touch (src/internal/storage_cache.h). At most `bytes` are kept, the oldest blocks freed
/// first; the default is an eighth of the physical memory, at least 256 MiB (0 under
/// AddressSanitizer). 0 turns the cache off and frees what it keeps. Thread-safe.
void set_tensor_cache_limit(std::size_t bytes);
std::size_t tensor_cache_limit();

/// Returns the strides of `format` for `shape`, in elements.
Shape strides_for(const Shape& shape, MemoryFormat format);

}  // namespace bnorm
