// product_inputs.cuh — the input rows of a decode product as the product reads them, x' =
// x, RMSNorm(x) or silu(gate) * x rounded to the dtype (as the unfused kernels store their
// outputs), staged in shared memory once per block: the matrix-vector kernels linear_small.cu
// and linear_stream.cu then read x' from there instead of forming it in every warp.
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

// x' of every row of product p into xs [m, K] (as T, in shared memory), with the rows' rstd
// first when the product normalises its input. Every thread of the block takes part, in 16-byte
// chunks (K a multiple of the chunk, the pointers 16-byte aligned); the caller synchronises the
// block before reading xs.
//
// It runs on the decode step's critical path (after the wait for the kernel that wrote x), so
// its global loads are few dependent rounds: x (and the gate, and the norm's gains) are all
// requested before any is used, kBatch chunks a thread, and the norm's sum of squares then
// reads x from shared memory. (Before, a warp per row summed from global memory one chunk after
// another, then every thread read x and the gains again: three or more rounds of L2 latency
// where one does.) The arithmetic and its order are unchanged: the same rstd (a warp per row,
// each lane's chunks in turn, then the warp's sum) and the same x', bit for bit.
template <class T>
__device__ void stage_inputs(const SmallProduct& p, T* xs, float* rstd) {
  constexpr int V = 16 / sizeof(T);
  constexpr int kBatch = 2;  // chunks of x a thread requests before using any
  const T* x = static_cast<const T*>(p.x);
  const T* norm = static_cast<const T*>(p.norm);
  const T* gate = static_cast<const T*>(p.gate);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int threads = static_cast<int>(blockDim.x);
  const int64_t chunks = p.k / V;
  // The norm's gain of this thread's first chunk (c = threadIdx.x: all of them for K up to 256
  // chunks), requested with x; the others' are read when they are used.
  Pack<T, V> first_gain;
  if (norm && threadIdx.x < chunks) first_gain = load_pack<V>(norm + threadIdx.x * V);
  // x of every row (gated when the product has a gate): item i is chunk i % chunks of row
  // i / chunks, at xs + i * V. (32-bit indices: at most kMaxSmallRows rows of 12 kB.)
  const int n_chunks = static_cast<int>(chunks), n_items = static_cast<int>(p.m * chunks);
  for (int i0 = threadIdx.x; i0 < n_items; i0 += kBatch * threads) {
    Pack<T, V> xv[kBatch], gv[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * threads;
      if (i < n_items) {
        const int m = i / n_chunks, c = i - m * n_chunks;
        xv[b] = load_pack<V>(x + static_cast<int64_t>(m) * p.k + c * V);
        if (gate && !norm) gv[b] = load_pack<V>(gate + static_cast<int64_t>(m) * p.k + c * V);
      }
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int i = i0 + b * threads;
      if (i >= n_items) continue;
      if (gate && !norm) {
#pragma unroll
        for (int e = 0; e < V; ++e)
          xv[b].v[e] = from_float<T>(gated_value<T>(to_float(xv[b].v[e]), to_float(gv[b].v[e])));
      }
      store_pack(xs + static_cast<int64_t>(i) * V, xv[b]);
    }
  }
  if (!norm) return;
  __syncthreads();
  // rstd: a warp per row, each lane's chunks in turn, then the warp's sum.
  for (int64_t m = warp; m < p.m; m += threads / 32) {
    float sum = 0.f;
    for (int64_t c = lane; c < chunks; c += 32) {
      float v[V];
      load_chunk(xs + m * p.k + c * V, v);
#pragma unroll
      for (int e = 0; e < V; ++e) sum += v[e] * v[e];
    }
    sum = warp_sum(sum);
    if (lane == 0) rstd[m] = rsqrtf(sum / static_cast<float>(p.k) + p.eps);
  }
  __syncthreads();
  // x' = x * rstd * gain, in place: a thread takes chunk c of every row.
  const auto normalise = [&](int64_t c, const Pack<T, V>& gain) {
    for (int64_t m = 0; m < p.m; ++m) {
      float v[V];
      load_chunk(xs + m * p.k + c * V, v);
      Pack<T, V> out;
#pragma unroll
      for (int e = 0; e < V; ++e) out.v[e] = from_float<T>(v[e] * rstd[m] * to_float(gain.v[e]));
      store_pack(xs + m * p.k + c * V, out);
    }
  };
  if (threadIdx.x < chunks) normalise(threadIdx.x, first_gain);
  for (int64_t c = threadIdx.x + threads; c < chunks; c += threads) normalise(c, load_pack<V>(norm + c * V));
}

}  // namespace sf::cuda
