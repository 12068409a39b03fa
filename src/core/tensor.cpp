// tensor.cpp — Buffer allocation and Tensor views.
#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace sf {

std::string shape_str(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

int64_t shape_numel(const Shape& shape) {
  // Checked: shapes come from files and configs, and a product that wrapped around would
  // allocate a small buffer that kernels then index as a large one.
  int64_t n = 1;
  for (int64_t d : shape) {
    SF_CHECK(d >= 0, "shape {} has a negative dimension", shape_str(shape));
    SF_CHECK(!__builtin_mul_overflow(n, d, &n), "shape {} has more elements than 64 bits count",
             shape_str(shape));
  }
  return n;
}

size_t shape_nbytes(const Shape& shape, DType dtype) {
  size_t bytes = 0;
  SF_CHECK(!__builtin_mul_overflow(static_cast<size_t>(shape_numel(shape)), dtype_size(dtype), &bytes),
           "shape {} of {} has more bytes than 64 bits count", shape_str(shape), dtype_name(dtype));
  return bytes;
}

Buffer::Buffer(Device device, void* data, size_t bytes, std::function<void(void*)> release)
    : device_(device), data_(data), bytes_(bytes), release_(std::move(release)) {}

Buffer::~Buffer() {
  if (release_ && data_) release_(data_);
}

std::shared_ptr<Buffer> Buffer::allocate_cpu(size_t bytes) {
  const size_t alignment = 64;
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded == 0) rounded = alignment;
  void* p = std::aligned_alloc(alignment, rounded);
  if (!p) fail(fmt::format("out of host memory allocating {} bytes", bytes));
  std::memset(p, 0, rounded);
  return std::make_shared<Buffer>(Device::cpu, p, bytes, [](void* q) { std::free(q); });
}

static Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t s = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

Tensor::Tensor(std::shared_ptr<Buffer> buffer, DType dtype, Shape shape, int64_t offset)
    : buffer_(std::move(buffer)), dtype_(dtype), shape_(std::move(shape)), offset_(offset) {
  for (int64_t d : shape_) SF_CHECK(d >= 0, "negative dimension in shape {}", shape_str(shape_));
  strides_ = contiguous_strides(shape_);
  SF_CHECK(buffer_ != nullptr, "tensor over a null buffer");
  SF_CHECK(static_cast<size_t>(offset_ + numel()) * dtype_size(dtype_) <= buffer_->bytes(),
           "tensor {} at offset {} does not fit its buffer of {} bytes", shape_str(shape_), offset_,
           buffer_->bytes());
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  return Tensor(Buffer::allocate_cpu(shape_nbytes(shape, dtype)),
                dtype, shape);
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  SF_CHECK(i >= 0 && i < n, "dimension {} out of range for a {}-d tensor", i, n);
  return shape_[i];
}

bool Tensor::is_contiguous() const { return strides_ == contiguous_strides(shape_); }

void* Tensor::raw() const {
  SF_CHECK(buffer_ != nullptr, "access to an undefined tensor");
  return static_cast<char*>(buffer_->data()) + offset_ * static_cast<int64_t>(dtype_size(dtype_));
}

Tensor Tensor::view(Shape shape) const {
  SF_CHECK(is_contiguous(), "view() of a non-contiguous tensor {}", describe());
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] == -1) {
      SF_CHECK(infer < 0, "view(): more than one -1 in {}", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      known *= shape[i];
    }
  }
  if (infer >= 0) {
    SF_CHECK(known > 0 && numel() % known == 0, "view(): cannot infer {} from {}", shape_str(shape),
             describe());
    shape[infer] = numel() / known;
  }
  SF_CHECK(shape_numel(shape) == numel(), "view(): {} has {} elements, {} needs {}", describe(),
           numel(), shape_str(shape), shape_numel(shape));
  Tensor t = *this;
  t.shape_ = shape;
  t.strides_ = contiguous_strides(shape);
  return t;
}

Tensor Tensor::slice(int d, int64_t start, int64_t length) const {
  if (d < 0) d += ndim();
  SF_CHECK(d >= 0 && d < ndim(), "slice(): dimension {} out of range for {}", d, describe());
  SF_CHECK(start >= 0 && length >= 0 && start + length <= shape_[d],
           "slice(): [{}, {}) out of range for dimension {} of {}", start, start + length, d,
           describe());
  Tensor t = *this;
  t.offset_ = offset_ + start * strides_[d];
  t.shape_[d] = length;
  return t;
}

Tensor Tensor::select(int64_t index) const {
  SF_CHECK(ndim() >= 1, "select() of a 0-d tensor");
  SF_CHECK(index >= 0 && index < shape_[0], "select(): index {} out of range for {}", index,
           describe());
  Tensor t = *this;
  t.offset_ = offset_ + index * strides_[0];
  t.shape_.erase(t.shape_.begin());
  t.strides_.erase(t.strides_.begin());
  return t;
}

Tensor Tensor::unflatten(int d, const Shape& sizes) const {
  if (d < 0) d += ndim();
  SF_CHECK(d >= 0 && d < ndim(), "unflatten(): dimension {} out of range for {}", d, describe());
  SF_CHECK(!sizes.empty() && shape_numel(sizes) == shape_[d],
           "unflatten(): dimension {} of {} cannot be split into {}", d, describe(),
           shape_str(sizes));
  Shape strides(sizes.size());
  int64_t stride = strides_[d];
  for (size_t i = sizes.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= sizes[i];
  }
  Tensor t = *this;
  t.shape_.erase(t.shape_.begin() + d);
  t.shape_.insert(t.shape_.begin() + d, sizes.begin(), sizes.end());
  t.strides_.erase(t.strides_.begin() + d);
  t.strides_.insert(t.strides_.begin() + d, strides.begin(), strides.end());
  return t;
}

int64_t Tensor::row_stride(int width_dims) const {
  SF_CHECK(width_dims >= 1 && width_dims <= ndim(), "row_stride(): {} row dimensions of {}",
           width_dims, describe());
  // Dimensions of size 1 never step, so their strides do not matter.
  const int first = ndim() - width_dims;
  int64_t expected = 1;
  for (int i = ndim() - 1; i >= first; --i) {
    if (shape_[i] != 1 && strides_[i] != expected) return -1;
    expected *= shape_[i];
  }
  const int64_t width = expected;
  int64_t row = -1;  // the innermost leading dimension that steps sets the row stride
  for (int i = first - 1; i >= 0; --i) {
    if (shape_[i] == 1) continue;
    if (row < 0) {
      if (strides_[i] < width) return -1;
      row = strides_[i];
    } else if (strides_[i] != expected) {
      return -1;
    }
    expected = strides_[i] * shape_[i];
  }
  return row < 0 ? width : row;
}

std::string Tensor::describe() const {
  return fmt::format("{}{} {}", dtype_name(dtype_), shape_str(shape_), device_name(device()));
}

void check_shape(const Tensor& t, const Shape& shape, const char* what) {
  SF_CHECK(t.defined(), "{}: tensor is undefined", what);
  SF_CHECK(t.shape() == shape, "{}: expected shape {}, got {}", what, shape_str(shape),
           shape_str(t.shape()));
}

}  // namespace sf
