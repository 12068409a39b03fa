// device_tensors.h — moving test tensors to and from any backend, in F32 or BF16, and the
// norm-wise relative error used to compare a GPU result with the CPU reference.
#pragma once

#include "core/backend.h"

namespace sf::test {

// `host` (a contiguous CPU F32/F64 tensor) as a new tensor of `dtype` on `backend`.
Tensor to_backend(Backend& backend, const Tensor& host, DType dtype);
// A backend tensor (F32, BF16 or I32) copied to the host; floating values come back as F32.
Tensor to_host_f32(Backend& backend, const Tensor& device_tensor);
// `host` rounded to `dtype` and back to F32 (the exact values a BF16 kernel reads).
Tensor rounded_f32(const Tensor& host, DType dtype);
// ||a - b|| / ||b|| over all elements (F32/F64, same count); +infinity when any value is NaN
// or infinite in a, so an unwritten (NaN-poisoned) output always fails.
double norm_relative_error(const Tensor& a, const Tensor& b);

}  // namespace sf::test
