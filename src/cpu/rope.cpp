// rope.cpp — rotary position embedding, applied in place.
//
// Pair (2m, 2m+1) of every head at position p = position_offset + t rotates by the angle
// p * theta^(-2m / head_dim). sign = -1 rotates by the negative angle: the inverse rotation,
// which is also the transpose, hence the backward of the forward rotation.
#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace sf::cpu {

template <class T>
void rope_rotate(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim, double theta,
                 int64_t position_offset, int sign) {
  const int64_t half = head_dim / 2;
  // Frequencies once, in double: at long positions fp32 angles would lose several digits.
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t m = 0; m < half; ++m) {
    inv_freq[m] = std::pow(theta, -2.0 * static_cast<double>(m) / static_cast<double>(head_dim));
  }
#pragma omp parallel for if (seq * heads * head_dim > 16384)
  for (int64_t t = 0; t < seq; ++t) {
    const double position = static_cast<double>(position_offset + t);
    std::vector<double> cos_a(static_cast<size_t>(half)), sin_a(static_cast<size_t>(half));
    for (int64_t m = 0; m < half; ++m) {
      const double angle = position * inv_freq[m];
      cos_a[m] = std::cos(angle);
      sin_a[m] = sign * std::sin(angle);
    }
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t h = 0; h < heads; ++h) {
        T* v = x + ((b * seq + t) * heads + h) * head_dim;
        for (int64_t m = 0; m < half; ++m) {
          const double x0 = v[2 * m], x1 = v[2 * m + 1];
          v[2 * m] = static_cast<T>(x0 * cos_a[m] - x1 * sin_a[m]);
          v[2 * m + 1] = static_cast<T>(x0 * sin_a[m] + x1 * cos_a[m]);
        }
      }
    }
  }
}

template void rope_rotate<float>(float*, int64_t, int64_t, int64_t, int64_t, double, int64_t, int);
template void rope_rotate<double>(double*, int64_t, int64_t, int64_t, int64_t, double, int64_t,
                                  int);

}  // namespace sf::cpu
