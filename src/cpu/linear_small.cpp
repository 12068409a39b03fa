// linear_small.cpp — out = alpha * x W^T + beta * out for a few rows (decoding: one row per
// sequence), the case OpenBLAS handles poorly and non-deterministically across thread counts,
// for one product or several independent ones in one parallel region.
//
// Work is split over output features (of all the products together, in proportion to their
// in_features); each output element is one dot product computed by one thread with a fixed
// 8-lane summation order, so the result depends neither on how many threads run it nor on which
// other products share the call. That is what lets the stacks-together decode schedule (layer j
// of every stack in one call) reproduce the sequential one bit for bit. Each weight row is read
// once for all rows, which keeps batch-1 decoding memory-bound; with more rows (a server's
// batch) the dot products run in blocks of a few weight rows x a few input rows with one
// accumulator each, so that they do not wait on the latency of one chain of multiply-adds, and
// each element keeps the order it has on its own. GCC builds for x86-64 take an AVX2/FMA
// version (32-byte registers) where the CPU has it; otherwise 16-byte registers.
#include <omp.h>

#include <cstdint>

#include "cpu/kernels.h"

namespace sf::cpu {

namespace {

// kBytes of T as one value (GCC's and Clang's vector extension): an operation on it is the same
// operation on each element, and the compiler maps it to one SIMD register of that width.
template <class T, int kBytes>
using Vec [[gnu::vector_size(kBytes)]] = T;

template <class V, class T>
[[gnu::always_inline]] inline void load(V& v, const T* p) {
  __builtin_memcpy(&v, p, sizeof v);
}

// The elements i..k-1 (fewer than 8) of a dot product, one row at a time in this loop's shape:
// GCC vectorizes it as an in-order reduction (with AVX2: products computed in a vector register
// are rounded before they are added, the leftover ones are fused with their add), so the tail's
// rounding is this loop's, and keeping the loop keeps the results this kernel has always given.
template <class T>
[[gnu::always_inline]] inline T tail_sum(const T* a, const T* b, int64_t i, int64_t k) {
  T tail = 0;
  for (; i < k; ++i) tail += a[i] * b[i];
  return tail;
}

// Registers of kBytes per 8 lanes of T.
template <class T, int kBytes>
constexpr int kParts = 8 * int(sizeof(T)) / kBytes;

// dots[c][r] = the dot product of row r of x with row c of w (rows k apart), for kCols rows of
// w and kRows rows of x, each summed in the one fixed order: 8 lanes, lane l takes the elements
// i = l (mod 8) of the full blocks of 8 in order (lane += x * w, the statement the compiler fuses
// into one multiply-add where the ISA has FMA), the lanes are reduced in one fixed tree, and the
// tail (tail_sum) is added last. Which other dot products share the block changes nothing in
// that order. The kCols * kRows chains are independent, so they run in parallel instead of each
// waiting on the latency of its previous multiply-add, and each load of w (of x) serves kRows
// (kCols) of them.
template <class T, int kBytes, int kCols, int kRows>
[[gnu::always_inline]] inline void dot_block(const T* x, const T* w, int64_t k,
                                             T (&dots)[kCols][kRows]) {
  constexpr int P = kParts<T, kBytes>, W = 8 / P;  // registers per 8 lanes, lanes per register
  using V = Vec<T, kBytes>;
  V lane[kCols][kRows][P];
  for (int c = 0; c < kCols; ++c)
    for (int r = 0; r < kRows; ++r)
      for (int q = 0; q < P; ++q) lane[c][r][q] = V{};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8)
    for (int q = 0; q < P; ++q) {
      V wq[kCols];
      for (int c = 0; c < kCols; ++c) load(wq[c], w + c * k + i + q * W);
      for (int r = 0; r < kRows; ++r) {
        V xq;
        load(xq, x + r * k + i + q * W);
        for (int c = 0; c < kCols; ++c) lane[c][r][q] += xq * wq[c];
      }
    }
  for (int c = 0; c < kCols; ++c)
    for (int r = 0; r < kRows; ++r) {
      T v[8];
      for (int l = 0; l < 8; ++l) v[l] = lane[c][r][l / W][l % W];
      dots[c][r] = ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])) +
                   tail_sum(x + r * k, w + c * k, i, k);
    }
}

// out[m + r, n + c] = a * dot + b * out (b only where p.beta != 0) for the block at (n, m).
template <class T, int kBytes, int kCols, int kRows>
[[gnu::always_inline]] inline void product_block(const SmallProduct<T>& p, int64_t n, int64_t m,
                                                 T a, T b) {
  const int64_t k = p.in_features;
  T dots[kCols][kRows];
  dot_block<T, kBytes, kCols, kRows>(p.x + m * k, p.w + n * k, k, dots);
  for (int c = 0; c < kCols; ++c)
    for (int r = 0; r < kRows; ++r) {
      T* o = p.out + (m + r) * p.out_features + n + c;
      const T value = a * dots[c][r];
      *o = p.beta == 0.0 ? value : value + b * *o;
    }
}

// Output features n..n+kCols-1 of every row: blocks of kRows rows, then the rest one by one.
template <class T, int kBytes, int kCols, int kRows>
[[gnu::always_inline]] inline void product_columns(const SmallProduct<T>& p, int64_t n, T a,
                                                   T b) {
  int64_t m = 0;
  for (; m + kRows <= p.rows; m += kRows) product_block<T, kBytes, kCols, kRows>(p, n, m, a, b);
  for (; m < p.rows; ++m) product_block<T, kBytes, kCols, 1>(p, n, m, a, b);
}

// The block: 8 accumulator registers (enough independent chains for two multiply-adds a cycle
// of 4 cycles' latency), as 2 rows of w x 4 rows of x where 8 lanes are one register (floats in
// 32 bytes), else 1 row of w x 4 or 2 rows of x. With fewer rows of x than a block the product
// is bound by reading w, and 2 rows of w at a time measured 12% slower than 1 there (one row,
// a 50304 x 768 head, on a 2-core EPYC VM), so that case takes w one row at a time.
template <class T, int kBytes>
constexpr int kBlockCols = kParts<T, kBytes> == 1 ? 2 : 1;
template <class T, int kBytes>
constexpr int kBlockRows = 8 / (kParts<T, kBytes> * kBlockCols<T, kBytes>);

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 32768;

template <class T>
int64_t total_cost(const SmallProduct<T>* products, int64_t count) {
  int64_t cost = 0;
  for (int64_t i = 0; i < count; ++i) cost += products[i].out_features * products[i].in_features;
  return cost;
}

template <class T>
bool worth_threads(const SmallProduct<T>* products, int64_t count) {
  int64_t work = 0;
  for (int64_t i = 0; i < count; ++i)
    work += products[i].rows * products[i].out_features * products[i].in_features;
  return work > kParallelWork;
}

// The calling thread's share of the products: the cost of one output feature of product i is
// its in_features (times its rows, equal in every call the decoder makes), and each thread takes
// a contiguous share of the total cost.
template <class T, int kBytes>
[[gnu::always_inline]] inline void thread_share(const SmallProduct<T>* products, int64_t count,
                                                int64_t total_cost) {
  constexpr int kCols = kBlockCols<T, kBytes>, kRows = kBlockRows<T, kBytes>;
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
      int64_t n = first;
      if (p.rows >= kRows)
        for (; n + kCols <= last; n += kCols) product_columns<T, kBytes, kCols, kRows>(p, n, a, b);
      for (; n < last; ++n) product_columns<T, kBytes, 1, kRows>(p, n, a, b);
    }
    offset += cost;
  }
}

}  // namespace

// The parallel region is written out in each version: GCC outlines it into a function with the
// target of the function it is written in, and the kernel (always inlined) gets that target.
// The version is chosen at the call, not by an ifunc resolver at load time (when a sanitizer's
// runtime is not initialised yet), so sanitizer builds take it too.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
namespace {
template <class T>
__attribute__((target("arch=x86-64-v3"))) void linear_small_many_v3(
    const SmallProduct<T>* products, int64_t count) {
  const int64_t cost = total_cost(products, count);
#pragma omp parallel if (worth_threads(products, count))
  thread_share<T, 32>(products, count, cost);
}
}  // namespace
#endif

template <class T>
void linear_small_many(const SmallProduct<T>* products, int64_t count) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool v3 = __builtin_cpu_supports("x86-64-v3");
  if (v3) return linear_small_many_v3(products, count);
#endif
  const int64_t cost = total_cost(products, count);
#pragma omp parallel if (worth_threads(products, count))
  thread_share<T, 16>(products, count, cost);
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
