// Tensor storage, strides and element access. Checked by tests/core/tensor_test.cc.
#include "bnorm/tensor.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>

#include "internal/storage_cache.h"

namespace bnorm {

namespace {
// 64 bytes: one cache line and one AVX-512 vector, so SIMD loads of a row start aligned.
constexpr std::size_t kAlignment = 64;
}  // namespace

std::size_t dtype_size(DType dtype) { return dtype == DType::kFloat32 ? 4 : 8; }

const char* dtype_name(DType dtype) { return dtype == DType::kFloat32 ? "float32" : "float64"; }

const char* memory_format_name(MemoryFormat format) {
  return format == MemoryFormat::kContiguous ? "contiguous" : "channels_last";
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

Shape strides_for(const Shape& shape, MemoryFormat format) {
  const std::size_t r = shape.size();
  Shape strides(r, 1);
  if (format == MemoryFormat::kContiguous || r < 3) {
    for (std::size_t i = r; i-- > 1;) strides[i - 1] = strides[i] * std::max<int64_t>(shape[i], 1);
    return strides;
  }
  // Channels-last: N, spatial dims, C innermost.
  strides[1] = 1;
  int64_t s = std::max<int64_t>(shape[1], 1);
  for (std::size_t i = r; i-- > 2;) {
    strides[i] = s;
    s *= std::max<int64_t>(shape[i], 1);
  }
  strides[0] = s;
  return strides;
}

Tensor::Storage::~Storage() { detail::StorageCache::instance().release(bytes, size); }

void set_tensor_cache_limit(std::size_t bytes) {
  detail::StorageCache::instance().set_limit(bytes);
}
std::size_t tensor_cache_limit() { return detail::StorageCache::instance().limit(); }

Tensor Tensor::empty(const Shape& shape, DType dtype, MemoryFormat format) {
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0) {
      throw ValueError(fmt::format("Tensor::empty: shape must have sizes >= 0, got {} at dim {}",
                                   shape_str(shape), i));
    }
  }
  if (format == MemoryFormat::kChannelsLast && shape.size() != 4 && shape.size() != 5) {
    throw ValueError(
        fmt::format("Tensor::empty: channels_last needs a 4-d or 5-d shape, got {}-d {}",
                    shape.size(), shape_str(shape)));
  }
  Tensor t;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.strides_ = strides_for(shape, format);
  t.format_ = format;
  t.storage_ = std::make_shared<Storage>();
  const std::size_t bytes = t.nbytes();
  const std::size_t rounded =
      (std::max<std::size_t>(bytes, 1) + kAlignment - 1) / kAlignment * kAlignment;
  void* block = detail::StorageCache::instance().take(rounded);
  if (!block) block = std::aligned_alloc(kAlignment, rounded);
  if (!block) throw std::bad_alloc();
  t.storage_->bytes = static_cast<std::byte*>(block);
  t.storage_->size = rounded;
  return t;
}

Tensor Tensor::full(const Shape& shape, double value, DType dtype, MemoryFormat format) {
  Tensor t = empty(shape, dtype, format);
  t.fill(value);
  return t;
}
Tensor Tensor::zeros(const Shape& shape, DType dtype, MemoryFormat format) {
  return full(shape, 0.0, dtype, format);
}
Tensor Tensor::ones(const Shape& shape, DType dtype, MemoryFormat format) {
  return full(shape, 1.0, dtype, format);
}

template <typename T>
Tensor Tensor::from_vector(const Shape& shape, const std::vector<T>& values, MemoryFormat format) {
  Tensor t = empty(shape, dtype_of<T>::value, format);
  if (static_cast<int64_t>(values.size()) != t.numel()) {
    throw ValueError(
        fmt::format("Tensor::from_vector: values must have {} elements for shape {}, got {}",
                    t.numel(), shape_str(shape), values.size()));
  }
  if (format == MemoryFormat::kContiguous) {
    std::memcpy(t.raw_data(), values.data(), t.nbytes());
    return t;
  }
  Tensor src = empty(shape, dtype_of<T>::value);
  std::memcpy(src.raw_data(), values.data(), src.nbytes());
  t.copy_from(src);
  return t;
}
template Tensor Tensor::from_vector<float>(const Shape&, const std::vector<float>&, MemoryFormat);
template Tensor Tensor::from_vector<double>(const Shape&, const std::vector<double>&, MemoryFormat);

int64_t Tensor::size(int64_t d) const {
  const int64_t r = dim();
  const int64_t i = d < 0 ? d + r : d;
  if (i < 0 || i >= r) {
    throw ValueError(fmt::format("Tensor::size: dim must be in [{}, {}), got {}", -r, r, d));
  }
  return shape_[i];
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape_) n *= s;
  return n;
}

bool Tensor::is_contiguous(MemoryFormat format) const {
  if (format == MemoryFormat::kChannelsLast && dim() != 4 && dim() != 5) return false;
  const Shape want = strides_for(shape_, format);
  for (std::size_t i = 0; i < shape_.size(); ++i) {
    if (shape_[i] > 1 && strides_[i] != want[i]) return false;
  }
  return true;
}

template <typename T>
T* Tensor::data() {
  if (!defined()) throw ValueError("Tensor::data: tensor is undefined");
  if (dtype_ != dtype_of<T>::value) {
    throw ValueError(fmt::format("Tensor::data: dtype is {}, asked for {}", dtype_name(dtype_),
                                 dtype_name(dtype_of<T>::value)));
  }
  return reinterpret_cast<T*>(storage_->bytes + offset_bytes_);
}
template <typename T>
const T* Tensor::data() const {
  return const_cast<Tensor*>(this)->data<T>();
}
template float* Tensor::data<float>();
template double* Tensor::data<double>();
template const float* Tensor::data<float>() const;
template const double* Tensor::data<double>() const;

int64_t Tensor::offset_of(const std::vector<int64_t>& index) const {
  if (static_cast<int64_t>(index.size()) != dim()) {
    throw ValueError(
        fmt::format("Tensor::item: index must have {} coordinates, got {}", dim(), index.size()));
  }
  int64_t off = 0;
  for (std::size_t i = 0; i < index.size(); ++i) {
    if (index[i] < 0 || index[i] >= shape_[i]) {
      throw ValueError(fmt::format("Tensor::item: index {} out of range for dim {} of size {}",
                                   index[i], i, shape_[i]));
    }
    off += index[i] * strides_[i];
  }
  return off;
}

double Tensor::item(std::initializer_list<int64_t> index) const {
  return item(std::vector<int64_t>(index));
}

double Tensor::item(const std::vector<int64_t>& index) const {
  const int64_t off = offset_of(index);
  return dtype_ == DType::kFloat32 ? data<float>()[off] : data<double>()[off];
}

void Tensor::set_item(const std::vector<int64_t>& index, double value) {
  const int64_t off = offset_of(index);
  if (dtype_ == DType::kFloat32) {
    data<float>()[off] = static_cast<float>(value);
  } else {
    data<double>()[off] = value;
  }
}

double Tensor::item() const {
  if (numel() != 1) {
    throw ValueError(fmt::format("Tensor::item: tensor must have 1 element, got {}", numel()));
  }
  return dtype_ == DType::kFloat32 ? data<float>()[0] : data<double>()[0];
}

namespace {
// Calls fn(logical_index, storage_offset) for every element in logical (row-major) order.
template <typename Fn>
void for_each_offset(const Shape& shape, const Shape& strides, Fn fn) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (n == 0) return;
  const std::size_t r = shape.size();
  std::vector<int64_t> idx(r, 0);
  int64_t off = 0;
  for (int64_t i = 0; i < n; ++i) {
    fn(i, off);
    for (std::size_t d = r; d-- > 0;) {
      if (++idx[d] < shape[d]) {
        off += strides[d];
        break;
      }
      off -= (shape[d] - 1) * strides[d];
      idx[d] = 0;
    }
  }
}
}  // namespace

std::vector<double> Tensor::to_vector() const {
  std::vector<double> out(static_cast<std::size_t>(numel()));
  if (dtype_ == DType::kFloat32) {
    const float* p = data<float>();
    for_each_offset(shape_, strides_, [&](int64_t i, int64_t off) { out[i] = p[off]; });
  } else {
    const double* p = data<double>();
    for_each_offset(shape_, strides_, [&](int64_t i, int64_t off) { out[i] = p[off]; });
  }
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  if (src.shape_ != shape_) {
    throw ValueError(fmt::format("Tensor::copy_from: src must have shape {}, got {}",
                                 shape_str(shape_), shape_str(src.shape_)));
  }
  if (src.dtype_ == dtype_ && src.strides_ == strides_) {
    std::memmove(raw_data(), src.raw_data(), nbytes());
    return;
  }
  const std::vector<double> v = src.to_vector();
  if (dtype_ == DType::kFloat32) {
    float* p = data<float>();
    for_each_offset(shape_, strides_,
                    [&](int64_t i, int64_t off) { p[off] = static_cast<float>(v[i]); });
  } else {
    double* p = data<double>();
    for_each_offset(shape_, strides_, [&](int64_t i, int64_t off) { p[off] = v[i]; });
  }
}

void Tensor::fill(double value) {
  const int64_t n = numel();
  if (dtype_ == DType::kFloat32) {
    std::fill_n(data<float>(), n, static_cast<float>(value));
  } else {
    std::fill_n(data<double>(), n, value);
  }
}

Tensor Tensor::clone() const { return clone(format_); }

Tensor Tensor::clone(MemoryFormat format) const {
  if (!defined()) return Tensor();
  Tensor t = empty(shape_, dtype_, format);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(DType dtype) const {
  Tensor t = empty(shape_, dtype, format_);
  t.copy_from(*this);
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  if (n != numel()) {
    throw ValueError(fmt::format("Tensor::reshape: shape {} must have {} elements, got {}",
                                 shape_str(shape), numel(), n));
  }
  if (!is_contiguous()) {
    throw ValueError(fmt::format("Tensor::reshape: tensor must be contiguous, got {}",
                                 memory_format_name(format_)));
  }
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = strides_for(shape, MemoryFormat::kContiguous);
  t.format_ = MemoryFormat::kContiguous;
  return t;
}

bool Tensor::overlaps(const Tensor& other) const {
  if (!defined() || !other.defined() || storage_ != other.storage_) return false;
  if (numel() == 0 || other.numel() == 0) return false;
  const std::size_t a0 = offset_bytes_, a1 = a0 + nbytes();
  const std::size_t b0 = other.offset_bytes_, b1 = b0 + other.nbytes();
  return a0 < b1 && b0 < a1;
}

bool Tensor::is_same_view(const Tensor& other) const {
  return storage_ == other.storage_ && offset_bytes_ == other.offset_bytes_ &&
         strides_ == other.strides_ && shape_ == other.shape_ && dtype_ == other.dtype_;
}

}  // namespace bnorm
