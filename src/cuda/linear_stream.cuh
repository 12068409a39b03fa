// linear_stream.cuh — the device side of linear_stream.cu, shared with the persistent decode-step
// kernel (step_program.cu): the launch's table of products, the tiles of a product's weights, one
// tile's bulk copy into a stage, and the work of a block on one tile that has arrived
// (stream_tile). See linear_stream.cu for the method and the conventions.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/bulk_copy.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda::stream {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int64_t kStageBytes = 32 << 10;   // the largest tile
constexpr int kMaxTileRows = 16;
constexpr int kMaxDepth = 8;                // tiles in flight per block, at most
constexpr int64_t kMaxRowBytes = 12 << 10;  // K * sizeof(T) of a streamed product

struct StreamTable {
  SmallProduct products[kMaxSmallProducts];
  int first_tile[kMaxSmallProducts + 1];  // prefix sums of each product's tiles
  int count;
  int depth;               // tiles in flight (<= kMaxDepth)
  int64_t stage_elements;  // stride of the tiles in the buffer (the largest tile, 128-byte aligned)
};

// Rows per tile of a product with rows of `row_bytes`.
__host__ __device__ constexpr int tile_rows(int64_t row_bytes) {
  int rows = kMaxTileRows;
  while (rows > 1 && rows * row_bytes > kStageBytes) rows /= 2;
  return rows;
}

// The tables of the launches of linear_stream_many for these products (kMaxSmallProducts a
// table; each product's tiles numbered after the previous ones'), and in *rows the most rows of
// any product. The depth and stride are left to the launcher.
std::vector<StreamTable> make_tables(DType dtype, const SmallProduct* products, int count, int* rows);

// Tile `tile` of the weights w [n, k] (its rows tile * R .. ) into `stage`, signalled on
// `barrier` (one thread).
template <class T>
__device__ __forceinline__ void fetch_tile(const void* w, int64_t n, int64_t k, int64_t tile, T* stage,
                                           uint64_t* barrier) {
  const int rows_per_tile = tile_rows(k * static_cast<int64_t>(sizeof(T)));
  const int64_t row0 = tile * rows_per_tile;
  const int64_t rows = min(static_cast<int64_t>(rows_per_tile), n - row0);
  copy_to_stage(stage, static_cast<const T*>(w) + row0 * k, static_cast<uint32_t>(rows * k * sizeof(T)), barrier);
}

// The outputs of tile `tile` of product p from its weights in `stage` and the inputs x' in xs
// (stage_inputs): warp w takes rows_per_warp rows, or a 1/warps_per_row share of one row's
// chunks (their sums added in warp order through `partial`). Every thread of the block calls
// it; the caller synchronises the block before the stage is refilled.
template <class T, int M>
__device__ __forceinline__ void stream_tile(const SmallProduct& p, int64_t tile, const T* stage, const T* xs,
                                            float (*partial)[M]) {
  constexpr int V = 16 / sizeof(T);  // values per 16-byte chunk
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int rows_per_tile = tile_rows(p.k * static_cast<int64_t>(sizeof(T)));
  const int64_t row0 = tile * rows_per_tile;
  const int warps_per_row = rows_per_tile >= kWarps ? 1 : kWarps / rows_per_tile;
  const int rows_per_warp = rows_per_tile >= kWarps ? rows_per_tile / kWarps : 1;
  const int share = warp % warps_per_row;
  const int64_t chunks = p.k / V;
  T* out = static_cast<T*>(p.out);
  const T* addend = static_cast<const T*>(p.addend);
  for (int r = 0; r < rows_per_warp; ++r) {
    const int row = rows_per_tile >= kWarps ? warp * rows_per_warp + r : warp / warps_per_row;
    const bool here = row0 + row < p.n;  // (uniform within the warp)
    float acc[M], add[M];
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = add[m] = 0.f;
    // The addend (the residual) requested before the sums, off the chain of dependent loads.
    if (here && lane == 0 && share == 0 && addend)
#pragma unroll
      for (int m = 0; m < M; ++m)
        if (m < p.m) add[m] = to_float(addend[m * p.n + row0 + row]);
    if (here) {
      const T* w = stage + row * p.k;
#pragma unroll 4
      for (int64_t c = lane + 32 * share; c < chunks; c += 32 * warps_per_row) {
        float wv[V];
        load_chunk(w + c * V, wv);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= p.m) break;
          float xv[V];
          load_chunk(xs + m * p.k + c * V, xv);
#pragma unroll
          for (int e = 0; e < V; ++e) acc[m] = fmaf(wv[e], xv[e], acc[m]);
        }
      }
    }
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
    if (warps_per_row > 1) {
      // The warps of one row hold partial sums of its outputs: added in warp order.
      if (lane == 0)
#pragma unroll
        for (int m = 0; m < M; ++m) partial[warp][m] = acc[m];
      __syncthreads();
      if (share == 0)
#pragma unroll
        for (int m = 0; m < M; ++m) {
          float total = partial[warp][m];
          for (int other = 1; other < warps_per_row; ++other) total += partial[warp + other][m];
          acc[m] = total;
        }
    }
    if (here && lane == 0 && share == 0) {
      const int64_t n = row0 + row;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        if (m >= p.m) break;
        out[m * p.n + n] = from_float<T>(addend ? acc[m] + add[m] : acc[m]);
      }
    }
  }
}

}  // namespace sf::cuda::stream
