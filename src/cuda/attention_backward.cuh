// attention_backward.cuh — what the two tensor-core attention backward kernels share: their
// parameters, the query-tile loader (Q, dout, lse, D by cp.async), and the entry points of the
// Hopper (wgmma) kernel in attention_backward_wgmma.cu, which the dispatcher in
// attention_backward.cu prefers on sm_90 devices for head_dim 64.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_common.cuh"

namespace sf::cuda::attention {

constexpr int kBackwardQueries = 64;  // queries per tile, both kernels

struct BackwardParams : KernelShape {
  const __nv_bfloat16 *q, *k, *v, *dout;
  const float *lse, *delta;
  float* dq_accum;  // [B, Hq, Tq, hd] fp32, zeroed before the kernel
  __nv_bfloat16 *dk, *dv;
  int64_t dk_stride, dv_stride;  // elements from one (batch, key) row of dk (dv) to the next
  float scale, scale_log2;
};

// Issues the cp.async copies of one query tile: Q and dout rows [q0, q0 + kBackwardQueries) of
// head h into swizzled tiles, and their lse and D entries (rows past the sequence zero-filled).
template <int HD, int THREADS>
__device__ __forceinline__ void load_query_tile(const BackwardParams& p, int b, int h, int q0,
                                                __nv_bfloat16* sQ, __nv_bfloat16* sdO,
                                                float* sLse, float* sD) {
  constexpr int kQueries = kBackwardQueries;
  const int64_t q_stride = static_cast<int64_t>(p.q_heads) * HD;
  const int64_t first_row = (static_cast<int64_t>(b) * p.q_len + q0) * q_stride + h * HD;
  load_tile_async<HD, kQueries, THREADS>(sQ, p.q + first_row, q_stride, p.q_len - q0);
  load_tile_async<HD, kQueries, THREADS>(sdO, p.dout + first_row, q_stride, p.q_len - q0);
  if (threadIdx.x >= 2 * kQueries) return;
  const int i = threadIdx.x % kQueries;
  const bool valid = q0 + i < p.q_len;
  const int64_t stat = (static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + (valid ? q0 + i : 0);
  const float* src = threadIdx.x < kQueries ? p.lse + stat : p.delta + stat;
  float* dst = threadIdx.x < kQueries ? sLse + i : sD + i;
  cp_async_4(smem_address(dst), src, valid ? 4 : 0);
}

// The Hopper kernel for head_dim 64 (attention_backward_wgmma.cu; launch only where
// wgmma_attention_active(), attention_kernels.h): same contract as the mma.sync
// kernel — dk, dv written, dq added to p.dq_accum.
void wgmma_backward_hd64(const BackwardParams& p, int64_t batch, cudaStream_t stream);

}  // namespace sf::cuda::attention
