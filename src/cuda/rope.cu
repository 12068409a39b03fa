// rope.cu — rotary position embedding in place (training layout and the decode layout).
//
// Pair (2m, 2m+1) of a head at position p rotates by p * theta^(-2m/head_dim) (rope.cuh: the
// angle in fp64, reduced before the fp32 sin/cos).
//
// Training rotates whole [B, T, H, hd] tensors: there the (cos, sin) of every (position, pair)
// comes from a table built once per (theta, head_dim) with exactly that arithmetic, so the
// rotation itself is a memory-bound pass (fp64 exp/fmod per element made it ~7x slower than
// its memory traffic). Decoding (rope_at, a few rows at arbitrary positions) computes the angles
// directly.
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"
#include "cuda/rope.cuh"

namespace sf::cuda {

namespace {

__global__ void rope_table_kernel(float2* table, int64_t positions, int64_t head_dim,
                                  double log_theta) {
  const int64_t half = head_dim / 2, total = positions * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    float c, s;
    rotation(static_cast<double>(i / half), i % half, head_dim, log_theta, 1.f, c, s);
    table[i] = make_float2(c, s);
  }
}

// One thread per P consecutive pairs of one (row, head); row r sits at position
// position_offset + r % seq and starts row_stride elements after row r - 1. P > 1 moves the
// pairs and their table entries as vectors.
template <class T, int P>
__global__ void rope_table_apply_kernel(T* x, const float2* table, int64_t rows, int64_t seq,
                                        int64_t heads, int64_t half, int64_t row_stride,
                                        int64_t position_offset, float sign) {
  const int64_t groups = half / P;
  const int64_t total = rows * heads * groups;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t group = i % groups, row_head = i / groups, row = row_head / heads;
    const float2* cs = table + (position_offset + row % seq) * half + P * group;
    T* v = x + row * row_stride + (row_head - row * heads) * 2 * half + 2 * P * group;
    if constexpr (P == 1) {
      const float c = cs->x, s = sign * cs->y;
      const float x0 = to_float(v[0]), x1 = to_float(v[1]);
      v[0] = from_float<T>(x0 * c - x1 * s);
      v[1] = from_float<T>(x0 * s + x1 * c);
    } else {
      const Pack<float2, P> angles = load_pack<P>(cs);
      Pack<T, 2 * P> pairs = load_pack<2 * P>(v);
#pragma unroll
      for (int k = 0; k < P; ++k) {
        const float c = angles.v[k].x, s = sign * angles.v[k].y;
        const float x0 = to_float(pairs.v[2 * k]), x1 = to_float(pairs.v[2 * k + 1]);
        pairs.v[2 * k] = from_float<T>(x0 * c - x1 * s);
        pairs.v[2 * k + 1] = from_float<T>(x0 * s + x1 * c);
      }
      store_pack(v, pairs);
    }
  }
}

// Decoding: row r of a [rows, heads, head_dim] tensor at positions[r]; angles computed here.
template <class T>
__global__ void rope_at_kernel(T* x, const int32_t* positions, int64_t rows, int64_t heads,
                               int64_t head_dim, double log_theta) {
  const int64_t half = head_dim / 2;
  const int64_t total = rows * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pair = i % half;
    const int64_t row = i / (half * heads);
    float c, s;
    rotation(static_cast<double>(positions[row]), pair, head_dim, log_theta, 1.f, c, s);
    T* v = x + (i / half) * head_dim + 2 * pair;
    const float x0 = to_float(v[0]), x1 = to_float(v[1]);
    v[0] = from_float<T>(x0 * c - x1 * s);
    v[1] = from_float<T>(x0 * s + x1 * c);
  }
}

template <class T, int P>
void launch_rope(T* x, const float* table, int64_t rows, int64_t seq, int64_t heads,
                 int64_t half, int64_t row_stride, int64_t offset, float sign,
                 cudaStream_t stream) {
  const int64_t total = rows * heads * (half / P);
  rope_table_apply_kernel<T, P><<<blocks_for(total, 256), 256, 0, stream>>>(
      x, reinterpret_cast<const float2*>(table), rows, seq, heads, half, row_stride, offset, sign);
}

}  // namespace

void rope_table(float* table, int64_t positions, int64_t head_dim, double theta,
                cudaStream_t stream) {
  const int64_t total = positions * (head_dim / 2);
  if (total == 0) return;
  rope_table_kernel<<<blocks_for(total, 256), 256, 0, stream>>>(
      reinterpret_cast<float2*>(table), positions, head_dim, log(theta));
  SF_CUDA_LAUNCH_CHECK("rope_table");
}

void rope(DType dtype, void* x, const float* table, int64_t rows, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t position_offset, bool inverse, cudaStream_t stream,
          int64_t row_stride) {
  const int64_t half = head_dim / 2;
  if (rows * heads * half == 0) return;
  if (row_stride == 0) row_stride = heads * head_dim;
  const float sign = inverse ? -1.f : 1.f;
  SF_DISPATCH_FLOAT(dtype, T, {
    T* data = static_cast<T*>(x);
    // Vectors need every row aligned like the first.
    if (half % 4 == 0 && all_aligned(sizeof(Pack<T, 8>), x) &&
        row_stride * sizeof(T) % sizeof(Pack<T, 8>) == 0)
      launch_rope<T, 4>(data, table, rows, seq, heads, half, row_stride, position_offset, sign,
                        stream);
    else
      launch_rope<T, 1>(data, table, rows, seq, heads, half, row_stride, position_offset, sign,
                        stream);
  });
  SF_CUDA_LAUNCH_CHECK("rope");
}

void rope_at(DType dtype, void* x, const int32_t* positions, int64_t n, int64_t heads,
             int64_t head_dim, double theta, cudaStream_t stream) {
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    rope_at_kernel<T><<<blocks_for(total, 256), 256, 0, stream>>>(
                        static_cast<T*>(x), positions, n, heads, head_dim, log(theta)));
  SF_CUDA_LAUNCH_CHECK("rope_at");
}

}  // namespace sf::cuda
