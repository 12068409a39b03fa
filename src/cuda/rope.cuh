// rope.cuh — the rotary embedding's angle, shared by the rotation kernels (rope.cu) and the
// fused decode attention (decode_ops.cu): pair m of a head at position p rotates by
// p * theta^(-2m/head_dim), the angle formed in fp64 and reduced before the fp32 sin/cos, as on
// the CPU (at position 1000 an fp32 angle would already be off by ~1e-4 rad).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace sf::cuda {

__device__ __forceinline__ void rotation(double position, int64_t pair, int64_t head_dim,
                                         double log_theta, float sign, float& c, float& s) {
  const double inv_freq = exp(-2.0 * static_cast<double>(pair) / head_dim * log_theta);
  double angle = fmod(position * inv_freq, 6.283185307179586476925);
  sincosf(static_cast<float>(angle), &s, &c);
  s *= sign;
}

}  // namespace sf::cuda
