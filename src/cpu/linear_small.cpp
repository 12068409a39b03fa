// linear_small.cpp — out = alpha * x W^T + beta * out for a few rows (decoding: one row per
// sequence), the case OpenBLAS handles poorly and non-deterministically across thread counts.
//
// Work is split over output features; each output element is one dot product computed by one
// thread with a fixed 8-lane summation order, so the result does not depend on how many threads
// run it. That is what lets the concurrent decode schedule (a thread group per stack) reproduce
// the sequential one bit for bit. The loop is memory-bound (each weight row is read once for all
// rows), which is the regime of batch-1 decoding.
#include <cstdint>

#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

template <class T>
inline T dot_fixed_order(const T* a, const T* b, int64_t k) {
  T lane[8] = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int l = 0; l < 8; ++l) lane[l] += a[i + l] * b[i + l];
  T tail = 0;
  for (; i < k; ++i) tail += a[i] * b[i];
  return ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7])) +
         tail;
}

}  // namespace

template <class T>
// An AVX2/FMA clone chosen at load time where the CPU has it. Not under sanitizers: their
// runtime is not initialised yet when the loader runs the clone resolver.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void linear_small(T* out, const T* x, const T* w, int64_t rows, int64_t out_features,
                  int64_t in_features, double alpha, double beta) {
  const T a = static_cast<T>(alpha), b = static_cast<T>(beta);
#pragma omp parallel for schedule(static) if (out_features * in_features > 32768)
  for (int64_t n = 0; n < out_features; ++n) {
    const T* wn = w + n * in_features;
    for (int64_t m = 0; m < rows; ++m) {
      T* o = out + m * out_features + n;
      const T value = a * dot_fixed_order(x + m * in_features, wn, in_features);
      *o = beta == 0.0 ? value : value + b * *o;
    }
  }
}

template void linear_small<float>(float*, const float*, const float*, int64_t, int64_t, int64_t,
                                  double, double);
template void linear_small<double>(double*, const double*, const double*, int64_t, int64_t, int64_t,
                                   double, double);

}  // namespace sf::cpu
