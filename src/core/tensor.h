// tensor.h — Buffer (owned memory on one device) and Tensor (a strided view over a Buffer).
//
// A Tensor is cheap to copy: copies share the Buffer. Views made by view(), slice() and
// select() share it too, so writing through a view writes the original. Element offsets and
// strides are in elements, not bytes. CPU buffers are 64-byte aligned and zero-initialised.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace sf {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);
// Element count; throws sf::Error for a negative dimension or a count past int64.
int64_t shape_numel(const Shape& shape);
// Bytes of a contiguous tensor of that shape and dtype, checked the same way.
size_t shape_nbytes(const Shape& shape, DType dtype);

class Buffer {
 public:
  // Takes ownership of `data`; `release` frees it (nullptr: not owned, e.g. a mapped file).
  Buffer(Device device, void* data, size_t bytes, std::function<void(void*)> release);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  static std::shared_ptr<Buffer> allocate_cpu(size_t bytes);

  Device device() const { return device_; }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  Device device_;
  void* data_;
  size_t bytes_;
  std::function<void(void*)> release_;
};

class Tensor {
 public:
  Tensor() = default;
  Tensor(std::shared_ptr<Buffer> buffer, DType dtype, Shape shape, int64_t offset = 0);

  // New zero-filled contiguous CPU tensor.
  static Tensor zeros(const Shape& shape, DType dtype = DType::f32);

  bool defined() const { return buffer_ != nullptr; }
  const Shape& shape() const { return shape_; }
  const Shape& strides() const { return strides_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative i counts from the end
  int64_t numel() const { return shape_numel(shape_); }
  DType dtype() const { return dtype_; }
  Device device() const { return buffer_ ? buffer_->device() : Device::cpu; }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype_); }
  bool is_contiguous() const;
  const std::shared_ptr<Buffer>& buffer() const { return buffer_; }
  int64_t offset() const { return offset_; }

  void* raw() const;
  template <class T> T* data() const {
    SF_CHECK(dtype_of<T>() == dtype_, "tensor holds {}, accessed as {}", dtype_name(dtype_),
             dtype_name(dtype_of<T>()));
    return static_cast<T*>(raw());
  }

  // Same elements, new shape (contiguous tensors only; one dimension may be -1).
  Tensor view(Shape shape) const;
  // Elements [start, start+length) along dimension `dim`.
  Tensor slice(int dim, int64_t start, int64_t length) const;
  // Sub-tensor at `index` along dimension 0 (drops that dimension).
  Tensor select(int64_t index) const;
  // Dimension `dim` split into `sizes` (their product is its size); works on any strides, so a
  // column range of a wider matrix can be seen as [B, T, H, hd].
  Tensor unflatten(int dim, const Shape& sizes) const;

  // Row-strided layout: the last `width_dims` dimensions are contiguous (one row of their
  // product's elements) and the rows (every leading dimension together, in order) lie
  // row_stride elements apart. That is what a column range of a wider row-major matrix is, or
  // any contiguous tensor (row_stride = the row's width). Returns the stride, or -1 for any
  // other layout.
  int64_t row_stride(int width_dims = 1) const;

  std::string describe() const;  // "F32[2, 3] cpu"
  // Whether `other` views the same elements with the same shape (an operation writing in place).
  bool same_view(const Tensor& other) const {
    return defined() && other.defined() && raw() == other.raw() && shape_ == other.shape_;
  }

 private:
  std::shared_ptr<Buffer> buffer_;
  DType dtype_ = DType::f32;
  Shape shape_;
  Shape strides_;
  int64_t offset_ = 0;
};

// Fails with `what` in the message unless `t` has exactly `shape`.
void check_shape(const Tensor& t, const Shape& shape, const char* what);

}  // namespace sf
