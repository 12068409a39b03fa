// bf16.h — bfloat16 <-> float conversion on the host (round to nearest even, NaN kept NaN).
//
// bfloat16 is the upper half of an IEEE float32: 8 exponent bits, 7 stored mantissa bits. The
// CUDA backend stores activations and working weights in it; the host needs the conversion for
// checkpoints, tests and the CPU side of device copies.
#pragma once

#include <cstdint>
#include <cstring>

namespace sf {

inline float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &wide, sizeof value);
  return value;
}

inline uint16_t float_to_bf16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0)
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // quiet NaN stays NaN
  const uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);  // ties go to the even neighbour
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

}  // namespace sf
