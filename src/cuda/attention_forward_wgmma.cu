// attention_forward_wgmma.cu — the attention forward kernel for Hopper (sm_90a: warpgroup matrix
// products, wgmma), BF16 with head_dim 64; compiled for sm_90a only (CMakeLists.txt) and chosen
// by the dispatcher in attention_forward.cu when the device is compute capability 9.0. Same
// arithmetic and contract as the mma.sync kernel there (see its header): online softmax in the
// log2 domain, out in BF16, lse in fp32; a row that sees no key gets 0 and lse = -inf.
//
// One warpgroup (4 warps) per (block of 64 queries, head, batch); warp w owns queries
// 16w .. 16w + 15. The block's Q tile stays in shared memory; it walks the band of 64-key tiles
// its queries can see with K and V double-buffered by cp.async (128-byte swizzled rows: the
// layout wgmma reads directly). Per key tile: S = Q K^T (four m64n64k16 products, both operands
// from shared memory), masking only warps whose rows do not see the whole tile, the online
// softmax in registers, and O += P V with P as the register A operand and V read transposed.
// The query block is the fastest grid index and runs backwards within a head: blocks that run
// together share their head's K and V in L2, and the longest (last) query blocks start first.
#include <cuda_bf16.h>

#include <cmath>

#include "cuda/attention_common.cuh"
#include "cuda/attention_forward.cuh"
#include "cuda/cuda_check.h"
#include "cuda/wgmma.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "compile attention_forward_wgmma.cu for sm_90a only (CMakeLists.txt)"
#endif

namespace sf::cuda::attention {

namespace {

using bf16 = __nv_bfloat16;
using wgmma::k_major_rows64;
using wgmma::mn_major_rows64;

constexpr int kHd = 64;
constexpr int kRows = 64;   // queries a block: the M of the products
constexpr int kCols = 64;   // keys a tile
constexpr int kThreads = 128;  // one warpgroup
constexpr int kBlocksPerSm = 4;
constexpr int kTileBytes = 64 * kHd * 2;  // 8 KiB: Q, one buffer of K or V
constexpr int kOffsetQ = 0;
constexpr int kOffsetK = kOffsetQ + kTileBytes;  // 2 buffers
constexpr int kOffsetV = kOffsetK + 2 * kTileBytes;  // 2 buffers
constexpr int kSmemBytes = kOffsetV + 2 * kTileBytes;

__global__ void __launch_bounds__(kThreads, kBlocksPerSm) wgmma_forward_kernel(ForwardParams p) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + wgmma::shared_align_padding(smem_raw);
  bf16* sQ = reinterpret_cast<bf16*>(smem + kOffsetQ);
  bf16* sK = reinterpret_cast<bf16*>(smem + kOffsetK);
  bf16* sV = reinterpret_cast<bf16*>(smem + kOffsetV);

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  const int q_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, b = blockIdx.z, kvh = h / p.group;
  const int q0 = q_block * kRows;
  const int64_t q_stride = static_cast<int64_t>(p.q_heads) * kHd;
  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * kHd;
  const bf16* k_src = p.k + static_cast<int64_t>(b) * p.kv_len * kv_stride + kvh * kHd;
  const bf16* v_src = p.v + static_cast<int64_t>(b) * p.kv_len * kv_stride + kvh * kHd;

  const int q_last = min(q0 + kRows, p.q_len) - 1;
  const auto [tile_first, tile_last] = p.mask.key_tiles(q0, q_last, p.kv_len, kCols);
  const int warp_q0 = q0 + warp * 16, warp_q1 = warp_q0 + 15;

  float o[32];
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain, rows g and g + 8
  float row_sum[2] = {0.0f, 0.0f};            // this thread's partial sums
#pragma unroll
  for (int i = 0; i < 32; ++i) o[i] = 0.0f;

  if (tile_first <= tile_last) {
    load_tile_async<kHd, kRows, kThreads>(
        sQ, p.q + (static_cast<int64_t>(b) * p.q_len + q0) * q_stride + h * kHd, q_stride,
        p.q_len - q0);
    const int k0 = tile_first * kCols;
    load_tile_async<kHd, kCols, kThreads>(sK, k_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
    load_tile_async<kHd, kCols, kThreads>(sV, v_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
    cp_async_commit();
  }
  const uint32_t q_tile = smem_address(sQ);

  for (int tile = tile_first; tile <= tile_last; ++tile) {
    const int buffer = (tile - tile_first) & 1;
    cp_async_wait_all();
    wgmma::fence_shared_for_async();
    __syncthreads();  // this tile has landed; the products that read the other buffer are done
    if (tile < tile_last) {
      const int k0 = (tile + 1) * kCols;
      load_tile_async<kHd, kCols, kThreads>(sK + (buffer ^ 1) * kCols * kHd,
                                            k_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
      load_tile_async<kHd, kCols, kThreads>(sV + (buffer ^ 1) * kCols * kHd,
                                            v_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
      cp_async_commit();
    }
    const int k0 = tile * kCols;
    const uint32_t k_tile = smem_address(sK) + buffer * kTileBytes;
    const uint32_t v_tile = smem_address(sV) + buffer * kTileBytes;

    // S = Q K^T
    float s[32];
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kHd / 16; ++kk)
      wgmma::mma_m64n64k16_ss<0, 0>(s, k_major_rows64(q_tile, kk),
                                    k_major_rows64(k_tile, kk), kk > 0);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::pin(s);

    // Mask only where this warp's rows do not see the whole tile.
    const bool full =
        p.mask.all_visible(warp_q0, warp_q1, k0, k0 + kCols - 1) && k0 + kCols <= p.kv_len;
    if (!full) {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const int t = warp_q0 + g + 8 * ((i % 4) / 2), j = k0 + 8 * (i / 4) + 2 * c + (i % 2);
        if (j >= p.kv_len || !p.mask.visible(t, j)) s[i] = -INFINITY;
      }
    }

    // Online softmax, log2 domain. A row that has seen nothing yet keeps max -inf; it is
    // exponentiated against 0 instead so that exp2(-inf - -inf) never makes a NaN.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int j = 0; j < 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * r], s[4 * j + 2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float new_max = fmaxf(row_max[r], mx * p.scale_log2);
      const float base = new_max == -INFINITY ? 0.0f : new_max;
      const float alpha = fast_exp2(row_max[r] - base);
      row_max[r] = new_max;
      float sum = 0.0f;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          float& x = s[4 * j + 2 * r + e];
          x = fast_exp2(fmaf(x, p.scale_log2, -base));
          sum += x;
        }
      row_sum[r] = row_sum[r] * alpha + sum;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        o[4 * j + 2 * r] *= alpha;
        o[4 * j + 2 * r + 1] *= alpha;
      }
    }

    // O += P V: P as bf16 A fragments (k-step kk = keys 16 kk .. + 15), V read transposed.
    uint32_t p_frag[4][4];
    wgmma::a_fragments(p_frag, s);
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kCols / 16; ++kk)
      wgmma::mma_m64n64k16_rs<1>(o, p_frag[kk], mn_major_rows64(v_tile, kk), true);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::pin(o);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) wgmma::pin(p_frag[kk]);
  }

  // Epilogue: normalise, write bf16 rows and lse.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const int t = warp_q0 + g + 8 * r;
    if (t >= p.q_len) continue;
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    bf16* dst = p.out + (static_cast<int64_t>(b) * p.q_len + t) * q_stride + h * kHd;
#pragma unroll
    for (int j = 0; j < 8; ++j)
      *reinterpret_cast<uint32_t*>(dst + 8 * j + 2 * c) =
          pack_bf16(o[4 * j + 2 * r] * inv, o[4 * j + 2 * r + 1] * inv);
    if (c == 0)
      p.lse[(static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + t] =
          sum > 0.0f ? row_max[r] * kLn2 + logf(sum) : -INFINITY;
  }
}

}  // namespace

void wgmma_forward_hd64(const ForwardParams& p, int64_t batch, cudaStream_t stream) {
  constexpr int kBytes = kSmemBytes + wgmma::kSharedAlign;  // room to align the base
  SF_CUDA_CHECK(cudaFuncSetAttribute(wgmma_forward_kernel,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  const dim3 grid(ceil_div(p.q_len, kRows), static_cast<unsigned>(p.q_heads),
                  static_cast<unsigned>(batch));
  wgmma_forward_kernel<<<grid, kThreads, kBytes, stream>>>(p);
  SF_CUDA_LAUNCH_CHECK("wgmma_forward_kernel");
}

}  // namespace sf::cuda::attention
