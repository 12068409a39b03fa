// memory_bandwidth.cu — the GPU's achievable memory bandwidth, measured now (the CUDA backend's
// Backend::measure_memory_bandwidth): what a decode step's achieved bandwidth is compared with.
//
// Two measurements over arrays of 1 GiB (far beyond the 50-60 MB L2), each the best of 10
// timed passes after one warm-up, timed with CUDA events on the backend's stream:
//   copy  a device-to-device cudaMemcpyAsync; bytes read + written, as STREAM counts them
//   read  a kernel that reads the array with 16-byte loads and keeps one sum per block (what
//         decoding does to its weights); bytes read
// The peak is the better of the two.
#include <algorithm>

#include "cuda/cuda_check.h"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

__global__ void read_kernel(const uint4* data, int64_t n, float* sums) {
  float acc = 0.f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint4 v = __ldcs(data + i);  // streaming: the array is read once per pass
    acc += __uint_as_float(v.x) + __uint_as_float(v.y) + __uint_as_float(v.z) + __uint_as_float(v.w);
  }
  __shared__ float scratch[32];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) sums[blockIdx.x] = acc;  // keeps the loads from being optimised away
}

// Best seconds of `passes` timed runs of `work` after one warm-up.
template <class Work>
double best_seconds(cudaStream_t stream, int passes, Work&& work) {
  cudaEvent_t start, stop;
  SF_CUDA_CHECK(cudaEventCreate(&start));
  SF_CUDA_CHECK(cudaEventCreate(&stop));
  work();
  double best = 1e30;
  for (int p = 0; p < passes; ++p) {
    SF_CUDA_CHECK(cudaEventRecord(start, stream));
    work();
    SF_CUDA_CHECK(cudaEventRecord(stop, stream));
    SF_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.f;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    best = std::min(best, ms * 1e-3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return best;
}

}  // namespace

MemoryBandwidth measure_device_bandwidth(cudaStream_t stream) {
  MemoryBandwidth result;
  size_t free_bytes = 0, total_bytes = 0;
  SF_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  // 1 GiB per array, less where the GPU has less free (two arrays, room left for others).
  size_t bytes = size_t{1} << 30;
  while (bytes > (size_t{64} << 20) && 3 * bytes > free_bytes) bytes /= 2;
  void* a = nullptr;
  void* b = nullptr;
  float* sums = nullptr;
  const int blocks = multiprocessor_count() * 8, threads = 512;
  SF_CUDA_CHECK(cudaMalloc(&a, bytes));
  SF_CUDA_CHECK(cudaMalloc(&b, bytes));
  SF_CUDA_CHECK(cudaMalloc(&sums, blocks * sizeof(float)));
  SF_CUDA_CHECK(cudaMemsetAsync(a, 0, bytes, stream));
  const int passes = 10;
  const double copy_s = best_seconds(stream, passes, [&] {
    SF_CUDA_CHECK(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
  });
  const double read_s = best_seconds(stream, passes, [&] {
    read_kernel<<<blocks, threads, 0, stream>>>(static_cast<const uint4*>(a),
                                                static_cast<int64_t>(bytes / sizeof(uint4)), sums);
    SF_CUDA_LAUNCH_CHECK("read_kernel");
  });
  SF_CUDA_CHECK(cudaStreamSynchronize(stream));
  cudaFree(a);
  cudaFree(b);
  cudaFree(sums);
  result.copy_gb_s = 2.0 * static_cast<double>(bytes) / copy_s / 1e9;
  result.read_gb_s = static_cast<double>(bytes) / read_s / 1e9;
  result.array_bytes = static_cast<int64_t>(bytes);
  result.repetitions = passes;
  return result;
}

}  // namespace sf::cuda
