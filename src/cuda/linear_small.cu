// linear_small.cu — out = x @ W^T (+ addend) for a few rows (decoding: one row per sequence and
// stack), several independent products in one launch (Backend::linear_many; CudaBackend::matmul
// sends its small-row products here too). Batch-1 decoding is memory-bound: each weight is read
// once, with 16-byte loads, while the rows of x stay in L1/L2.
//
// Layout and conventions: W [N, K] row-major (a linear layer's PyTorch layout), x [M, K],
// out and addend [M, N]; one dtype (F32 or BF16) for x, W, out and addend; fp32 accumulation.
// A warp computes F outputs (features) for all M rows over its share of K: its lanes take
// 16-byte chunks (8 BF16 or 4 F32 values) of each weight row, 32 consecutive chunks at a time,
// then a warp sum; S warps of a block may share outputs (K split between them, their sums
// added in shared memory). S depends on the product's K only and F changes no sum
// (choose_splits), so a product sums in the same order in every launch. Input transforms, each rounded to the dtype as
// the unfused kernel would have stored its output (the gate agrees with swiglu_forward bit for
// bit; the norm to rounding, its rstd summed in another order than rmsnorm_forward's):
//   * norm (a decode step's RMSNorm fused into its projections): each block first computes the
//     rows' rstd from x (in L2) and forms the normalised values on the fly;
//   * gate (the MLP's SwiGLU fused into w2): x' = silu(gate) * x.
// Blocks of kWarps warps take consecutive outputs of one product; the products' blocks follow
// each other in the grid (first_block), and the product table travels as a kernel parameter
// (no upload; CUDA graphs keep it). Launched as a dependent launch (dependent_launch.cuh): the
// first kUnroll loads of each weight row are issued before the wait for the previous kernel.
#include <algorithm>

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kWarps = 8;         // warps per block
constexpr int kMaxFeatures = 2;   // outputs per warp (SmallProduct::features)
constexpr int kUnroll = 4;        // 16-byte chunks per row a lane loads before using them
// Warps the GPU holds at once at this kernel's occupancy for one row (up to 128 registers: 2
// blocks = 16 warps per multiprocessor, 132 of them on an H100): a launch's warps should fit
// in one wave.
constexpr int64_t kResidentWarps = 132 * 16;

struct ProductTable {
  SmallProduct products[kMaxSmallProducts];
  int first_block[kMaxSmallProducts + 1];  // prefix sums of each product's blocks
  int count;
};

// The 16-byte chunk of `p` at element offset `k`, as fp32 values.
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

// x'[c] of one row: x[c] itself, or normalised (scale = the row's rstd) and rounded to T.
template <class T>
__device__ __forceinline__ float input_value(float x, const T* norm, int64_t c, float scale) {
  return norm ? to_float(from_float<T>(x * scale * to_float(norm[c]))) : x;
}

// x'[c] of one row through the gate: silu(g) * x rounded to T, as swiglu_forward stores it.
template <class T>
__device__ __forceinline__ float gated_value(float x, float g) {
  return to_float(from_float<T>(g * sigmoid(g) * x));
}

template <class T, int M>
__global__ void __launch_bounds__(kWarps * 32) linear_small_kernel(const ProductTable table) {
  int t = 0;
  while (t + 1 < table.count && static_cast<int>(blockIdx.x) >= table.first_block[t + 1]) ++t;
  const SmallProduct& p = table.products[t];
  const T* x = static_cast<const T*>(p.x);
  const T* norm = static_cast<const T*>(p.norm);
  const T* gate = static_cast<const T*>(p.gate);
  const int S = p.splits, F = p.features;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = warp / S, s = warp % S;
  // This warp's outputs n0 .. n0 + F - 1 (those < N), and its share of K: the 16-byte chunks
  // lane + 32 * (s + S * i), i = 0, 1, ...
  const int64_t n0 =
      (static_cast<int64_t>(blockIdx.x - table.first_block[t]) * (kWarps / S) + group) * F;
  constexpr int V = 16 / sizeof(T);  // values per 16-byte chunk
  const int64_t chunks = p.k / V;
  auto chunk_of = [&](int64_t i) { return lane + 32 * (s + static_cast<int64_t>(S) * i); };
  auto weight_row = [&](int f) {
    return static_cast<const T*>(p.w) + min(n0 + f, p.n - 1) * p.k;  // (rows past N unused)
  };
  // kUnroll chunks of each of the warp's F rows in flight per lane before any is used: a
  // decode product is a few MB read in one wave, so its time is the loads' latency unless
  // many are in flight. The first group is loaded before the wait for the kernel that wrote x.
  Pack<T, V> wv[kUnroll][kMaxFeatures];
  auto load_group = [&](int64_t i0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = chunk_of(i0 + u);
#pragma unroll
      for (int f = 0; f < kMaxFeatures; ++f)
        if (f < F && c < chunks) wv[u][f] = load_pack<V>(weight_row(f) + c * V);
    }
  };
  if (p.vector_loads) load_group(0);
  dependency_wait();
  dependents_may_start();
  // The rows' rstd when the product normalises its input: every thread of the block takes part,
  // each block recomputing it from x in L2.
  __shared__ float rstd[M];
  if (norm) {
    __shared__ float scratch[32];
    for (int m = 0; m < M && m < p.m; ++m) {
      float sum = 0.f;
      for (int64_t c = threadIdx.x; c < p.k; c += blockDim.x) {
        const float v = to_float(x[m * p.k + c]);
        sum += v * v;
      }
      sum = block_sum(sum, scratch);
      if (threadIdx.x == 0) rstd[m] = rsqrtf(sum / static_cast<float>(p.k) + p.eps);
    }
    __syncthreads();
  }
  float acc[kMaxFeatures][M];
#pragma unroll
  for (int f = 0; f < kMaxFeatures; ++f)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[f][m] = 0.f;
  if (n0 < p.n && p.vector_loads) {
    // (the loop bound is the warp's first chunk of the group: uniform within the warp)
    for (int64_t i0 = 0; 32 * (s + static_cast<int64_t>(S) * i0) < chunks; i0 += kUnroll) {
      if (i0 > 0) load_group(i0);
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = chunk_of(i0 + u);
        if (c >= chunks) break;
        float nv[V];
        if (norm) load_chunk(norm + c * V, nv);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m >= p.m) break;
          // x'[m] of this chunk, formed once for the warp's F rows.
          float xv[V];
          load_chunk(x + m * p.k + c * V, xv);
          if (norm) {
#pragma unroll
            for (int i = 0; i < V; ++i) xv[i] = to_float(from_float<T>(xv[i] * rstd[m] * nv[i]));
          } else if (gate) {
            float gv[V];
            load_chunk(gate + m * p.k + c * V, gv);
#pragma unroll
            for (int i = 0; i < V; ++i) xv[i] = gated_value<T>(xv[i], gv[i]);
          }
#pragma unroll
          for (int f = 0; f < kMaxFeatures; ++f)
            if (f < F)
#pragma unroll
              for (int i = 0; i < V; ++i) acc[f][m] = fmaf(to_float(wv[u][f].v[i]), xv[i], acc[f][m]);
        }
      }
    }
  } else if (n0 < p.n) {  // K not a multiple of the vector width, or unaligned rows (S = F = 1)
    const T* w = weight_row(0);
    for (int64_t c = lane; c < p.k; c += 32) {
      const float wc = to_float(w[c]);
#pragma unroll
      for (int m = 0; m < M; ++m)
        if (m < p.m) {
          float xc = input_value(to_float(x[m * p.k + c]), norm, c, norm ? rstd[m] : 1.f);
          if (gate) xc = gated_value<T>(xc, to_float(gate[m * p.k + c]));
          acc[0][m] = fmaf(wc, xc, acc[0][m]);
        }
    }
  }
#pragma unroll
  for (int f = 0; f < kMaxFeatures; ++f)
#pragma unroll
    for (int m = 0; m < M; ++m) acc[f][m] = warp_sum(acc[f][m]);
  if (S > 1) {
    // The S warps of a group hold partial sums of the same outputs: added in warp order.
    __shared__ float partial[kWarps][kMaxFeatures][M];
    if (lane == 0)
#pragma unroll
      for (int f = 0; f < kMaxFeatures; ++f)
#pragma unroll
        for (int m = 0; m < M; ++m) partial[warp][f][m] = acc[f][m];
    __syncthreads();
    if (s != 0) return;
#pragma unroll
    for (int f = 0; f < kMaxFeatures; ++f)
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float total = partial[warp][f][m];
        for (int other = 1; other < S; ++other) total += partial[warp + other][f][m];
        acc[f][m] = total;
      }
  }
  if (lane != 0) return;
  T* out = static_cast<T*>(p.out);
  const T* addend = static_cast<const T*>(p.addend);
#pragma unroll
  for (int f = 0; f < kMaxFeatures; ++f) {
    const int64_t n = n0 + f;
    if (f >= F || n >= p.n) break;
#pragma unroll
    for (int m = 0; m < M; ++m) {
      if (m < p.m) {
        float value = acc[f][m];
        if (addend) value += to_float(addend[m * p.n + n]);
        out[m * p.n + n] = from_float<T>(value);
      }
    }
  }
}

template <class T, int M>
void launch(const ProductTable& table, int blocks, cudaStream_t stream) {
  launch_dependent(linear_small_kernel<T, M>, dim3(blocks), dim3(kWarps * 32), 0, stream, table);
}

// How a launch's work is cut, so that each lane has all its loads in flight at once (at most
// kUnroll chunks of each of its rows) and the warps fit in one wave:
//   splits S (1..8) per product: warps sharing one output, each taking every S-th 32-chunk
//     stretch of K, for rows longer than 32 * kUnroll chunks. S changes the order of a sum, so
//     it depends on the product's K alone: a product sums alike in every launch it is part of
//     (staggered = sequential bit for bit);
//   features F (1..2) for the launch: outputs per warp, 2 when the launch's warps would not
//     fit in one wave (F changes no sum, only which warp computes it).
// `chunks` = K / (values per 16-byte chunk), 0 when the product takes the scalar path.
int choose_splits(int64_t chunks) {
  int splits = 1;
  while (splits < kWarps && chunks >= 32 * 2 * splits &&
         (chunks + 32 * splits - 1) / (32 * splits) > kUnroll)
    splits *= 2;
  return splits;
}

}  // namespace

void linear_small_many(DType dtype, const SmallProduct* products, int count, cudaStream_t stream) {
  for (int first = 0; first < count; first += kMaxSmallProducts) {
    ProductTable table{};
    table.count = std::min(kMaxSmallProducts, count - first);
    int blocks = 0, rows = 1;
    int64_t warps = 0;  // with one output per warp
    for (int i = 0; i < table.count; ++i) {
      SmallProduct& p = table.products[i];
      p = products[first + i];
      const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
      const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
      p.vector_loads = p.k % vector == 0 && aligned(p.w) && aligned(p.x) &&
                       (p.norm == nullptr || aligned(p.norm)) && (p.gate == nullptr || aligned(p.gate));
      p.splits = p.vector_loads ? choose_splits(p.k / vector) : 1;
      warps += p.n * p.splits;
      rows = std::max<int>(rows, static_cast<int>(p.m));
    }
    for (int i = 0; i < table.count; ++i) {
      SmallProduct& p = table.products[i];
      p.features = p.vector_loads && warps > kResidentWarps ? kMaxFeatures : 1;
      table.first_block[i] = blocks;
      const int64_t outputs_per_block = kWarps / p.splits * p.features;
      blocks += static_cast<int>((p.n + outputs_per_block - 1) / outputs_per_block);
    }
    table.first_block[table.count] = blocks;
    if (blocks == 0) continue;
    SF_DISPATCH_FLOAT(dtype, T, {
      if (rows <= 1) launch<T, 1>(table, blocks, stream);
      else if (rows <= 2) launch<T, 2>(table, blocks, stream);
      else if (rows <= 4) launch<T, 4>(table, blocks, stream);
      else launch<T, 8>(table, blocks, stream);
    });
    SF_CUDA_LAUNCH_CHECK("linear_small");
  }
}

}  // namespace sf::cuda
