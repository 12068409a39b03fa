// swiglu.cpp — the SwiGLU gate: out = silu(gate) * up, silu(g) = g * sigmoid(g).
//
// Backward: dup = dout * silu(g); dgate = dout * up * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
#include <cmath>

#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

// Logistic function that never overflows: exp() only ever sees a non-positive argument.
inline double stable_sigmoid(double g) {
  if (g >= 0.0) return 1.0 / (1.0 + std::exp(-g));
  const double e = std::exp(g);
  return e / (1.0 + e);
}

}  // namespace

template <class T>
void swiglu_forward(T* out, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    out[i] = static_cast<T>(g * stable_sigmoid(g) * up[i]);
  }
}

template <class T>
void swiglu_backward(T* dgate, T* dup, const T* dout, const T* gate, const T* up, int64_t n) {
#pragma omp parallel for if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    const double s = stable_sigmoid(g);
    const double d = dout[i];
    dup[i] = static_cast<T>(d * g * s);
    dgate[i] = static_cast<T>(d * up[i] * s * (1.0 + g * (1.0 - s)));
  }
}

template void swiglu_forward<float>(float*, const float*, const float*, int64_t);
template void swiglu_forward<double>(double*, const double*, const double*, int64_t);
template void swiglu_backward<float>(float*, float*, const float*, const float*, const float*,
                                     int64_t);
template void swiglu_backward<double>(double*, double*, const double*, const double*,
                                      const double*, int64_t);

}  // namespace sf::cpu
