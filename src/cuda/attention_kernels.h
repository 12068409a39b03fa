// attention_kernels.h — tiled (flash-style) scaled dot-product attention on the GPU, forward
// and backward, with the staggered mask and window as part of the tiling (never a dense mask).
//
// Same function as Backend::attention_forward/backward (src/core/backend.h):
//   q [B, Tq, Hq, hd]; k, v [B, Tk, Hkv, hd] (query head h reads kv head h / (Hq / Hkv));
//   query t (position t) sees key j iff j <= t - shift and, when window > 0,
//   j >= t - shift - window + 1. Scores are scaled by 1/sqrt(hd). A query that sees no key
//   gets an exactly zero output row and lse = -inf, and contributes no gradient.
// (mask_shift, mask_window) are AttentionMask{shift, window}; this header stays free of fmt and
// the Backend so nvcc compiles only what the kernels need. Tensors are contiguous, except that
// the backward's dq, dk, dv may have rows further apart (AttentionGradStrides). `dtype` (F32 or BF16) is the element type of q, k, v, out, dout,
// dq, dk, dv; lse is always F32 [B, Hq, Tq]. Arithmetic is fp32 in either case.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/dtype.h"

namespace sf::cuda {

struct AttentionDims {
  int64_t batch = 0, q_len = 0, kv_len = 0, q_heads = 0, kv_heads = 0, head_dim = 0;
};

// out and lse are overwritten.
void attention_forward(DType dtype, const AttentionDims& dims, int mask_shift, int mask_window, const void* q,
                       const void* k, const void* v, void* out, float* lse, cudaStream_t stream);

// Bytes of device scratch attention_backward needs for `dims` (may be 0).
size_t attention_backward_workspace_bytes(DType dtype, const AttentionDims& dims);

// The inverse rotary embedding of dq and dk (Backend::attention_backward_rope): (cos, sin) tables
// from rope_table() (kernels.h) covering positions [0, Tq) and [0, Tk); nullptr leaves that
// gradient as it is. On the tensor-core path dq is rotated while it is converted from the fp32
// accumulator (no extra pass); dk, and both on the general path, in a rope() pass after.
struct AttentionRopeUndo {
  const float* q_table = nullptr;
  const float* k_table = nullptr;
};

// Row strides of the gradient outputs: elements from one (batch, position) row of dq (dk, dv)
// to the next; 0 = heads * head_dim (rows back to back). The model passes column ranges of one
// packed [rows, Q + 2KV] matrix (Backend's row-strided outputs). Strides that are multiples of
// 8 keep the tensor-core path; others take the general kernels.
struct AttentionGradStrides {
  int64_t dq = 0, dk = 0, dv = 0;
};

// dq, dk, dv are overwritten (only their rows' head_dim * heads elements). `workspace` holds at
// least attention_backward_workspace_bytes(dtype, dims) bytes of device memory (contents
// undefined).
void attention_backward(DType dtype, const AttentionDims& dims, int mask_shift, int mask_window,
                        const void* dout, const void* out, const float* lse, const void* q,
                        const void* k, const void* v, void* dq, void* dk, void* dv,
                        void* workspace, cudaStream_t stream, const AttentionRopeUndo& rope = {},
                        const AttentionGradStrides& strides = {});

// BF16 head_dim 64 attention (forward and backward) on a compute capability 9.0 device (H100,
// H200) runs Hopper kernels (wgmma); elsewhere, or when turned off here (tests check the
// mma.sync kernels on the same machine), the mma.sync ones. Active: enabled and the current
// device is 9.0.
void set_wgmma_attention(bool enabled);
bool wgmma_attention_active();

}  // namespace sf::cuda
