// rmsnorm.cpp — RMSNorm: out = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps).
//
// Backward, per row with n = dim, g = dout * weight:
//   dx = rstd * g - x * rstd^3 * (sum(g * x) / n),   dweight = sum over rows of dout * x * rstd.
// Reductions are carried out in double whatever T is.
#include <omp.h>

#include <cmath>
#include <vector>

#include "cpu/kernels.h"

namespace sf::cpu {

template <class T>
void rmsnorm_forward(T* out, T* rstd, const T* x, const T* weight, int64_t rows, int64_t dim,
                     double eps) {
#pragma omp parallel for if (rows * dim > 16384)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * dim;
    T* yr = out + r * dim;
    double sum_sq = 0.0;
    for (int64_t c = 0; c < dim; ++c) sum_sq += static_cast<double>(xr[c]) * xr[c];
    const double rs = 1.0 / std::sqrt(sum_sq / static_cast<double>(dim) + eps);
    rstd[r] = static_cast<T>(rs);
    for (int64_t c = 0; c < dim; ++c) yr[c] = static_cast<T>(xr[c] * rs * weight[c]);
  }
}

template <class T>
void rmsnorm_backward(T* dx, T* dweight, const T* dout, const T* x, const T* weight, const T* rstd,
                      int64_t rows, int64_t dim) {
  const bool parallel = rows * dim > 16384;
  const int threads = parallel ? omp_get_max_threads() : 1;
  // dweight sums over rows: each thread accumulates its rows into a private partial, and the
  // partials are added to dweight afterwards in thread order (deterministic for a fixed thread
  // count, and race-free).
  std::vector<double> partial(static_cast<size_t>(threads) * dim, 0.0);
#pragma omp parallel num_threads(threads) if (parallel)
  {
    double* my_dweight = partial.data() + static_cast<size_t>(omp_get_thread_num()) * dim;
#pragma omp for
    for (int64_t r = 0; r < rows; ++r) {
      const T* xr = x + r * dim;
      const T* gr = dout + r * dim;
      T* dxr = dx + r * dim;
      const double rs = rstd[r];
      double dot_gx = 0.0;  // sum over the row of dout * weight * x
      for (int64_t c = 0; c < dim; ++c) {
        dot_gx += static_cast<double>(gr[c]) * weight[c] * xr[c];
        my_dweight[c] += static_cast<double>(gr[c]) * xr[c] * rs;
      }
      const double coef = rs * rs * rs * dot_gx / static_cast<double>(dim);
      for (int64_t c = 0; c < dim; ++c) {
        dxr[c] += static_cast<T>(rs * static_cast<double>(gr[c]) * weight[c] - coef * xr[c]);
      }
    }
  }
  for (int t = 0; t < threads; ++t) {
    const double* p = partial.data() + static_cast<size_t>(t) * dim;
    for (int64_t c = 0; c < dim; ++c) dweight[c] += static_cast<T>(p[c]);
  }
}

template void rmsnorm_forward<float>(float*, float*, const float*, const float*, int64_t, int64_t,
                                     double);
template void rmsnorm_forward<double>(double*, double*, const double*, const double*, int64_t,
                                      int64_t, double);
template void rmsnorm_backward<float>(float*, float*, const float*, const float*, const float*,
                                      const float*, int64_t, int64_t);
template void rmsnorm_backward<double>(double*, double*, const double*, const double*,
                                       const double*, const double*, int64_t, int64_t);

}  // namespace sf::cpu
