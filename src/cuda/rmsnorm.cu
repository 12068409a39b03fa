// rmsnorm.cu — RMSNorm forward and backward (fp32 statistics, F32 or BF16 rows).
//
// Rows whose length is a multiple of 8 and at most 1024 (every model dimension we train) take the
// fast path: one warp per row, 8 elements per 16- or 32-byte access, the row's weights and (in
// backward) its partial weight gradient in registers; the block's warps add their partial weight
// gradients in shared memory and the block adds them to the F32 gradient once (one atomic per
// column per block). Other rows take the general path: one block per row (forward), or a block
// walking a range of rows with its partial weight gradient in shared memory (backward).
//   y = x * r * w,  r = 1/sqrt(mean(x^2) + eps)
//   dx = r * (w*dy) - x * r^3 * mean(w*dy*x),   dw += dy * x * r
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

#include <algorithm>

namespace sf::cuda {

namespace {

constexpr int kThreads = 256;

template <class T, class W>
__global__ void rmsnorm_forward_kernel(T* out, float* rstd, const T* x, const W* weight,
                                       int64_t dim, float eps) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const T* xr = x + row * dim;
  float sum = 0.f;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    const float v = to_float(xr[j]);
    sum += v * v;
  }
  sum = block_sum(sum, scratch);
  const float r = rsqrtf(sum / static_cast<float>(dim) + eps);
  if (threadIdx.x == 0) rstd[row] = r;
  T* yr = out + row * dim;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
    yr[j] = from_float<T>(to_float(xr[j]) * r * to_float(weight[j]));
}

template <class T, class W>
__global__ void rmsnorm_backward_kernel(T* dx, float* dweight, const T* dout, const T* x,
                                        const W* weight, const float* rstd, int64_t rows,
                                        int64_t dim, int64_t rows_per_block) {
  extern __shared__ float dweight_partial[];  // [dim]
  __shared__ float scratch[32];
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) dweight_partial[j] = 0.f;
  const int64_t first = blockIdx.x * rows_per_block;
  const int64_t last = min(rows, first + rows_per_block);
  for (int64_t row = first; row < last; ++row) {
    const T* xr = x + row * dim;
    const T* dyr = dout + row * dim;
    const float r = rstd[row];
    float dot = 0.f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
      dot += to_float(dyr[j]) * to_float(weight[j]) * to_float(xr[j]);
    dot = block_sum(dot, scratch);
    const float coef = dot / static_cast<float>(dim) * r * r * r;
    T* dxr = dx + row * dim;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
      const float xv = to_float(xr[j]), dy = to_float(dyr[j]);
      dxr[j] = from_float<T>(to_float(dxr[j]) + r * dy * to_float(weight[j]) - xv * coef);
      dweight_partial[j] += dy * xv * r;
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) atomicAdd(dweight + j, dweight_partial[j]);
}

constexpr int kVec = 8;            // elements per access on the fast path
constexpr int kMaxVecsPerLane = 4;  // rows up to 32 lanes * 4 * 8 = 1024 elements
constexpr int kRowsPerBlock = kThreads / 32;

template <class T, class W>
__global__ void rmsnorm_forward_warp_kernel(T* out, float* rstd, const T* x, const W* weight,
                                            int64_t rows, int64_t dim, float eps) {
  const int lane = threadIdx.x & 31;
  const int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + threadIdx.x / 32;
  if (row >= rows) return;
  const T* xr = x + row * dim;
  const int64_t vecs = dim / kVec;
  float sum = 0.f;
  for (int64_t c = lane; c < vecs; c += 32) {
    const Pack<T, kVec> p = load_pack<kVec>(xr + c * kVec);
#pragma unroll
    for (int j = 0; j < kVec; ++j) sum += to_float(p.v[j]) * to_float(p.v[j]);
  }
  sum = warp_sum(sum);
  const float r = rsqrtf(sum / static_cast<float>(dim) + eps);
  if (lane == 0) rstd[row] = r;
  T* yr = out + row * dim;
  for (int64_t c = lane; c < vecs; c += 32) {
    const Pack<T, kVec> p = load_pack<kVec>(xr + c * kVec);  // an L1 hit: the row was just read
    const Pack<W, kVec> w = load_pack<kVec>(weight + c * kVec);
    Pack<T, kVec> y;
#pragma unroll
    for (int j = 0; j < kVec; ++j) y.v[j] = from_float<T>(to_float(p.v[j]) * r * to_float(w.v[j]));
    store_pack(yr + c * kVec, y);
  }
}

// One row's reads on the backward fast path: x, dy and the dx it adds to, K vectors per lane.
template <class T, int K> struct BackwardRow {
  Pack<T, kVec> x[K], dy[K], dx[K];
};

// K = vectors per lane (the row has at most 32 * K * kVec elements). Each warp walks its rows
// with the next row's reads issued before the current row's reduction (two rows in flight: one
// at a time left the kernel at ~2/3 of the memory bandwidth, H100); the weights sit in shared
// memory to leave the registers to the two rows.
template <class T, class W, int K>
__global__ void rmsnorm_backward_warp_kernel(T* dx, float* dweight, const T* dout, const T* x,
                                             const W* weight, const float* rstd, int64_t rows,
                                             int64_t dim) {
  constexpr int kMaxDim = 32 * kMaxVecsPerLane * kVec;
  __shared__ float partial[kRowsPerBlock][kMaxDim];
  __shared__ float w[kMaxDim];
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int64_t vecs = dim / kVec;
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) w[j] = to_float(weight[j]);
  __syncthreads();
  float dw[K][kVec];
#pragma unroll
  for (int k = 0; k < K; ++k)
#pragma unroll
    for (int j = 0; j < kVec; ++j) dw[k][j] = 0.f;
  auto load = [&](int64_t row, BackwardRow<T, K>& d) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t c = lane + 32 * k;
      if (c >= vecs) continue;
      d.x[k] = load_pack<kVec>(x + row * dim + c * kVec);
      d.dy[k] = load_pack<kVec>(dout + row * dim + c * kVec);
      d.dx[k] = load_pack<kVec>(dx + row * dim + c * kVec);
    }
  };
  const int64_t step = int64_t(gridDim.x) * kRowsPerBlock;
  int64_t row = blockIdx.x * int64_t(kRowsPerBlock) + warp;
  BackwardRow<T, K> cur, next;
  if (row < rows) load(row, cur);
  for (; row < rows; row += step) {
    if (row + step < rows) load(row + step, next);
    const float r = rstd[row];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t c = lane + 32 * k;
      if (c >= vecs) continue;
#pragma unroll
      for (int j = 0; j < kVec; ++j)
        dot += to_float(cur.dy[k].v[j]) * w[c * kVec + j] * to_float(cur.x[k].v[j]);
    }
    dot = warp_sum(dot);
    const float coef = dot / static_cast<float>(dim) * r * r * r;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const int64_t c = lane + 32 * k;
      if (c >= vecs) continue;
      Pack<T, kVec> g = cur.dx[k];
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        const float xv = to_float(cur.x[k].v[j]), dy = to_float(cur.dy[k].v[j]);
        g.v[j] = from_float<T>(to_float(g.v[j]) + r * dy * w[c * kVec + j] - xv * coef);
        dw[k][j] += dy * xv * r;
      }
      store_pack(dx + row * dim + c * kVec, g);
    }
    cur = next;
  }
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const int64_t c = lane + 32 * k;
    if (c >= vecs) continue;
#pragma unroll
    for (int j = 0; j < kVec; ++j) partial[warp][c * kVec + j] = dw[k][j];
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < dim; j += blockDim.x) {
    float total = 0.f;
#pragma unroll
    for (int v = 0; v < kRowsPerBlock; ++v) total += partial[v][j];
    atomicAdd(dweight + j, total);
  }
}

// Whether rows of `dim` elements take the warp-per-row path.
template <class T, class W, class... Rows>
bool fast_path(int64_t dim, const void* weight, const Rows*... rows) {
  return dim % kVec == 0 && dim <= 32 * kMaxVecsPerLane * kVec &&
         all_aligned(sizeof(Pack<T, kVec>), rows...) && all_aligned(sizeof(Pack<W, kVec>), weight);
}

}  // namespace

void rmsnorm_forward(DType dtype, void* out, float* rstd, const void* x, DType weight_dtype,
                     const void* weight, int64_t rows, int64_t dim, float eps,
                     cudaStream_t stream) {
  if (rows == 0) return;
  SF_DISPATCH_FLOAT(dtype, T, SF_DISPATCH_FLOAT(weight_dtype, W, {
    if (fast_path<T, W>(dim, weight, out, x))
      rmsnorm_forward_warp_kernel<T, W>
          <<<(rows + kRowsPerBlock - 1) / kRowsPerBlock, kThreads, 0, stream>>>(
              static_cast<T*>(out), rstd, static_cast<const T*>(x), static_cast<const W*>(weight),
              rows, dim, eps);
    else
      rmsnorm_forward_kernel<T, W><<<rows, kThreads, 0, stream>>>(
          static_cast<T*>(out), rstd, static_cast<const T*>(x), static_cast<const W*>(weight),
          dim, eps);
  }));
  SF_CUDA_LAUNCH_CHECK("rmsnorm_forward");
}

void rmsnorm_backward(DType dtype, void* dx, float* dweight, const void* dout, const void* x,
                      DType weight_dtype, const void* weight, const float* rstd, int64_t rows,
                      int64_t dim, cudaStream_t stream) {
  if (rows == 0) return;
  bool done = false;
  SF_DISPATCH_FLOAT(dtype, T, SF_DISPATCH_FLOAT(weight_dtype, W, {
    if (fast_path<T, W>(dim, weight, dx, dout, x)) {
      const int64_t grid = std::min<int64_t>((rows + kRowsPerBlock - 1) / kRowsPerBlock, 132 * 2);
      const int lanes_vecs = static_cast<int>((dim / kVec + 31) / 32);
      auto launch = [&](auto kernel) {
        kernel<<<grid, kThreads, 0, stream>>>(static_cast<T*>(dx), dweight,
                                              static_cast<const T*>(dout), static_cast<const T*>(x),
                                              static_cast<const W*>(weight), rstd, rows, dim);
      };
      if (lanes_vecs <= 1) launch(rmsnorm_backward_warp_kernel<T, W, 1>);
      else if (lanes_vecs == 2) launch(rmsnorm_backward_warp_kernel<T, W, 2>);
      else if (lanes_vecs == 3) launch(rmsnorm_backward_warp_kernel<T, W, 3>);
      else launch(rmsnorm_backward_warp_kernel<T, W, 4>);
      done = true;
    }
  }));
  if (done) {
    SF_CUDA_LAUNCH_CHECK("rmsnorm_backward");
    return;
  }
  const int64_t blocks = rows < 132 * 4 ? rows : 132 * 4;
  const int64_t rows_per_block = (rows + blocks - 1) / blocks;
  const int64_t grid = (rows + rows_per_block - 1) / rows_per_block;
  const size_t shared = static_cast<size_t>(dim) * sizeof(float);
  SF_DISPATCH_FLOAT(dtype, T, SF_DISPATCH_FLOAT(weight_dtype, W, {
    auto kernel = rmsnorm_backward_kernel<T, W>;
    if (shared > 48 * 1024)
      SF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(shared)));
    kernel<<<grid, kThreads, shared, stream>>>(
        static_cast<T*>(dx), dweight, static_cast<const T*>(dout), static_cast<const T*>(x),
        static_cast<const W*>(weight), rstd, rows, dim, rows_per_block);
  }));
  SF_CUDA_LAUNCH_CHECK("rmsnorm_backward");
}

}  // namespace sf::cuda
