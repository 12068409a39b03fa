// device_tensors.cpp — host/backend test-tensor transfers and the norm-wise relative error.
#include "support/device_tensors.h"

#include <cmath>
#include <limits>

#include "cpu/cpu_backend.h"
#include "support/gradcheck.h"

namespace sf::test {

Tensor to_backend(Backend& backend, const Tensor& host, DType dtype) {
  CpuBackend cpu;
  Tensor staged = Tensor::zeros(host.shape(), dtype);
  if (host.dtype() == DType::i32) staged = clone(host);
  else cpu.convert(staged, host);
  Tensor out = backend.zeros(host.shape(), staged.dtype());
  backend.copy(out, staged);
  return out;
}

Tensor to_host_f32(Backend& backend, const Tensor& device_tensor) {
  Tensor staged = Tensor::zeros(device_tensor.shape(), device_tensor.dtype());
  backend.copy(staged, device_tensor);
  if (staged.dtype() == DType::i32 || staged.dtype() == DType::f32) return staged;
  CpuBackend cpu;
  Tensor out = Tensor::zeros(staged.shape(), DType::f32);
  cpu.convert(out, staged);
  return out;
}

Tensor rounded_f32(const Tensor& host, DType dtype) {
  CpuBackend cpu;
  Tensor staged = Tensor::zeros(host.shape(), dtype);
  cpu.convert(staged, host);
  Tensor out = Tensor::zeros(host.shape(), DType::f32);
  cpu.convert(out, staged);
  return out;
}

double norm_relative_error(const Tensor& a, const Tensor& b) {
  SF_CHECK(a.numel() == b.numel(), "norm_relative_error: {} vs {}", a.describe(), b.describe());
  double diff = 0.0, ref = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double x = value_at(a, i), y = value_at(b, i);
    if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
    diff += (x - y) * (x - y);
    ref += y * y;
  }
  if (ref == 0.0) return diff == 0.0 ? 0.0 : std::numeric_limits<double>::infinity();
  return std::sqrt(diff / ref);
}

}  // namespace sf::test
