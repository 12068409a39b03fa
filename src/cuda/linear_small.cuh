// linear_small.cuh — the device side of linear_small.cu: the product table a launch carries and
// the work of one block (linear_small_block), shared by the kernel of linear_small.cu and by
// the persistent decode-step kernel (step_program.cu), which runs the same blocks in turn. See
// linear_small.cu for the layout and the conventions.
//
// `Block` says how the block waits for the work before it (its inputs): `ctx.wait()` is called
// once by every thread, after the first weights are requested and before x is read. The block
// uses all kWarps * 32 threads of its CUDA block (threadIdx, __syncthreads).
#pragma once

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/product_inputs.cuh"

namespace sf::cuda::small {

constexpr int kWarps = 8;         // warps per block
constexpr int kUnroll = 4;        // 16-byte chunks per row a lane loads before using them
// Blocks a multiprocessor holds at once: the kernel is compiled for it (at most 128 registers
// a thread). Below that the loads a lane keeps in flight fit, and a launch of 2 or more rows
// no longer ran at half the occupancy of a 1-row one (148-165 registers, one block).
constexpr int kBlocksPerSm = 2;
// Input rows x' up to this size are staged in shared memory (product_inputs.cuh): every product
// of a decode step at up to 8 rows, d_model 2048 (its w2 streams: linear_stream.cu).
constexpr int64_t kMaxStagedBytes = 48 << 10;

// The kernels' row counts (their template's M): a launch of `rows` rows runs the next of 1, 2,
// 4, 8.
constexpr int row_bucket(int rows) { return rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8; }

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

template <class T, int M, int F, class Block>
__device__ __forceinline__ void linear_small_block(const ProductTable& table, int block, const Block& ctx) {
  int t = 0;
  while (t + 1 < table.count && block >= table.first_block[t + 1]) ++t;
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
  const int64_t g0 = block - table.first_block[t];
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
  ctx.wait();
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

// One launch of the small-product kernel (linear_small.cu) for this table.
void launch_table(DType dtype, const ProductTable& table, int rows, int features, int blocks,
                  size_t shared, cudaStream_t stream);

}  // namespace sf::cuda::small
