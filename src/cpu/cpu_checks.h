// cpu_checks.h — argument checks and dtype dispatch shared by the CpuBackend's files
// (cpu_backend.cpp, cpu_backend_decode.cpp): every CPU kernel takes contiguous F32/F64 tensors
// on the host and I32 index tensors of one entry per row.
#pragma once

#include <cstdint>

#include "core/error.h"
#include "core/tensor.h"

namespace sf::cpu {

inline void check_cpu(const Tensor& t, const char* op) {
  SF_CHECK(t.defined(), "{}: undefined tensor", op);
  SF_CHECK(t.device() == Device::cpu, "{}: tensor {} is not on the CPU", op, t.describe());
  SF_CHECK(t.is_contiguous(), "{}: tensor {} is not contiguous", op, t.describe());
}

inline void check_float(const Tensor& t, const char* op) {
  check_cpu(t, op);
  SF_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64,
           "{}: CPU kernels take F32 or F64 tensors, got {}", op, t.describe());
}

inline void check_same(const Tensor& a, const Tensor& b, const char* op) {
  check_float(a, op);
  check_float(b, op);
  SF_CHECK(a.dtype() == b.dtype(), "{}: dtype mismatch {} vs {}", op, a.describe(), b.describe());
  SF_CHECK(a.shape() == b.shape(), "{}: shape mismatch {} vs {}", op, a.describe(), b.describe());
}

// An I32 index tensor (token ids, positions, slots, key ranges) with one entry per row.
inline void check_indices(const Tensor& indices, int64_t rows, const char* op) {
  check_cpu(indices, op);
  SF_CHECK(indices.dtype() == DType::i32, "{}: indices must be I32, got {}", op,
           indices.describe());
  SF_CHECK(indices.numel() == rows, "{}: {} indices for {} rows", op, indices.numel(), rows);
}

// Calls fn(T{}) with T = float or double according to the tensor's dtype.
template <class Fn>
inline auto dispatch(const Tensor& t, Fn&& fn) {
  if (t.dtype() == DType::f64) return fn(double{});
  return fn(float{});
}

inline int64_t rows_of(const Tensor& t) { return t.numel() / t.dim(-1); }

// Up to this many rows, x W^T runs on cpu::linear_small instead of OpenBLAS.
constexpr int64_t kSmallRows = 16;

}  // namespace sf::cpu
