// attention_common.cuh — what the attention kernels share: the mask geometry (which keys a query
// sees, which tiles a block visits), the tensor-core primitives of the fast path (ldmatrix,
// mma.sync m16n8k16 bf16, cp.async into XOR-swizzled tiles), and the entry points of the general
// SIMT path (attention_generic.cu) that the dispatchers fall back to.
//
// Conventions (see attention_kernels.h): q, out [B, Tq, Hq, hd]; k, v [B, Tk, Hkv, hd]; lse and
// the backward's D = rowsum(dout * out) are F32 [B, Hq, Tq]. Query t sees key j iff
// j <= t - shift and, when window > 0, j >= t - shift - window + 1.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "core/dtype.h"
#include "cuda/attention_kernels.h"

namespace sf::cuda::attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- mask geometry -----------------------------------------------------------------------------

struct MaskGeometry {
  int shift = 0, window = 0;  // window 0: unbounded to the left

  // Lowest key any query in [t_first, ...] can see (never below 0).
  __host__ __device__ int first_key(int t_first) const {
    if (window == 0) return 0;
    const int j = t_first - shift - window + 1;
    return j > 0 ? j : 0;
  }
  // Highest key query t_last can see, clamped to kv_len - 1 (may be negative: none).
  __host__ __device__ int last_key(int t_last, int kv_len) const {
    const int j = t_last - shift;
    return j < kv_len - 1 ? j : kv_len - 1;
  }
  // Lowest query that can see a key in [j_first, ...] (never below 0).
  __host__ __device__ int first_query(int j_first) const {
    const int t = j_first + shift;
    return t > 0 ? t : 0;
  }
  // Highest query that can see key j_last, clamped to q_len - 1.
  __host__ __device__ int last_query(int j_last, int q_len) const {
    if (window == 0) return q_len - 1;
    const int t = j_last + shift + window - 1;
    return t < q_len - 1 ? t : q_len - 1;
  }
  __host__ __device__ bool visible(int t, int j) const {
    return j <= t - shift && (window == 0 || j >= t - shift - window + 1);
  }
  // Every query in [t0, t1] sees every key in [j0, j1] (bounds of the tensors not included).
  __host__ __device__ bool all_visible(int t0, int t1, int j0, int j1) const {
    return j1 <= t0 - shift && (window == 0 || j0 >= t1 - shift - window + 1);
  }
  // No query in [t0, t1] sees any key in [j0, j1].
  __host__ __device__ bool none_visible(int t0, int t1, int j0, int j1) const {
    return j0 > t1 - shift || (window > 0 && j1 < t0 - shift - window + 1);
  }

  // Tile indices [first, last] (empty: last < first) of a band the flash kernels walk.
  struct TileRange {
    int first, last;
    __host__ __device__ int count() const { return last >= first ? last - first + 1 : 0; }
  };
  // The tiles of `tile` keys that queries [t_first, t_last] can see.
  __host__ __device__ TileRange key_tiles(int t_first, int t_last, int kv_len, int tile) const {
    return band(first_key(t_first), last_key(t_last, kv_len), tile);
  }
  // The tiles of `tile` queries that can see a key in [j_first, j_last].
  __host__ __device__ TileRange query_tiles(int j_first, int j_last, int q_len, int tile) const {
    return band(first_query(j_first), last_query(j_last, q_len), tile);
  }

 private:
  __host__ __device__ static TileRange band(int lo, int hi, int tile) {
    return {lo / tile, hi >= lo ? hi / tile : lo / tile - 1};
  }
};

// The sizes every tensor-core attention kernel reads, from AttentionDims (the parameter structs
// of attention_forward.cuh and attention_backward.cuh extend it).
struct KernelShape {
  int q_len, kv_len, q_heads, kv_heads, group;  // group: query heads per kv head
  MaskGeometry mask;
};

inline KernelShape kernel_shape(const AttentionDims& d, MaskGeometry mask) {
  return {static_cast<int>(d.q_len),   static_cast<int>(d.kv_len),
          static_cast<int>(d.q_heads), static_cast<int>(d.kv_heads),
          static_cast<int>(d.q_heads / d.kv_heads), mask};
}

inline int ceil_div(int64_t a, int64_t b) { return static_cast<int>((a + b - 1) / b); }
// The tensor-core kernels move 16-byte chunks: every tensor they touch must start on 16 bytes.
inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- tensor-core primitives (sm_80+ instructions, used on sm_90) --------------------------------

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Tiles of bf16 rows of HD elements (HD a multiple of 64) live in shared memory with their
// 16-byte chunks XOR-swizzled by the row's low three bits: the eight rows an ldmatrix phase
// reads (same logical chunk, eight consecutive rows) then fall into eight different bank
// groups, and so do the rows a warp of cp.async writes. Returns the element offset.
template <int HD>
__device__ __forceinline__ int swizzled(int row, int col) {
  return row * HD + ((((col >> 3) ^ (row & 7))) << 3) + (col & 7);
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

// c += a * b for one 16x8x16 tile: a row-major 16x16 (4 registers), b column-major 16x8
// (2 registers), c 16x8 fp32 (thread (g = lane/4, q = lane%4) holds rows g and g+8, columns
// 2q and 2q+1).
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two fp32 values as one register of two bf16 (`lo` in the low half: the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// An fp32 accumulator tile pair (columns 16k..16k+15 as two 16x8 tiles) re-used as the A
// operand of the next product: the accumulator layout of two adjacent n-tiles is exactly the
// A-fragment layout of one k-step, so probabilities never leave registers.
__device__ __forceinline__ void accumulators_to_a(uint32_t (&a)[4], const float (&lo)[4],
                                                  const float (&hi)[4]) {
  a[0] = pack_bf16(lo[0], lo[1]);
  a[1] = pack_bf16(lo[2], lo[3]);
  a[2] = pack_bf16(hi[0], hi[1]);
  a[3] = pack_bf16(hi[2], hi[3]);
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// 16-byte asynchronous copy global -> shared; `bytes` < 16 zero-fills the rest (0: all zero,
// nothing read).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, int bytes) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() {
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
}

// Copies rows [0, ROWS) of a [*, row_stride] bf16 matrix (row 0 at `src`, HD elements a row)
// into a swizzled tile; rows >= valid_rows are zero-filled (padding past the sequence's end
// must hold finite values: a zero probability times garbage could be NaN).
template <int HD, int ROWS, int THREADS>
__device__ __forceinline__ void load_tile_async(__nv_bfloat16* tile, const __nv_bfloat16* src,
                                                int64_t row_stride, int valid_rows) {
  constexpr int kChunks = HD / 8;
  static_assert(ROWS * kChunks % THREADS == 0, "every thread copies the same number of chunks");
  const uint32_t base = smem_address(tile);
#pragma unroll
  for (int step = 0; step < ROWS * kChunks / THREADS; ++step) {
    const int i = step * THREADS + static_cast<int>(threadIdx.x);
    const int row = i / kChunks, chunk = i % kChunks;
    const bool valid = row < valid_rows;
    const __nv_bfloat16* from = src + (valid ? row * row_stride + chunk * 8 : 0);
    cp_async_16(base + 2 * swizzled<HD>(row, chunk * 8), from, valid ? 16 : 0);
  }
}

// ---- the general SIMT path (attention_generic.cu) -----------------------------------------------
// Any even head_dim, F32 or BF16, fp32 arithmetic with accurate exp/log: the fallback for what
// the tensor-core kernels do not cover.

void generic_forward(DType dtype, const AttentionDims& dims, MaskGeometry mask, const void* q,
                     const void* k, const void* v, void* out, float* lse, cudaStream_t stream);

// `delta` is D = rowsum(dout * out) [B, Hq, Tq], computed by the caller. `strides` are resolved
// (no zeros).
void generic_backward(DType dtype, const AttentionDims& dims, MaskGeometry mask, const void* dout,
                      const float* lse, const float* delta, const void* q, const void* k,
                      const void* v, void* dq, void* dk, void* dv,
                      const AttentionGradStrides& strides, cudaStream_t stream);

}  // namespace sf::cuda::attention
