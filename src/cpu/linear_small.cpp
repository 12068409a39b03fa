// linear_small.cpp — out = alpha * x W^T + beta * out for a few rows (decoding: one row per
// sequence), the case OpenBLAS handles poorly and non-deterministically across thread counts,
// for one product or several independent ones in one parallel region.
//
// Work is split over output features (of all the products together, in proportion to their
// in_features); each output element is one dot product computed by one thread with a fixed
// 8-lane summation order, so the result depends neither on how many threads run it nor on which
// other products share the call. That is what lets the stacks-together decode schedule (layer j
// of every stack in one call) reproduce the sequential one bit for bit. The loop is
// memory-bound (each weight row is read once for all rows), which is the regime of batch-1
// decoding.
#include <omp.h>

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

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 32768;

}  // namespace

template <class T>
// An AVX2/FMA clone chosen at load time where the CPU has it. Not under sanitizers: their
// runtime is not initialised yet when the loader runs the clone resolver.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void linear_small_many(const SmallProduct<T>* products, int64_t count) {
  // Cost of one output feature of product i: its in_features (times its rows, equal in every
  // call the decoder makes). Each thread takes a contiguous share of the total cost.
  int64_t total_cost = 0, work = 0;
  for (int64_t i = 0; i < count; ++i) {
    total_cost += products[i].out_features * products[i].in_features;
    work += products[i].rows * products[i].out_features * products[i].in_features;
  }
#pragma omp parallel if (work > kParallelWork)
  {
    const int64_t thread = omp_get_thread_num(), threads = omp_get_num_threads();
    const int64_t begin = total_cost * thread / threads, end = total_cost * (thread + 1) / threads;
    int64_t offset = 0;  // cost before product i
    for (int64_t i = 0; i < count && offset < end; ++i) {
      const SmallProduct<T>& p = products[i];
      const int64_t cost = p.out_features * p.in_features;
      if (offset + cost > begin && p.in_features > 0) {
        // Features n of this product whose cost start offset + n * K lies in [begin, end).
        const int64_t k = p.in_features;
        const int64_t first = begin > offset ? (begin - offset + k - 1) / k : 0;
        const int64_t last = end - offset >= cost ? p.out_features : (end - offset + k - 1) / k;
        const T a = static_cast<T>(p.alpha), b = static_cast<T>(p.beta);
        for (int64_t n = first; n < last; ++n) {
          const T* wn = p.w + n * k;
          for (int64_t m = 0; m < p.rows; ++m) {
            T* o = p.out + m * p.out_features + n;
            const T value = a * dot_fixed_order(p.x + m * k, wn, k);
            *o = p.beta == 0.0 ? value : value + b * *o;
          }
        }
      }
      offset += cost;
    }
  }
}

template <class T>
void linear_small(T* out, const T* x, const T* w, int64_t rows, int64_t out_features,
                  int64_t in_features, double alpha, double beta) {
  const SmallProduct<T> one{out, x, w, rows, out_features, in_features, alpha, beta};
  linear_small_many(&one, 1);
}

template void linear_small_many<float>(const SmallProduct<float>*, int64_t);
template void linear_small_many<double>(const SmallProduct<double>*, int64_t);
template void linear_small<float>(float*, const float*, const float*, int64_t, int64_t, int64_t,
                                  double, double);
template void linear_small<double>(double*, const double*, const double*, int64_t, int64_t, int64_t,
                                   double, double);

}  // namespace sf::cpu
