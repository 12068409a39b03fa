// attention_forward.cu — the attention forward pass on the GPU: the mma.sync tensor-core
// (flash-style) kernel for BF16 with head_dim 64 or 128, and the dispatcher: BF16 head_dim 64 on
// compute capability 9.0 goes to the Hopper kernel (attention_forward_wgmma.cu), every case
// without tensor cores to the general SIMT path (attention_generic.cu).
//
// The tensor-core kernel, FlashAttention-2 style: one block of 4 warps per (head, batch, query
// block), the query block the slowest grid index and run backwards so that the blocks with the
// most keys under a causal mask start first. The block's query tile Q (kRows = 64 * MT rows) is
// loaded once and kept in registers as mma A fragments, each warp owning 16 * MT query rows. The
// block walks the band of key tiles (kCols = 64 keys) that its queries can see —
// [first_key(q0), last_key(q0 + kRows - 1)] — with K and V double-buffered in shared memory by
// cp.async (16-byte chunks XOR-swizzled, read with ldmatrix). Per key tile a warp forms
// S = Q K^T with mma.sync m16n8k16 (fp32 accumulators), masks it only when the tile is not
// entirely visible to its rows, skips it when none of it is, updates the running row max and sum
// (online softmax in the log2 domain, ex2.approx), and accumulates O += P V with P re-used
// straight from the S accumulators as bf16 A fragments. Rows that end with no visible key write
// 0 and lse = -inf.
//
// head_dim 64: each warp owns two 16-row m-tiles (MT = 2, 128 queries a block), so that every K
// or V fragment read from shared memory feeds two mma instead of one (MT = 1 measured 10% slower
// on causal masks); with a short window (<= 128 keys) MT = 1 wins instead (fewer partly masked
// tiles, three blocks per multiprocessor). head_dim 128 uses MT = 1 to stay within the register
// file.
#include <cmath>

#include "cuda/attention_common.cuh"
#include "cuda/attention_forward.cuh"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_check.h"

namespace sf::cuda {

namespace {

using attention::aligned16;
using attention::MaskGeometry;
using bf16 = __nv_bfloat16;

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kCols = 64;  // keys per tile

using attention::ForwardParams;

template <int HD, int MT>
struct ForwardTiles {
  static constexpr int kRows = 16 * MT * kWarps;  // queries per block
  static constexpr size_t kSmemBytes = sizeof(bf16) * (kRows + 4 * kCols) * HD;  // Q, 2x K, 2x V
};

// BLOCKS: resident blocks per multiprocessor that the register budget is sized for.
template <int HD, int MT, int BLOCKS>
__global__ void __launch_bounds__(kThreads, BLOCKS) flash_forward_kernel(ForwardParams p) {
  using Tiles = ForwardTiles<HD, MT>;
  constexpr int kRows = Tiles::kRows, kWarpRows = 16 * MT;
  constexpr int kSTiles = kCols / 8;  // n-tiles of S
  constexpr int kOTiles = HD / 8;     // n-tiles of O
  constexpr int kKSteps = HD / 16;    // k-steps of Q K^T
  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);
  bf16* sK = sQ + kRows * HD;  // [2][kCols][HD]
  bf16* sV = sK + 2 * kCols * HD;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, c = lane % 4;  // accumulator row group and column pair
  // The query block is the slowest-varying grid index and runs backwards, so blocks start in
  // order of decreasing work under a causal mask (longest first: a short tail).
  const int q_block = gridDim.z - 1 - blockIdx.z;
  const int h = blockIdx.x, b = blockIdx.y, kvh = h / p.group;
  const int q0 = q_block * kRows;
  const int64_t q_stride = static_cast<int64_t>(p.q_heads) * HD;
  const int64_t kv_stride = static_cast<int64_t>(p.kv_heads) * HD;
  const bf16* q_src = p.q + (static_cast<int64_t>(b) * p.q_len + q0) * q_stride + h * HD;
  const bf16* k_src = p.k + static_cast<int64_t>(b) * p.kv_len * kv_stride + kvh * HD;
  const bf16* v_src = p.v + static_cast<int64_t>(b) * p.kv_len * kv_stride + kvh * HD;

  const int q_last = min(q0 + kRows, p.q_len) - 1;
  const auto [tile_first, tile_last] = p.mask.key_tiles(q0, q_last, p.kv_len, kCols);

  const int warp_q0 = q0 + warp * kWarpRows, warp_q1 = warp_q0 + kWarpRows - 1;

  float o[MT][kOTiles][4];
  float row_max[MT][2], row_sum[MT][2];  // log2-domain running max, this thread's partial sums
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int n = 0; n < kOTiles; ++n) o[m][n][0] = o[m][n][1] = o[m][n][2] = o[m][n][3] = 0.0f;
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.0f;
  }

  if (tile_first <= tile_last) {
    attention::load_tile_async<HD, kRows, kThreads>(sQ, q_src, q_stride, p.q_len - q0);
    {
      const int k0 = tile_first * kCols;
      attention::load_tile_async<HD, kCols, kThreads>(sK, k_src + k0 * kv_stride, kv_stride,
                                                      p.kv_len - k0);
      attention::load_tile_async<HD, kCols, kThreads>(sV, v_src + k0 * kv_stride, kv_stride,
                                                      p.kv_len - k0);
    }
    attention::cp_async_commit();
  }

  uint32_t qf[MT][kKSteps][4];
  for (int tile = tile_first; tile <= tile_last; ++tile) {
    const int buffer = (tile - tile_first) & 1;
    attention::cp_async_wait_all();
    __syncthreads();  // this tile has landed; every warp is done with the other buffer
    if (tile == tile_first) {
#pragma unroll
      for (int m = 0; m < MT; ++m) {
#pragma unroll
        for (int kk = 0; kk < kKSteps; ++kk) {
          const int row = warp * kWarpRows + m * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
          const int col = kk * 16 + 8 * (lane / 16);
          attention::ldmatrix_x4(qf[m][kk],
                                 attention::smem_address(sQ + attention::swizzled<HD>(row, col)));
        }
      }
    }
    if (tile < tile_last) {
      const int k0 = (tile + 1) * kCols;
      attention::load_tile_async<HD, kCols, kThreads>(
          sK + (buffer ^ 1) * kCols * HD, k_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
      attention::load_tile_async<HD, kCols, kThreads>(
          sV + (buffer ^ 1) * kCols * HD, v_src + k0 * kv_stride, kv_stride, p.kv_len - k0);
      attention::cp_async_commit();
    }

    const int k0 = tile * kCols;
    if (p.mask.none_visible(warp_q0, warp_q1, k0, k0 + kCols - 1)) continue;
    const bf16* tK = sK + buffer * kCols * HD;
    const bf16* tV = sV + buffer * kCols * HD;

    // S = Q K^T
    float s[MT][kSTiles][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < kSTiles; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
      for (int np = 0; np < kSTiles / 2; ++np) {
        uint32_t kb[4];
        const int key = np * 16 + (lane % 8) + 8 * (lane / 16);
        const int col = kk * 16 + 8 * ((lane / 8) % 2);
        attention::ldmatrix_x4(kb, attention::smem_address(tK + attention::swizzled<HD>(key, col)));
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          attention::mma_bf16(s[m][2 * np], qf[m][kk], kb[0], kb[1]);
          attention::mma_bf16(s[m][2 * np + 1], qf[m][kk], kb[2], kb[3]);
        }
      }
    }

    // Mask the tile only where it is not entirely visible to this warp's rows.
    const bool full =
        p.mask.all_visible(warp_q0, warp_q1, k0, k0 + kCols - 1) && k0 + kCols <= p.kv_len;
    if (!full) {
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < kSTiles; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int t = warp_q0 + m * 16 + g + 8 * (e / 2);
            const int j = k0 + n * 8 + 2 * c + (e % 2);
            if (j >= p.kv_len || !p.mask.visible(t, j)) s[m][n][e] = -INFINITY;
          }
    }

    // Online softmax, log2 domain. A row that has seen nothing yet keeps max -inf; it is
    // exponentiated against 0 instead so that exp2(-inf - -inf) never makes a NaN.
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < kSTiles; ++n) mx = fmaxf(mx, fmaxf(s[m][n][2 * r], s[m][n][2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float new_max = fmaxf(row_max[m][r], mx * p.scale_log2);
        const float base = new_max == -INFINITY ? 0.0f : new_max;
        const float alpha = attention::fast_exp2(row_max[m][r] - base);
        row_max[m][r] = new_max;
        float sum = 0.0f;
#pragma unroll
        for (int n = 0; n < kSTiles; ++n) {
#pragma unroll
          for (int e = 2 * r; e < 2 * r + 2; ++e) {
            s[m][n][e] = attention::fast_exp2(fmaf(s[m][n][e], p.scale_log2, -base));
            sum += s[m][n][e];
          }
        }
        row_sum[m][r] = row_sum[m][r] * alpha + sum;
#pragma unroll
        for (int n = 0; n < kOTiles; ++n) {
          o[m][n][2 * r] *= alpha;
          o[m][n][2 * r + 1] *= alpha;
        }
      }
    }

    // O += P V
#pragma unroll
    for (int kk = 0; kk < kCols / 16; ++kk) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
        attention::accumulators_to_a(pa[m], s[m][2 * kk], s[m][2 * kk + 1]);
#pragma unroll
      for (int dp = 0; dp < HD / 16; ++dp) {
        uint32_t vb[4];
        const int key = kk * 16 + (lane % 8) + 8 * ((lane / 8) % 2);
        const int col = dp * 16 + 8 * (lane / 16);
        attention::ldmatrix_x4_trans(
            vb, attention::smem_address(tV + attention::swizzled<HD>(key, col)));
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          attention::mma_bf16(o[m][2 * dp], pa[m], vb[0], vb[1]);
          attention::mma_bf16(o[m][2 * dp + 1], pa[m], vb[2], vb[3]);
        }
      }
    }
  }

  // Epilogue: normalise, write bf16 rows and lse.
#pragma unroll
  for (int m = 0; m < MT; ++m) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float sum = row_sum[m][r];
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      const int t = warp_q0 + m * 16 + g + 8 * r;
      if (t >= p.q_len) continue;
      const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
      bf16* dst = p.out + (static_cast<int64_t>(b) * p.q_len + t) * q_stride + h * HD;
#pragma unroll
      for (int n = 0; n < kOTiles; ++n)
        *reinterpret_cast<uint32_t*>(dst + n * 8 + 2 * c) =
            attention::pack_bf16(o[m][n][2 * r] * inv, o[m][n][2 * r + 1] * inv);
      if (c == 0)
        p.lse[(static_cast<int64_t>(b) * p.q_heads + h) * p.q_len + t] =
            sum > 0.0f ? row_max[m][r] * attention::kLn2 + logf(sum) : -INFINITY;
    }
  }
}

ForwardParams forward_params(const AttentionDims& dims, MaskGeometry mask, const void* q,
                             const void* k, const void* v, void* out, float* lse) {
  ForwardParams p;
  static_cast<attention::KernelShape&>(p) = attention::kernel_shape(dims, mask);
  p.q = static_cast<const bf16*>(q);
  p.k = static_cast<const bf16*>(k);
  p.v = static_cast<const bf16*>(v);
  p.out = static_cast<bf16*>(out);
  p.lse = lse;
  p.scale_log2 = attention::kLog2e / std::sqrt(static_cast<float>(dims.head_dim));
  return p;
}

template <int HD, int MT, int BLOCKS>
void launch_flash_forward(const ForwardParams& p, int64_t batch, cudaStream_t stream) {
  using Tiles = ForwardTiles<HD, MT>;
  // Set on every launch (a cheap call): the limit belongs to the current device's context.
  SF_CUDA_CHECK(cudaFuncSetAttribute(flash_forward_kernel<HD, MT, BLOCKS>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(Tiles::kSmemBytes)));
  const dim3 grid(static_cast<unsigned>(p.q_heads), static_cast<unsigned>(batch),
                  attention::ceil_div(p.q_len, Tiles::kRows));
  flash_forward_kernel<HD, MT, BLOCKS><<<grid, kThreads, Tiles::kSmemBytes, stream>>>(p);
  SF_CUDA_LAUNCH_CHECK("flash_forward_kernel");
}

}  // namespace

void attention_forward(DType dtype, const AttentionDims& dims, int mask_shift, int mask_window,
                       const void* q, const void* k, const void* v, void* out, float* lse,
                       cudaStream_t stream) {
  if (dims.batch == 0 || dims.q_len == 0 || dims.q_heads == 0) return;
  const MaskGeometry mask{mask_shift, mask_window};
  const bool tensor_cores =
      dtype == DType::bf16 && aligned16(q) && aligned16(k) && aligned16(v) && aligned16(out);
  const ForwardParams p = forward_params(dims, mask, q, k, v, out, lse);
  if (tensor_cores && dims.head_dim == 64 && wgmma_attention_active()) {
    attention::wgmma_forward_hd64(p, dims.batch, stream);  // Hopper (attention_forward_wgmma.cu)
  } else if (tensor_cores && dims.head_dim == 64) {
    // A narrow band (short window): 64-query blocks visit fewer partly masked key tiles, and
    // their smaller register budget fits three blocks per multiprocessor.
    if (mask_window > 0 && mask_window <= 128)
      launch_flash_forward<64, 1, 3>(p, dims.batch, stream);
    else
      launch_flash_forward<64, 2, 2>(p, dims.batch, stream);
  } else if (tensor_cores && dims.head_dim == 128) {
    launch_flash_forward<128, 1, 2>(p, dims.batch, stream);
  } else {
    attention::generic_forward(dtype, dims, mask, q, k, v, out, lse, stream);
  }
}

}  // namespace sf::cuda
