// rmsnorm.cpp — RMSNorm: out = x * rstd * weight with rstd = 1 / sqrt(mean(x^2) + eps).
//
// Backward, per row with n = dim, g = dout * weight:
//   dx = rstd * g - x * rstd^3 * (sum(g * x) / n),   dweight = sum over rows of dout * x * rstd.
// Reductions are carried out in double whatever T is.
#include <algorithm>
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
  // dweight sums over rows. The rows are cut into blocks that depend on the shape only; each
  // block sums its rows into a partial of its own, and the partials are added in block order.
  // The result is therefore the same whatever the thread count (training runs reproduce on a
  // machine with another number of free cores), and the partials need no locks.
  const int64_t blocks = std::min<int64_t>(256, (rows + 15) / 16);
  const int64_t rows_per_block = blocks > 0 ? (rows + blocks - 1) / blocks : 0;
  std::vector<double> partial(static_cast<size_t>(blocks) * dim, 0.0);
#pragma omp parallel for schedule(static) if (rows * dim > 16384)
  for (int64_t b = 0; b < blocks; ++b) {
    double* block_dweight = partial.data() + static_cast<size_t>(b) * dim;
    const int64_t end = std::min(rows, (b + 1) * rows_per_block);
    for (int64_t r = b * rows_per_block; r < end; ++r) {
      const T* xr = x + r * dim;
      const T* gr = dout + r * dim;
      T* dxr = dx + r * dim;
      const double rs = rstd[r];
      double dot_gx = 0.0;  // sum over the row of dout * weight * x
      for (int64_t c = 0; c < dim; ++c) {
        dot_gx += static_cast<double>(gr[c]) * weight[c] * xr[c];
        block_dweight[c] += static_cast<double>(gr[c]) * xr[c] * rs;
      }
      const double coef = rs * rs * rs * dot_gx / static_cast<double>(dim);
      for (int64_t c = 0; c < dim; ++c) {
        dxr[c] += static_cast<T>(rs * static_cast<double>(gr[c]) * weight[c] - coef * xr[c]);
      }
    }
  }
  for (int64_t c = 0; c < dim; ++c) {
    double sum = 0.0;
    for (int64_t b = 0; b < blocks; ++b) sum += partial[static_cast<size_t>(b) * dim + c];
    dweight[c] += static_cast<T>(sum);
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
