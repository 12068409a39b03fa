// linear_stream.cu — out = x' @ W^T (+ addend) for a few rows when W is large (the output head;
// every product of a d_model 2048 model): the weights stream through shared memory by the
// bulk-copy engine (cp.async.bulk, sm_90), so the bytes in flight are bounded by shared memory
// and not by the registers of the threads that wait for them. linear_small.cu sends here the
// products linear_stream_suits() accepts; it keeps the small ones, where a launch is one short
// wave and latency, not bandwidth, sets the time.
//
// Conventions as linear_small.cu's: W [N, K] row-major, x [M, K], out and addend [M, N], one
// dtype (F32 or BF16), fp32 accumulation, input transforms (the fused RMSNorm, the SwiGLU gate)
// rounded to the dtype as the unfused kernels store them.
//
// Work: a product's rows are cut into tiles of R consecutive rows (R a power of two, from K
// alone: R * K * sizeof(T) <= kStageBytes, R <= 16), contiguous in memory, so one bulk copy
// moves a tile. The tiles of all the launch's products are numbered in order and each block
// (one per multiprocessor, 256 threads) takes a contiguous range of them. Its thread 0 keeps
// `depth` tiles in flight (as many as its stage buffer holds), each signalled by an mbarrier's
// transaction count; the block's 8 warps compute a tile from shared memory (warps split over
// rows: 16 rows = 2 per warp; fewer rows than warps = several warps per row, their sums added
// in warp order), then free its place for the tile `depth` ahead. When the block reaches a new
// product it stages that product's inputs x' (normalised or gated, rounded to T) for all rows
// in shared memory once. The addend of an output is read before its sums.
// Every output is one fixed-order sum that depends on K only (the row's chunks in lane order,
// the warps of a row in order), so a product sums alike in every launch it is part of and at any
// number of rows (staggered = sequential bit for bit). Its order differs from linear_small.cu's,
// so whether a product streams depends on its own shape only (linear_stream_suits).
// Launched as a dependent launch (dependent_launch.cuh): the first stages' copies start before
// the wait for the kernel that wrote x.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "cuda/bulk_copy.cuh"
#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/linear_stream.cuh"
#include "cuda/product_inputs.cuh"

namespace sf::cuda {

namespace {

using stream::fetch_tile;
using stream::kMaxDepth;
using stream::kMaxRowBytes;
using stream::kStageBytes;
using stream::kThreads;
using stream::StreamTable;
using stream::tile_rows;

// The stage buffer, in units of kStageBytes: 3 keep a block at 108 kB of shared memory, so the
// next kernel's blocks fit beside it and start their own loads early (dependent launch); a
// launch whose blocks stream many tiles (the output head) takes kLongStages instead
// (stream_stages). The buffer holds as many tiles in flight as fit it (`depth`, up to
// kMaxDepth), each at a stride of the launch's largest tile: a tile smaller than kStageBytes
// (w2 at d_model 2048: two rows of K 5632, 22 kB) then keeps 4 in flight in 96 kB, not 3. At
// batch 1 the rate of a product follows the bytes in flight per multiprocessor.
constexpr int kStages = 3;
constexpr int kLongStages = 6;
constexpr int64_t kLongStreamTiles = 16;  // tiles per block from which kLongStages pay
constexpr int kMaxRows = kMaxSmallRows;     // rows of x (the template's M)
constexpr int64_t kMinWeightBytes = 4 << 20;
// Shared memory: the stages, then x' for up to kMaxRows rows of kMaxRowBytes.
constexpr int64_t shared_bytes(int stages, int rows) { return stages * kStageBytes + rows * kMaxRowBytes; }

template <class T, int M, int Stages>
__global__ void __launch_bounds__(kThreads, 1) linear_stream_kernel(const StreamTable table) {
  extern __shared__ __align__(128) unsigned char shared[];
  T* const stages = reinterpret_cast<T*>(shared);
  T* const xs = reinterpret_cast<T*>(shared + Stages * kStageBytes);
  const int depth = table.depth;
  const int64_t stage_elements = table.stage_elements;
  __shared__ __align__(8) uint64_t full[kMaxDepth];
  __shared__ float rstd[M];
  __shared__ float partial[stream::kWarps][M];
  const int64_t tiles = table.first_tile[table.count];
  const int64_t begin = blockIdx.x * tiles / gridDim.x, end = (blockIdx.x + 1) * tiles / gridDim.x;
  auto product_of = [&](int64_t tile) {
    int i = 0;
    while (i + 1 < table.count && tile >= table.first_tile[i + 1]) ++i;
    return i;
  };
  // Tile `tile`'s rows of W into stage s (thread 0 only).
  auto fetch = [&](int64_t tile, int s) {
    const int t = product_of(tile);
    const SmallProduct& p = table.products[t];
    fetch_tile(p.w, p.n, p.k, tile - table.first_tile[t], stages + s * stage_elements, &full[s]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < depth; ++s) barrier_init(&full[s]);
    barrier_init_fence();
    for (int s = 0; s < depth && begin + s < end; ++s) fetch(begin + s, s);
  }
  __syncthreads();  // (the barriers exist before anyone waits on them)
  dependency_wait();
  dependents_may_start();

  int staged = -1;  // the product whose inputs xs holds
  for (int64_t tile = begin; tile < end; ++tile) {
    const int64_t i = tile - begin;
    const int s = static_cast<int>(i % depth);
    const int t = product_of(tile);
    const SmallProduct& p = table.products[t];
    if (t != staged) {
      stage_inputs<T>(p, xs, rstd);
      __syncthreads();
      staged = t;
    }
    while (!barrier_done(&full[s], static_cast<uint32_t>((i / depth) & 1))) {
    }
    stream::stream_tile<T, M>(p, tile - table.first_tile[t], stages + s * stage_elements, xs, partial);
    __syncthreads();  // every warp is done with stage s (and partial) before it is refilled
    if (threadIdx.x == 0 && tile + depth < end) fetch(tile + depth, s);
  }
}

// The buffer of S stages cut into tiles of the launch's largest tile (128-byte aligned).
template <class T, int S>
StreamTable with_depth(StreamTable table) {
  int64_t stride = 0;
  for (int i = 0; i < table.count; ++i) {
    const int64_t row_bytes = table.products[i].k * static_cast<int64_t>(sizeof(T));
    stride = std::max(stride, tile_rows(row_bytes) * row_bytes);
  }
  stride = (stride + 127) / 128 * 128;
  table.depth = static_cast<int>(std::min<int64_t>(kMaxDepth, S * kStageBytes / stride));
  table.stage_elements = stride / static_cast<int64_t>(sizeof(T));
  return table;
}

template <class T, int M, int S>
void launch_staged(const StreamTable& table_in, int blocks, cudaStream_t stream) {
  const StreamTable table = with_depth<T, S>(table_in);
  static const bool sized = [] {  // (dynamic shared memory beyond 48 kB is asked for once)
    SF_CUDA_CHECK(cudaFuncSetAttribute(linear_stream_kernel<T, M, S>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(shared_bytes(S, M))));
    return true;
  }();
  (void)sized;
  launch_dependent(linear_stream_kernel<T, M, S>, dim3(blocks), dim3(kThreads),
                   static_cast<size_t>(shared_bytes(S, M)), stream, table);
}

// The stages a launch keeps in flight: kLongStages when its blocks stream kLongStreamTiles or
// more tiles each; SF_STREAM_STAGES=3 or 6 in the environment forces one (the benchmarks' A/B
// switch). The stage count changes no sum.
int stream_stages(int64_t tiles_per_block) {
  static const int forced = [] {
    const char* flag = std::getenv("SF_STREAM_STAGES");
    return flag ? std::atoi(flag) : 0;
  }();
  if (forced == kStages || forced == kLongStages) return forced;
  return tiles_per_block >= kLongStreamTiles ? kLongStages : kStages;
}

constexpr int64_t kMaxSharedBytes = 227 << 10;  // a block's most on sm_90

template <class T, int M>
void launch(const StreamTable& table, int blocks, cudaStream_t stream) {
  const int64_t tiles = table.first_tile[table.count];
  if constexpr (shared_bytes(kLongStages, M) <= kMaxSharedBytes) {  // (up to 2 rows)
    if (stream_stages((tiles + blocks - 1) / blocks) == kLongStages)
      return launch_staged<T, M, kLongStages>(table, blocks, stream);
  }
  launch_staged<T, M, kStages>(table, blocks, stream);
}

bool streaming_enabled() {
  static const bool enabled = [] {
    const char* flag = std::getenv("SF_LINEAR_STREAM");
    return !(flag && std::strcmp(flag, "0") == 0);
  }();
  return enabled;
}

}  // namespace

bool linear_stream_suits(DType dtype, const SmallProduct& p) {
  const int64_t size = static_cast<int64_t>(dtype_size(dtype));
  const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
  return streaming_enabled() && p.k % (16 / size) == 0 && p.k * size <= kMaxRowBytes &&
         p.n * p.k * size >= kMinWeightBytes && aligned(p.w) && aligned(p.x) &&
         (p.norm == nullptr || aligned(p.norm)) && (p.gate == nullptr || aligned(p.gate));
}

namespace stream {

std::vector<StreamTable> make_tables(DType dtype, const SmallProduct* products, int count, int* rows) {
  std::vector<StreamTable> tables;
  *rows = 1;
  for (int first = 0; first < count; first += kMaxSmallProducts) {
    StreamTable table{};
    table.count = std::min(kMaxSmallProducts, count - first);
    int tiles = 0;
    for (int i = 0; i < table.count; ++i) {
      const SmallProduct& p = table.products[i] = products[first + i];
      SF_CHECK(p.m >= 1 && p.m <= kMaxRows, "linear_stream: {} rows (at most {})", p.m, kMaxRows);
      table.first_tile[i] = tiles;
      const int per_tile = tile_rows(p.k * static_cast<int64_t>(dtype_size(dtype)));
      tiles += static_cast<int>((p.n + per_tile - 1) / per_tile);
      *rows = std::max<int>(*rows, static_cast<int>(p.m));
    }
    table.first_tile[table.count] = tiles;
    if (tiles > 0) tables.push_back(table);
  }
  return tables;
}

}  // namespace stream

void linear_stream_many(DType dtype, const SmallProduct* products, int count, cudaStream_t stream) {
  const int multiprocessors = multiprocessor_count();
  int rows = 1;
  for (const StreamTable& table : stream::make_tables(dtype, products, count, &rows)) {
    const int blocks = std::min(table.first_tile[table.count], multiprocessors);
    SF_DISPATCH_FLOAT(dtype, T, {
      if (rows <= 1) launch<T, 1>(table, blocks, stream);
      else if (rows <= 2) launch<T, 2>(table, blocks, stream);
      else if (rows <= 4) launch<T, 4>(table, blocks, stream);
      else launch<T, 8>(table, blocks, stream);
    });
    SF_CUDA_LAUNCH_CHECK("linear_stream");
  }
}

}  // namespace sf::cuda
