// bench_util.cuh — what the one-kernel developer benchmarks of bench/cuda/ share: a CUDA error
// check that exits, a recorded chain of launches timed by its best replay, the device's peak
// bandwidth (the memory floor's denominator, measured as `stagformer bench` does) and random
// BF16 device buffers (never zeros: kernels can run faster on zeros than on real data).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "core/memory_bandwidth.h"
#include "cuda/kernels.h"

namespace bench {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    std::fprintf(stderr, "bench: %s: %s\n", what, cudaGetErrorString(status));
    std::exit(1);
  }
}

__global__ void empty_kernel() {}

// Microseconds per call of `launch`, from a recorded chain of `launches` calls (CUDA graph, as a
// decode step runs), best of 5 replays after one warm-up. launch(i) gets the call's index.
template <class Launch>
double time_chain(cudaStream_t stream, int launches, Launch launch) {
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed), "capture");
  for (int i = 0; i < launches; ++i) launch(i);
  check(cudaStreamEndCapture(stream, &graph), "end capture");
  check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  check(cudaGraphLaunch(exec, stream), "warm-up");
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    check(cudaEventRecord(start, stream), "record");
    check(cudaGraphLaunch(exec, stream), "replay");
    check(cudaEventRecord(stop, stream), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    best = std::min(best, 1000.0 * ms / launches);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return best;
}

// The microseconds of an empty kernel in such a chain: the launch floor.
inline double empty_launch_us(cudaStream_t stream, int launches) {
  return time_chain(stream, launches, [&](int) { empty_kernel<<<1, 32, 0, stream>>>(); });
}

// The device's peak bandwidth in bytes/s as `stagformer bench` measures it in the same run (the
// best of a copy, a triad and a read kernel over 1 GiB arrays: cuda/memory_bandwidth.cu), so the
// kernel benchmarks' fractions of the floor compare with the decode benchmark's.
inline double peak_bandwidth(cudaStream_t stream) {
  return sf::cuda::measure_device_bandwidth(stream).peak_gb_s() * 1e9;
}

// What every kernel benchmark starts with: its stream, the peak bandwidth and the launch floor,
// printed as the record's heading ("# <what> on <GPU>: ...").
struct Setup {
  cudaStream_t stream;
  double bandwidth;  // bytes/s
  double empty_us;   // an empty kernel per launch in a chain
};
inline Setup begin(const char* what, int launches) {
  Setup s;
  check(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking), "stream");
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "device");
  s.bandwidth = peak_bandwidth(s.stream);
  s.empty_us = empty_launch_us(s.stream, launches);
  std::printf("# %s on %s: %d launches per chain, peak bandwidth %.2f TB/s, empty kernel %.2f us/launch\n\n",
              what, prop.name, launches, s.bandwidth / 1e12, s.empty_us);
  return s;
}

// `count` BF16 values drawn from N(0, scale^2), on the device.
inline __nv_bfloat16* device_random(size_t count, std::mt19937& rng, float scale = 1.f) {
  std::normal_distribution<float> normal(0.f, scale);
  std::vector<__nv_bfloat16> host(count);
  for (auto& v : host) v = __float2bfloat16(normal(rng));
  __nv_bfloat16* p;
  check(cudaMalloc(&p, count * sizeof(__nv_bfloat16)), "malloc");
  check(cudaMemcpy(p, host.data(), count * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice), "upload");
  return p;
}

inline int32_t* device_ints(const std::vector<int32_t>& v) {
  int32_t* p;
  check(cudaMalloc(&p, v.size() * sizeof(int32_t)), "malloc");
  check(cudaMemcpy(p, v.data(), v.size() * sizeof(int32_t), cudaMemcpyHostToDevice), "upload");
  return p;
}

}  // namespace bench
