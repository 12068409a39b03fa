// attention_forward.cuh — what the two tensor-core attention forward kernels share: their
// parameters, and the entry point of the Hopper (wgmma) kernel in attention_forward_wgmma.cu,
// which the dispatcher in attention_forward.cu prefers on sm_90 devices for head_dim 64.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention_common.cuh"

namespace sf::cuda::attention {

struct ForwardParams : KernelShape {
  const __nv_bfloat16 *q, *k, *v;
  __nv_bfloat16* out;
  float* lse;
  float scale_log2;  // 1/sqrt(hd) * log2(e): scores go straight to the exp2 domain
};

// The Hopper kernel for head_dim 64 (launch only where wgmma_attention_active(),
// attention_kernels.h): same contract as the mma.sync kernel.
void wgmma_forward_hd64(const ForwardParams& p, int64_t batch, cudaStream_t stream);

}  // namespace sf::cuda::attention
