// linear_small.cu — out = x @ W^T (+ addend) for a few rows (decoding: one row per sequence and
// stack), several independent products in one launch (Backend::linear_many; CudaBackend::matmul
// sends its small-row products here too). Batch-1 decoding is memory-bound: each weight is read
// once, with 16-byte loads, while the rows of x stay in L1/L2.
//
// Layout and conventions: W [N, K] row-major (a linear layer's PyTorch layout), x [M, K],
// out and addend [M, N]; one dtype (F32 or BF16) for x, W, out and addend; fp32 accumulation.
// One warp computes one output feature n for all M rows: its lanes stride over K (8 BF16 or 4
// F32 values per 16-byte load), then a warp sum. Input transforms, each rounded to the dtype as
// the unfused kernel would have stored its output (the gate agrees with swiglu_forward bit for
// bit; the norm to rounding, its rstd summed in another order than rmsnorm_forward's):
//   * norm (a decode step's RMSNorm fused into its projections): each block first computes the
//     rows' rstd from x (in L2) and forms the normalised values on the fly;
//   * gate (the MLP's SwiGLU fused into w2): x' = silu(gate) * x.
// Blocks of kWarps warps take consecutive features of one product; the products' blocks follow
// each other in the grid (first_block), and the product table travels as a kernel parameter
// (no upload; CUDA graphs keep it). Launched as a dependent launch (dependent_launch.cuh): the
// first kUnroll loads of each weight row are issued before the wait for the previous kernel.
#include <algorithm>

#include "cuda/dependent_launch.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

constexpr int kWarps = 8;  // warps (features) per block

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
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t n = static_cast<int64_t>(blockIdx.x - table.first_block[t]) * kWarps + warp;
  const T* w = static_cast<const T*>(p.w) + min(n, p.n - 1) * p.k;  // (warps past N idle below)
  constexpr int V = 16 / sizeof(T);  // values per 16-byte load
  // kUnroll 16-byte loads of W in flight per lane before they are used: a decode product is
  // a few MB, read in one wave, so the time is the loads' latency unless many are in flight.
  // The first group is loaded before the wait for the kernel that writes x.
  constexpr int kUnroll = 4;
  float wv[kUnroll][V];
  const int64_t c_first = static_cast<int64_t>(lane) * V;
  if (p.vector_loads) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = c_first + u * 32 * V;
      if (c < p.k) load_chunk(w + c, wv[u]);
    }
  }
  dependency_wait();
  dependents_may_start();
  // The rows' rstd when the product normalises its input: every thread of the block takes part
  // (before any warp leaves), each block recomputing it from x in L2.
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
  if (n >= p.n) return;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.f;
  if (p.vector_loads) {
    for (int64_t c0 = c_first; c0 < p.k; c0 += 32 * V * kUnroll) {
      if (c0 != c_first) {
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t c = c0 + u * 32 * V;
          if (c < p.k) load_chunk(w + c, wv[u]);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = c0 + u * 32 * V;
        if (c >= p.k) break;
        float nv[V];
        if (norm) load_chunk(norm + c, nv);
#pragma unroll
        for (int m = 0; m < M; ++m) {
          if (m < p.m) {
            float xv[V];
            load_chunk(x + m * p.k + c, xv);
            if (norm) {
#pragma unroll
              for (int i = 0; i < V; ++i) xv[i] = to_float(from_float<T>(xv[i] * rstd[m] * nv[i]));
            } else if (gate) {
              float gv[V];
              load_chunk(gate + m * p.k + c, gv);
#pragma unroll
              for (int i = 0; i < V; ++i) xv[i] = gated_value<T>(xv[i], gv[i]);
            }
#pragma unroll
            for (int i = 0; i < V; ++i) acc[m] = fmaf(wv[u][i], xv[i], acc[m]);
          }
        }
      }
    }
  } else {  // K not a multiple of the vector width, or unaligned rows
    for (int64_t c = lane; c < p.k; c += 32) {
      const float wc = to_float(w[c]);
#pragma unroll
      for (int m = 0; m < M; ++m)
        if (m < p.m) {
          float xc = input_value(to_float(x[m * p.k + c]), norm, c, norm ? rstd[m] : 1.f);
          if (gate) xc = gated_value<T>(xc, to_float(gate[m * p.k + c]));
          acc[m] = fmaf(wc, xc, acc[m]);
        }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = warp_sum(acc[m]);
  if (lane != 0) return;
  T* out = static_cast<T*>(p.out);
  const T* addend = static_cast<const T*>(p.addend);
#pragma unroll
  for (int m = 0; m < M; ++m) {
    if (m < p.m) {
      float value = acc[m];
      if (addend) value += to_float(addend[m * p.n + n]);
      out[m * p.n + n] = from_float<T>(value);
    }
  }
}

template <class T, int M>
void launch(const ProductTable& table, int blocks, cudaStream_t stream) {
  launch_dependent(linear_small_kernel<T, M>, dim3(blocks), dim3(kWarps * 32), 0, stream, table);
}

}  // namespace

void linear_small_many(DType dtype, const SmallProduct* products, int count, cudaStream_t stream) {
  for (int first = 0; first < count; first += kMaxSmallProducts) {
    ProductTable table{};
    table.count = std::min(kMaxSmallProducts, count - first);
    int blocks = 0, rows = 1;
    for (int i = 0; i < table.count; ++i) {
      SmallProduct p = products[first + i];
      const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
      const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
      p.vector_loads = p.k % vector == 0 && aligned(p.w) && aligned(p.x) &&
                       (p.norm == nullptr || aligned(p.norm)) && (p.gate == nullptr || aligned(p.gate));
      table.products[i] = p;
      table.first_block[i] = blocks;
      blocks += static_cast<int>((p.n + kWarps - 1) / kWarps);
      rows = std::max<int>(rows, static_cast<int>(p.m));
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
