// attention_backward_wgmma.cu — the attention backward kernel for Hopper (sm_90a: warpgroup
// matrix products, wgmma), BF16 with head_dim 64; compiled for sm_90a only (CMakeLists.txt) and
// chosen by the dispatcher in attention_backward.cu when the device is compute capability 9.0.
// Same arithmetic and contract as the mma.sync kernel there (see its header for the formulas):
// dk, dv written once per key, dq added to the fp32 accumulator.
//
// One warpgroup (4 warps) per (block of 64 keys, kv head, batch), three blocks per
// multiprocessor; warp w owns keys 16w .. 16w + 15. K and V stay in shared memory (128-byte
// swizzled rows: the layout wgmma reads directly). The block walks the query heads of the kv
// head's group and, per head, the band of 64-query tiles its keys can see, with Q, dout, lse and
// D double-buffered by cp.async. Per query tile the warpgroup
//   1. forms S^T = K Q^T and dP^T = V dout^T (two groups of four m64n64k16 products, both
//      operands from shared memory), turning S^T into P^T while dP^T is still being computed;
//   2. forms dS^T = P^T * (dP^T - D) in registers, masking only warps whose part of the tile is
//      not entirely visible;
//   3. accumulates dV += P^T dout and dK += dS^T Q with P^T and dS^T as register A operands and
//      dout, Q read transposed from their tiles — the accumulators stay in registers for the
//      whole block and are written once at the end;
//   4. stores dS^T (bf16) to shared memory and forms the tile's dQ = dS K (both operands read
//      transposed), which goes through shared memory to one bulk reduction (the copy engine adds
//      the 16 KiB tile to the fp32 accumulator while the next tile is computed).
// Measured on the H100 (B16 T1024 H12, causal; bench/results/attention-kernels.md): one
// warpgroup a block at three blocks per multiprocessor beat two warpgroups sharing a 128-key
// block (whose barriers keep them in lockstep at one block per multiprocessor), and the bulk
// reduction beat the threads' own 16-byte atomics.
#include <cuda_bf16.h>

#include "cuda/attention_backward.cuh"
#include "cuda/cuda_check.h"
#include "cuda/wgmma.cuh"

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "compile attention_backward_wgmma.cu for sm_90a only (CMakeLists.txt)"
#endif

namespace sf::cuda::attention {

namespace {

using bf16 = __nv_bfloat16;
using wgmma::k_major_rows64;
using wgmma::mn_major_rows64;

constexpr int kHd = 64;
constexpr int kQueries = kBackwardQueries;  // 64
constexpr int kKeys = 64;                   // a block's keys: the M of the products
constexpr int kThreads = 128;               // one warpgroup
constexpr int kBlocksPerSm = 3;

// Shared memory, in bytes from a 1024-byte aligned base (every tile starts on its swizzle
// pattern's boundary): 75 KiB, three blocks fit a multiprocessor.
constexpr int kTileBytes = 64 * kHd * 2;  // 8 KiB: K, V, one buffer of Q or dout, dS^T
constexpr int kQueryTileBytes = kTileBytes;
constexpr int kOffsetK = 0;
constexpr int kOffsetV = kOffsetK + kTileBytes;
constexpr int kOffsetQ = kOffsetV + kTileBytes;          // 2 buffers
constexpr int kOffsetDout = kOffsetQ + 2 * kTileBytes;   // 2 buffers
constexpr int kOffsetDs = kOffsetDout + 2 * kTileBytes;
constexpr int kOffsetStats = kOffsetDs + kTileBytes;     // lse [2][64], D [2][64]
// The tile's dQ, fp32 [64 queries][64 head dims], the bulk reduction's source.
constexpr int kOffsetDq = kOffsetStats + 4 * kQueries * static_cast<int>(sizeof(float));
constexpr int kSmemBytes = kOffsetDq + kQueries * kHd * static_cast<int>(sizeof(float));

__global__ void __launch_bounds__(kThreads, kBlocksPerSm) wgmma_backward_kernel(BackwardParams p) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = smem_raw + wgmma::shared_align_padding(smem_raw);
  bf16* sK = reinterpret_cast<bf16*>(smem + kOffsetK);
  bf16* sV = reinterpret_cast<bf16*>(smem + kOffsetV);
  bf16* sQ = reinterpret_cast<bf16*>(smem + kOffsetQ);
  bf16* sdO = reinterpret_cast<bf16*>(smem + kOffsetDout);
  bf16* sdS = reinterpret_cast<bf16*>(smem + kOffsetDs);  // [kKeys][kQueries]: dS^T
  float* sLse = reinterpret_cast<float*>(smem + kOffsetStats);  // [2][kQueries]
  float* sD = sLse + 2 * kQueries;                             // [2][kQueries]
  float* sDq = reinterpret_cast<float*>(smem + kOffsetDq);      // [kQueries][kHd]

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;
  // The key block is the fastest-varying grid index: blocks running at the same time then
  // share their (batch, kv head), so the dq accumulator rows they add to and the Q, dout tiles
  // they read stay in L2 (with the key block slowest every head's accumulator was live at once,
  // 50 MB at B16 T1024 H12, and the additions went to DRAM).
  const int kvh = blockIdx.y, b = blockIdx.z;
  const int k0 = blockIdx.x * kKeys;
  const int k_last = min(k0 + kKeys, p.kv_len) - 1;
  const int warp_k0 = k0 + warp * 16, warp_k1 = warp_k0 + 15;
  // The band of query tiles the block's keys see; every tile in it has a visible pair.
  const auto band = p.mask.query_tiles(k0, k_last, p.q_len, kQueries);
  const int tile_first = band.first, tile_last = band.last;
  const int iterations = p.group * band.count();

  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * kHd;
  const int64_t kv_first = (static_cast<int64_t>(b) * p.kv_len + k0) * kv_stride + kvh * kHd;

  float dk_acc[32], dv_acc[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) dk_acc[i] = dv_acc[i] = 0.0f;

  if (iterations > 0) {
    load_tile_async<kHd, kKeys, kThreads>(sK, p.k + kv_first, kv_stride, p.kv_len - k0);
    load_tile_async<kHd, kKeys, kThreads>(sV, p.v + kv_first, kv_stride, p.kv_len - k0);
    load_query_tile<kHd, kThreads>(p, b, kvh * p.group, tile_first * kQueries, sQ, sdO, sLse, sD);
    cp_async_commit();
  }
  const uint32_t k_tile = smem_address(sK), v_tile = smem_address(sV);
  const uint32_t ds_tile = smem_address(sdS);

  int h = kvh * p.group, tile = tile_first;  // the tile of this iteration
  for (int it = 0; it < iterations; ++it) {
    const int buffer = it & 1;
    const int q0 = tile * kQueries;
    cp_async_wait_all();
    wgmma::fence_shared_for_async();
    if (threadIdx.x == 0) bulk::wait_reads();  // the last tile's dQ has left sDq
    __syncthreads();  // tile `it` has landed; the products that read the other buffer, dS^T
                      // and sDq are done
    const int next_h = tile < tile_last ? h : h + 1;
    const int next_tile = tile < tile_last ? tile + 1 : tile_first;
    if (it + 1 < iterations) {
      load_query_tile<kHd, kThreads>(p, b, next_h, next_tile * kQueries,
                                     sQ + (buffer ^ 1) * kQueries * kHd,
                                     sdO + (buffer ^ 1) * kQueries * kHd,
                                     sLse + (buffer ^ 1) * kQueries, sD + (buffer ^ 1) * kQueries);
      cp_async_commit();
    }
    const uint32_t q_tile = smem_address(sQ) + buffer * kQueryTileBytes;
    const uint32_t dout_tile = smem_address(sdO) + buffer * kQueryTileBytes;
    const float* tLse = sLse + buffer * kQueries;
    const float* tD = sD + buffer * kQueries;

    float st[32], dpt[32];
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kHd / 16; ++kk)
      wgmma::mma_m64n64k16_ss<0, 0>(st, k_major_rows64(k_tile, kk),
                                    k_major_rows64(q_tile, kk), kk > 0);
    wgmma::commit();
#pragma unroll
    for (int kk = 0; kk < kHd / 16; ++kk)
      wgmma::mma_m64n64k16_ss<0, 0>(dpt, k_major_rows64(v_tile, kk),
                                    k_major_rows64(dout_tile, kk), kk > 0);
    wgmma::commit();

    // P^T while dP^T is computed. Masked entries are set to 0 outright: their lse may be -inf.
    const bool full = p.mask.all_visible(q0, q0 + kQueries - 1, warp_k0, warp_k1) &&
                      q0 + kQueries <= p.q_len && warp_k1 < p.kv_len;
    wgmma::wait<1>();
    wgmma::pin(st);
    if (full) {
#pragma unroll
      for (int i = 0; i < 32; ++i)
        st[i] = fast_exp2(fmaf(st[i], p.scale_log2, -tLse[8 * (i / 4) + 2 * c + i % 2] * kLog2e));
    } else {
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const int t = q0 + 8 * (i / 4) + 2 * c + (i % 2), j = warp_k0 + g + 8 * ((i % 4) / 2);
        const bool visible = t < p.q_len && j < p.kv_len && p.mask.visible(t, j);
        const float lse2 = tLse[8 * (i / 4) + 2 * c + i % 2] * kLog2e;
        st[i] = visible ? fast_exp2(fmaf(st[i], p.scale_log2, -lse2)) : 0.0f;
      }
    }
    wgmma::wait<0>();
    wgmma::pin(dpt);
    float delta[16];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) delta[2 * j + e] = tD[8 * j + 2 * c + e];
#pragma unroll
    for (int i = 0; i < 32; ++i)  // 0 where masked (every input is finite)
      dpt[i] = st[i] * (dpt[i] - delta[2 * (i / 4) + i % 2]);
    // P^T and dS^T as bf16 A fragments, a k-step (16 queries) each: register r of step kk
    // holds key row g + 8 (r % 2), queries 16 kk + 8 (r / 2) + 2c, + 1.
    uint32_t p_frag[4][4], ds_frag[4][4];
    wgmma::a_fragments(p_frag, st);
    wgmma::a_fragments(ds_frag, dpt);

    // dV += P^T dout, dK += dS^T Q (contraction over the tile's queries).
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kQueries / 16; ++kk)
      wgmma::mma_m64n64k16_rs<1>(dv_acc, p_frag[kk], mn_major_rows64(dout_tile, kk), true);
#pragma unroll
    for (int kk = 0; kk < kQueries / 16; ++kk)
      wgmma::mma_m64n64k16_rs<1>(dk_acc, ds_frag[kk], mn_major_rows64(q_tile, kk), true);
    wgmma::commit();

    // dS^T (bf16) to shared memory for the dQ product, while dV and dK are computed.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int r = 0; r < 4; ++r) {
        const int key = warp * 16 + g + 8 * (r % 2), query = 16 * kk + 8 * (r / 2) + 2 * c;
        *reinterpret_cast<uint32_t*>(sdS + swizzled<kQueries>(key, query)) = ds_frag[kk][r];
      }
    wgmma::fence_shared_for_async();
    __syncthreads();  // dS^T is in place
    // dV and dK complete before dQ starts: their register A fragments are free from here, which
    // keeps the register count low enough for three blocks per multiprocessor.
    wgmma::wait<0>();
    wgmma::pin(dv_acc);
    wgmma::pin(dk_acc);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      wgmma::pin(p_frag[kk]);
      wgmma::pin(ds_frag[kk]);
    }

    // dQ rows q0 .. q0 + 63 = dS K over the block's keys.
    float dq_acc[32];
    wgmma::fence();
#pragma unroll
    for (int kk = 0; kk < kKeys / 16; ++kk)
      wgmma::mma_m64n64k16_ss<1, 1>(dq_acc, mn_major_rows64(ds_tile, kk),
                                    mn_major_rows64(k_tile, kk), kk > 0);
    wgmma::commit();
    wgmma::wait<0>();
    wgmma::pin(dq_acc);
    // The tile's dQ to shared memory, then added to the fp32 accumulator ([B, Hq, Tq, hd]: the
    // tile's rows are contiguous) by one bulk reduction that runs while the next tile is
    // computed.
#pragma unroll
    for (int i = 0; i < 32; i += 2) {
      const int row = warp * 16 + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * c;
      *reinterpret_cast<float2*>(sDq + row * kHd + col) = make_float2(dq_acc[i], dq_acc[i + 1]);
    }
    wgmma::fence_shared_for_async();
    __syncthreads();
    if (threadIdx.x == 0) {
      const int rows = min(kQueries, p.q_len - q0);
      float* dst = p.dq_accum + ((static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + q0) * kHd;
      bulk::reduce_add_f32(dst, smem_address(sDq),
                           static_cast<uint32_t>(rows * kHd * sizeof(float)));
    }
    h = next_h;
    tile = next_tile;
  }
  if (threadIdx.x == 0) bulk::wait_all();

  // dk, dv rows of this warp's keys: written once, zero where no query sees the key.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = warp_k0 + g + 8 * r;
    if (j >= p.kv_len) continue;
    const int64_t key_row = static_cast<int64_t>(b) * p.kv_len + j;
    __nv_bfloat16* dk_row = p.dk + key_row * p.dk_stride + kvh * kHd;
    __nv_bfloat16* dv_row = p.dv + key_row * p.dv_stride + kvh * kHd;
#pragma unroll
    for (int n = 0; n < kHd / 8; ++n) {
      *reinterpret_cast<uint32_t*>(dk_row + n * 8 + 2 * c) =
          pack_bf16(dk_acc[4 * n + 2 * r] * p.scale, dk_acc[4 * n + 2 * r + 1] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_row + n * 8 + 2 * c) =
          pack_bf16(dv_acc[4 * n + 2 * r], dv_acc[4 * n + 2 * r + 1]);
    }
  }
}

}  // namespace

void wgmma_backward_hd64(const BackwardParams& p, int64_t batch, cudaStream_t stream) {
  constexpr int kBytes = kSmemBytes + wgmma::kSharedAlign;  // room to align the base
  SF_CUDA_CHECK(cudaFuncSetAttribute(wgmma_backward_kernel,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize, kBytes));
  const dim3 grid(ceil_div(p.kv_len, kKeys), static_cast<unsigned>(p.kv_heads),
                  static_cast<unsigned>(batch));
  wgmma_backward_kernel<<<grid, kThreads, kBytes, stream>>>(p);
  SF_CUDA_LAUNCH_CHECK("wgmma_backward_kernel");
}

}  // namespace sf::cuda::attention
