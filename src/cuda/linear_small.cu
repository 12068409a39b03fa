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
// Blocks of kWarps warps take groups of consecutive outputs of one product (a block several
// groups when the product has more than the resident blocks allotted to it); the products'
// blocks follow each other in the grid (first_block), and the product table travels as a
// kernel parameter (no upload; CUDA graphs keep it). Launched as a dependent launch
// (dependent_launch.cuh): the first kUnroll loads of each weight row are issued before the wait
// for the previous kernel.
#include <algorithm>
#include <vector>

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/product_inputs.cuh"

namespace sf::cuda {

namespace {

constexpr int kWarps = 8;         // warps per block
constexpr int kUnroll = 4;        // 16-byte chunks per row a lane loads before using them
// Blocks a multiprocessor holds at once: the kernel is compiled for it (at most 128 registers
// a thread). Below that the loads a lane keeps in flight fit, and a launch of 2 or more rows
// no longer ran at half the occupancy of a 1-row one (148-165 registers, one block).
constexpr int kBlocksPerSm = 2;
// Input rows x' up to this size are staged in shared memory (product_inputs.cuh): every product
// of a decode step at up to 8 rows, d_model 2048 (its w2 streams: linear_stream.cu).
constexpr int64_t kMaxStagedBytes = 48 << 10;

// Whether product p's inputs are staged: decided by its own shape (never by the launch), on the
// host (the launch's shared memory) and in the kernel alike.
__host__ __device__ inline bool is_staged(const SmallProduct& p, size_t element_bytes) {
  return p.vector_loads && p.m * p.k * static_cast<int64_t>(element_bytes) <= kMaxStagedBytes;
}

struct ProductTable {
  SmallProduct products[kMaxSmallProducts];
  int first_block[kMaxSmallProducts + 1];  // prefix sums of each product's blocks
  int count;
};

// x'[c] of one row: x[c] itself, or normalised (scale = the row's rstd) and rounded to T.
template <class T>
__device__ __forceinline__ float input_value(float x, const T* norm, int64_t c, float scale) {
  return norm ? to_float(from_float<T>(x * scale * to_float(norm[c]))) : x;
}

template <class T, int M, int F>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSm) linear_small_kernel(const ProductTable table) {
  int t = 0;
  while (t + 1 < table.count && static_cast<int>(blockIdx.x) >= table.first_block[t + 1]) ++t;
  const SmallProduct& p = table.products[t];
  const T* x = static_cast<const T*>(p.x);
  const T* norm = static_cast<const T*>(p.norm);
  const T* gate = static_cast<const T*>(p.gate);
  const int S = p.splits;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = warp / S, s = warp % S;
  // The product's output groups (kWarps / S * F consecutive outputs each) are dealt to its
  // blocks in turn: this block takes groups g0, g0 + stride, ... (one, unless the product has
  // more groups than the launch has resident blocks for it). Warp `group` of output group g
  // computes outputs n0 .. n0 + F - 1 (those < N) over its share of K: the 16-byte chunks
  // lane + 32 * (s + S * i), i = 0, 1, ...
  const int64_t g0 = blockIdx.x - table.first_block[t];
  const int64_t stride = table.first_block[t + 1] - table.first_block[t];
  const int64_t outputs_per_group = static_cast<int64_t>(kWarps / S) * F;
  auto first_output = [&](int64_t g) { return (g * (kWarps / S) + group) * F; };
  constexpr int V = 16 / sizeof(T);  // values per 16-byte chunk
  const int64_t chunks = p.k / V;
  auto chunk_of = [&](int64_t i) { return lane + 32 * (s + static_cast<int64_t>(S) * i); };
  // kUnroll chunks of each of the warp's F rows in flight per lane before any is used: a
  // decode product is a few MB read in one wave, so its time is the loads' latency unless
  // many are in flight. The first group is loaded before the wait for the kernel that wrote x,
  // and each next group's before the current one's sums are reduced and stored.
  Pack<T, V> wv[kUnroll][F];
  auto load_group = [&](int64_t n0, int64_t i0) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = chunk_of(i0 + u);
#pragma unroll
      for (int f = 0; f < F; ++f)  // (rows past N load row N - 1, unused)
        if (c < chunks) wv[u][f] = load_pack<V>(static_cast<const T*>(p.w) + min(n0 + f, p.n - 1) * p.k + c * V);
    }
  };
  if (p.vector_loads && first_output(g0) < p.n) load_group(first_output(g0), 0);
  dependency_wait();
  dependents_may_start();
  // The input rows x' formed once per block into shared memory (product_inputs.cuh) where they
  // fit; else the rows' rstd here (the block computing it once from x, in L2), and each warp
  // forms x' from x as it reads it.
  extern __shared__ __align__(16) unsigned char dynamic_shared[];
  T* const xs = reinterpret_cast<T*>(dynamic_shared);
  const bool staged = is_staged(p, sizeof(T));
  __shared__ float rstd[M];
  if (staged) {
    stage_inputs<T>(p, xs, rstd);
    __syncthreads();
  } else if (norm) {
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
  __shared__ float partial[kWarps][F][M];
  for (int64_t g = g0; g * outputs_per_group < p.n; g += stride) {  // (uniform in the block)
    const int64_t n0 = first_output(g);
    float acc[F][M], add[F][M];
#pragma unroll
    for (int f = 0; f < F; ++f)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[f][m] = add[f][m] = 0.f;
    // The addend (the residual) requested before the sums, off the chain of dependent loads.
    if (lane == 0 && s == 0 && p.addend) {
      const T* addend = static_cast<const T*>(p.addend);
#pragma unroll
      for (int f = 0; f < F; ++f)
#pragma unroll
        for (int m = 0; m < M; ++m)
          if (n0 + f < p.n && m < p.m) add[f][m] = to_float(addend[m * p.n + n0 + f]);
    }
    if (n0 < p.n && p.vector_loads) {
      // (the loop bound is the warp's first chunk of the group: uniform within the warp)
      for (int64_t i0 = 0; 32 * (s + static_cast<int64_t>(S) * i0) < chunks; i0 += kUnroll) {
        if (i0 > 0) load_group(n0, i0);
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t c = chunk_of(i0 + u);
          if (c >= chunks) break;
          float nv[V];
          if (norm && !staged) load_chunk(norm + c * V, nv);
#pragma unroll
          for (int m = 0; m < M; ++m) {
            if (m >= p.m) break;
            // x'[m] of this chunk, formed once for the warp's F rows (or read formed).
            float xv[V];
            if (staged) {
              load_chunk(xs + m * p.k + c * V, xv);
            } else {
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
            }
#pragma unroll
            for (int f = 0; f < F; ++f)
#pragma unroll
              for (int i = 0; i < V; ++i) acc[f][m] = fmaf(to_float(wv[u][f].v[i]), xv[i], acc[f][m]);
          }
        }
      }
    } else if (n0 < p.n) {  // K not a multiple of the vector width, or unaligned rows (S = 1)
#pragma unroll
      for (int f = 0; f < F; ++f) {
        if (n0 + f >= p.n) break;
        const T* w = static_cast<const T*>(p.w) + (n0 + f) * p.k;
        for (int64_t c = lane; c < p.k; c += 32) {
          const float wc = to_float(w[c]);
#pragma unroll
          for (int m = 0; m < M; ++m)
            if (m < p.m) {
              float xc = input_value(to_float(x[m * p.k + c]), norm, c, norm ? rstd[m] : 1.f);
              if (gate) xc = gated_value<T>(xc, to_float(gate[m * p.k + c]));
              acc[f][m] = fmaf(wc, xc, acc[f][m]);
            }
        }
      }
    }
    if (p.vector_loads && first_output(g + stride) < p.n) load_group(first_output(g + stride), 0);
#pragma unroll
    for (int f = 0; f < F; ++f)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[f][m] = warp_sum(acc[f][m]);
    if (S > 1) {
      // The S warps of a group hold partial sums of the same outputs: added in warp order.
      if (lane == 0)
#pragma unroll
        for (int f = 0; f < F; ++f)
#pragma unroll
          for (int m = 0; m < M; ++m) partial[warp][f][m] = acc[f][m];
      __syncthreads();
      if (s == 0)
#pragma unroll
        for (int f = 0; f < F; ++f)
#pragma unroll
          for (int m = 0; m < M; ++m) {
            float total = partial[warp][f][m];
            for (int other = 1; other < S; ++other) total += partial[warp + other][f][m];
            acc[f][m] = total;
          }
      __syncthreads();  // (partial is reused by the next group)
    }
    if (lane == 0 && s == 0) {
      T* out = static_cast<T*>(p.out);
      const T* addend = static_cast<const T*>(p.addend);
#pragma unroll
      for (int f = 0; f < F; ++f) {
        const int64_t n = n0 + f;
        if (n >= p.n) break;
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m < p.m) {
            out[m * p.n + n] = from_float<T>(addend ? acc[f][m] + add[f][m] : acc[f][m]);
          }
        }
      }
    }
  }
}

template <class T, int M, int F>
void launch_with(const ProductTable& table, int blocks, size_t shared, cudaStream_t stream) {
  static const bool sized = [] {  // (dynamic shared memory beyond 48 kB is asked for once)
    SF_CUDA_CHECK(cudaFuncSetAttribute(linear_small_kernel<T, M, F>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kMaxStagedBytes)));
    return true;
  }();
  (void)sized;
  launch_dependent(linear_small_kernel<T, M, F>, dim3(blocks), dim3(kWarps * 32), shared, stream, table);
}

template <class T, int M>
void launch(const ProductTable& table, int features, int blocks, size_t shared, cudaStream_t stream) {
  if constexpr (M == 1) {
    if (features == 2) return launch_with<T, M, 2>(table, blocks, shared, stream);
  }
  launch_with<T, M, 1>(table, blocks, shared, stream);
}

// How a launch's work is cut, so that each lane has all its loads in flight at once (at most
// kUnroll chunks of each of its rows) and the launch's blocks are all resident:
//   splits S (1..8) per product: warps sharing one output, each taking every S-th 32-chunk
//     stretch of K, for rows longer than 32 * kUnroll chunks. S changes the order of a sum, so
//     it depends on the product's K alone: a product sums alike in every launch it is part of
//     (staggered = sequential bit for bit);
//   features F (1..2) for the launch: outputs per warp, 2 (for one row) when its warps
//     would not fit in one wave (F changes no sum, only which warp computes it);
//   blocks: one per output group while they fit in one wave; beyond that (the output head)
//     each product gets a share of the resident blocks in proportion to its groups, and a
//     block loops over its groups, loading the next one's weights while it finishes one, so a
//     block computes its rows' rstd once and no wave waits for the one before.
// `chunks` = K / (values per 16-byte chunk), 0 when the product takes the scalar path.
int choose_splits(int64_t chunks) {
  int splits = 1;
  while (splits < kWarps && chunks >= 32 * 2 * splits &&
         (chunks + 32 * splits - 1) / (32 * splits) > kUnroll)
    splits *= 2;
  return splits;
}

}  // namespace

void linear_small_many(DType dtype, const SmallProduct* all_products, int all_count, cudaStream_t stream) {
  // The large products stream (linear_stream.cu); the others stay here.
  std::vector<SmallProduct> streamed, kept;
  for (int i = 0; i < all_count; ++i)
    (linear_stream_suits(dtype, all_products[i]) ? streamed : kept).push_back(all_products[i]);
  if (!streamed.empty()) linear_stream_many(dtype, streamed.data(), static_cast<int>(streamed.size()), stream);
  const SmallProduct* products = kept.data();
  const int count = static_cast<int>(kept.size());
  const int64_t resident = static_cast<int64_t>(multiprocessor_count()) * kBlocksPerSm;  // blocks held at once
  for (int first = 0; first < count; first += kMaxSmallProducts) {
    ProductTable table{};
    table.count = std::min(kMaxSmallProducts, count - first);
    int rows = 1;
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
    const int features = rows == 1 && warps > resident * kWarps ? 2 : 1;
    int64_t groups[kMaxSmallProducts], total_groups = 0;
    for (int i = 0; i < table.count; ++i) {
      const int64_t outputs_per_group = kWarps / table.products[i].splits * features;
      groups[i] = (table.products[i].n + outputs_per_group - 1) / outputs_per_group;
      total_groups += groups[i];
    }
    int blocks = 0;
    for (int i = 0; i < table.count; ++i) {
      table.first_block[i] = blocks;
      blocks += static_cast<int>(total_groups <= resident
                                     ? groups[i]
                                     : std::clamp<int64_t>(groups[i] * resident / total_groups, 1, groups[i]));
    }
    table.first_block[table.count] = blocks;
    if (blocks == 0) continue;
    size_t shared = 0;  // the largest staged input
    for (int i = 0; i < table.count; ++i) {
      const SmallProduct& p = table.products[i];
      if (is_staged(p, dtype_size(dtype))) shared = std::max<size_t>(shared, p.m * p.k * dtype_size(dtype));
    }
    SF_DISPATCH_FLOAT(dtype, T, {
      if (rows <= 1) launch<T, 1>(table, features, blocks, shared, stream);
      else if (rows <= 2) launch<T, 2>(table, features, blocks, shared, stream);
      else if (rows <= 4) launch<T, 4>(table, features, blocks, shared, stream);
      else launch<T, 8>(table, features, blocks, shared, stream);
    });
    SF_CUDA_LAUNCH_CHECK("linear_small");
  }
}

}  // namespace sf::cuda
