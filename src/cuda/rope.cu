// rope.cu — rotary position embedding in place (training layout and the decode layout).
//
// Pair (2m, 2m+1) of a head at position p rotates by p * theta^(-2m/head_dim). The angle is
// formed in fp64 and reduced before the fp32 sin/cos, as on the CPU: at position 1000 an fp32
// angle would already be off by ~1e-4 rad.
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

__device__ __forceinline__ void rotation(double position, int64_t pair, int64_t head_dim,
                                         double log_theta, float sign, float& c, float& s) {
  const double inv_freq = exp(-2.0 * static_cast<double>(pair) / head_dim * log_theta);
  double angle = fmod(position * inv_freq, 6.283185307179586476925);
  sincosf(static_cast<float>(angle), &s, &c);
  s *= sign;
}

// One thread per (row, head, pair); row r of a [rows, heads, head_dim] tensor sits at
// position position_offset + r % seq, or positions[r] when `positions` is given.
template <class T>
__global__ void rope_kernel(T* x, const int32_t* positions, int64_t rows, int64_t seq,
                            int64_t heads, int64_t head_dim, double log_theta,
                            int64_t position_offset, float sign) {
  const int64_t half = head_dim / 2;
  const int64_t total = rows * heads * half;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t pair = i % half;
    const int64_t row = i / (half * heads);
    const double position = positions ? static_cast<double>(positions[row])
                                      : static_cast<double>(position_offset + row % seq);
    float c, s;
    rotation(position, pair, head_dim, log_theta, sign, c, s);
    T* v = x + (i / half) * head_dim + 2 * pair;
    const float x0 = to_float(v[0]), x1 = to_float(v[1]);
    v[0] = from_float<T>(x0 * c - x1 * s);
    v[1] = from_float<T>(x0 * s + x1 * c);
  }
}

}  // namespace

void rope(DType dtype, void* x, int64_t rows, int64_t seq, int64_t heads, int64_t head_dim,
          double theta, int64_t position_offset, bool inverse, cudaStream_t stream) {
  const int64_t total = rows * heads * (head_dim / 2);
  if (total == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    rope_kernel<T><<<blocks_for(total, 256), 256, 0, stream>>>(
                        static_cast<T*>(x), nullptr, rows, seq, heads, head_dim, log(theta),
                        position_offset, inverse ? -1.f : 1.f));
  SF_CUDA_LAUNCH_CHECK("rope");
}

void rope_at(DType dtype, void* x, const int32_t* positions, int64_t n, int64_t heads,
             int64_t head_dim, double theta, cudaStream_t stream) {
  const int64_t total = n * heads * (head_dim / 2);
  if (total == 0) return;
  SF_DISPATCH_FLOAT(dtype, T,
                    rope_kernel<T><<<blocks_for(total, 256), 256, 0, stream>>>(
                        static_cast<T*>(x), positions, n, 1, heads, head_dim, log(theta), 0,
                        1.f));
  SF_CUDA_LAUNCH_CHECK("rope_at");
}

}  // namespace sf::cuda
