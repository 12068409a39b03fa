// product_inputs.cuh — the input rows of a decode product as the product reads them, x' =
// x, RMSNorm(x) or silu(gate) * x rounded to the dtype (as the unfused kernels store their
// outputs), staged in shared memory once per block: the matrix-vector kernels linear_small.cu
// and linear_stream.cu then read x' from there instead of forming it in every warp.
#pragma once

#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

// x' of every row of product p into xs [m, K] (as T, in shared memory), with the rows' rstd
// first when the product normalises its input (one warp sums a row).
// Every thread of the block takes part, in 16-byte chunks (K a multiple of the chunk, the
// pointers 16-byte aligned); the caller synchronises the block before reading xs.
template <class T>
__device__ void stage_inputs(const SmallProduct& p, T* xs, float* rstd) {
  constexpr int V = 16 / sizeof(T);
  const T* x = static_cast<const T*>(p.x);
  const T* norm = static_cast<const T*>(p.norm);
  const T* gate = static_cast<const T*>(p.gate);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t chunks = p.k / V;
  if (norm) {
    for (int64_t m = warp; m < p.m; m += blockDim.x / 32) {
      float sum = 0.f;
      for (int64_t c = lane; c < chunks; c += 32) {
        float v[V];
        load_chunk(x + m * p.k + c * V, v);
#pragma unroll
        for (int e = 0; e < V; ++e) sum += v[e] * v[e];
      }
      sum = warp_sum(sum);
      if (lane == 0) rstd[m] = rsqrtf(sum / static_cast<float>(p.k) + p.eps);
    }
    __syncthreads();
  }
  for (int64_t i = threadIdx.x; i < p.m * chunks; i += blockDim.x) {
    const int64_t m = i / chunks, c = i % chunks;
    float v[V], t[V];
    load_chunk(x + m * p.k + c * V, v);
    if (norm) load_chunk(norm + c * V, t);
    else if (gate) load_chunk(gate + m * p.k + c * V, t);
    Pack<T, V> out;
#pragma unroll
    for (int e = 0; e < V; ++e) {
      float value = v[e];
      if (norm) value = value * rstd[m] * t[e];
      else if (gate) value = gated_value<T>(value, t[e]);
      out.v[e] = from_float<T>(value);
    }
    store_pack(xs + m * p.k + c * V, out);
  }
}

}  // namespace sf::cuda
