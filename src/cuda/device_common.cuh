// device_common.cuh — device helpers shared by the backend's kernels: element loads/stores as
// fp32, warp and block sums, and the F32/BF16 dispatch of launchers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"

namespace sf::cuda {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// The SwiGLU's sigmoid: one definition for swiglu.cu and the gate fused into linear_small.cu,
// which must round alike.
__device__ __forceinline__ float sigmoid(float g) { return 1.f / (1.f + __expf(-g)); }

// x' = silu(g) * x rounded to T, as swiglu_forward stores it: the gate the decode products
// fuse into their input (linear_small.cu, linear_stream.cu).
template <class T>
__device__ __forceinline__ float gated_value(float x, float g) {
  return to_float(from_float<T>(g * sigmoid(g) * x));
}

__device__ __forceinline__ float warp_sum(float x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ double warp_sum(double x) {
  for (int offset = 16; offset > 0; offset >>= 1) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
  for (int offset = 16; offset > 0; offset >>= 1)
    x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

// Sum over a block of up to 1024 threads; every thread gets the total. `scratch` holds 32
// values; the leading __syncthreads makes back-to-back calls with one scratch safe.
template <class T> __device__ __forceinline__ T block_sum(T x, T* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = warp_sum(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  T total = lane < warps ? scratch[lane] : T(0);
  return warp_sum(total);
}

__device__ __forceinline__ float block_max(float x, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  x = warp_max(x);
  __syncthreads();
  if (lane == 0) scratch[warp] = x;
  __syncthreads();
  const int warps = (blockDim.x + 31) >> 5;
  float best = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(best);
}

// N consecutive elements moved as one aligned vector access (16 bytes for 8 BF16, two for 8
// F32): the memory-bound kernels use it where the row length and the pointers allow.
template <class T, int N> struct alignas(sizeof(T) * N) Pack {
  T v[N];
};
template <int N, class T> __device__ __forceinline__ Pack<T, N> load_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <int N, class T> __device__ __forceinline__ void store_pack(T* p, const Pack<T, N>& x) {
  *reinterpret_cast<Pack<T, N>*>(p) = x;
}
// The 16 bytes at `p` (4 F32 or 8 BF16 values, 16-byte aligned) as fp32 values.
__device__ __forceinline__ void load_chunk(const float* p, float* v) {
  const float4 q = *reinterpret_cast<const float4*>(p);
  v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void load_chunk(const __nv_bfloat16* p, float* v) {
  const uint4 q = *reinterpret_cast<const uint4*>(p);
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    v[2 * i] = f.x;
    v[2 * i + 1] = f.y;
  }
}
// True when every pointer is aligned to `bytes` (e.g. sizeof(Pack<T, N>)); host or device.
template <class... P>
__host__ __device__ __forceinline__ bool all_aligned(size_t bytes, const P*... pointers) {
  return ((reinterpret_cast<uintptr_t>(pointers) % bytes == 0) && ...);
}

// Calls fn(k, begin, end) for each chunk this block takes in a multi-tensor launch (kernels.h,
// ManyLayout): elements [begin, end) of tensor k. Blocks take the chunks in a grid-stride loop
// (the same chunks for every thread of a block, so fn may synchronise the block); a chunk lies
// in one tensor, found by binary search in chunk_first.
template <class Fn>
__device__ __forceinline__ void for_each_many_chunk(const ManyLayout& l, Fn&& fn) {
  for (int64_t c = blockIdx.x; c < l.chunks; c += gridDim.x) {
    int k = 0, hi = l.count - 1;  // the last tensor whose first chunk is <= c (skips empty ones)
    while (k < hi) {
      const int mid = (k + hi + 1) / 2;
      if (l.chunk_first[mid] <= c) k = mid;
      else hi = mid - 1;
    }
    const int64_t begin = (c - l.chunk_first[k]) * kManyChunk;
    fn(k, begin, min(l.sizes[k], begin + kManyChunk));
  }
}

// Calls fn(first, count) over elements [begin, end) of a chunk, shared by the block's threads,
// in pieces of 4 (count 4, where vector_ok; begin is a multiple of 4) or 1 (the last
// (end - begin) % 4, all on thread 0).
template <class Fn>
__device__ __forceinline__ void for_each_chunk_piece(int64_t begin, int64_t end, bool vector_ok,
                                                     Fn&& fn) {
  if (!vector_ok) {
    for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) fn(i, 1);
    return;
  }
  const int64_t vector_end = end - (end - begin) % 4;
  for (int64_t i = begin + 4 * threadIdx.x; i < vector_end; i += 4 * blockDim.x) fn(i, 4);
  if (threadIdx.x == 0)
    for (int64_t i = vector_end; i < end; ++i) fn(i, 1);
}

// Blocks of a multi-tensor launch: enough 256-thread blocks to fill every multiprocessor (8
// each on 132), each taking several chunks.
inline unsigned many_blocks(int64_t chunks) {
  return static_cast<unsigned>(chunks < 132 * 8 ? (chunks < 1 ? 1 : chunks) : 132 * 8);
}

inline unsigned blocks_for(int64_t n, int threads, int64_t max_blocks = 132 * 16) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned>(blocks < max_blocks ? blocks : max_blocks);
}

}  // namespace sf::cuda

// SF_DISPATCH_FLOAT(dtype, T, body): runs `body` with T = float or __nv_bfloat16.
#define SF_DISPATCH_FLOAT(dtype, T, ...)          \
  do {                                            \
    if ((dtype) == ::sf::DType::bf16) {           \
      using T = __nv_bfloat16;                    \
      __VA_ARGS__;                                \
    } else {                                      \
      using T = float;                            \
      __VA_ARGS__;                                \
    }                                             \
  } while (0)
