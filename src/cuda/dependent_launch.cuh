// dependent_launch.cuh — programmatic dependent launch (PDL, sm_90+) for the decode step's
// kernels: launch_dependent() starts a kernel while the one before it in the stream still runs,
// and the kernel's own calls order it:
//   * dependency_wait() blocks until the previous kernel has finished and its writes are
//     visible; everything before it may read only what no kernel of the step writes (weights,
//     the step's index buffers uploaded before its first kernel);
//   * dependents_may_start() lets the next kernel's blocks be scheduled. Our kernels call it
//     right after their wait, so at most one kernel runs ahead, in its prologue (a product
//     loads its first weights, which hides the launch gap and the first loads' latency).
// A kernel launched this way must call dependency_wait() before it reads anything an earlier
// kernel wrote. Kernels launched the ordinary way wait for the whole previous kernel, as ever.
// Stream capture keeps these edges in a recorded step (CUDA graph). SF_PDL=0 in the environment
// launches every kernel the ordinary way (the A/B switch of the benchmarks).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>
#include <utility>

#include "cuda/cuda_check.h"

namespace sf::cuda {

__device__ __forceinline__ void dependency_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void dependents_may_start() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// A kernel's own blocks' wait, for the device functions that take a `Block` policy (a block of
// a dependent launch: wait for the previous kernel, then let the next one start).
struct KernelDependency {
  __device__ void wait() const {
    dependency_wait();
    dependents_may_start();
  }
};

// Whether launch_dependent() asks for early launch: the current device is sm_90+ and SF_PDL is
// not "0" (read once per process).
inline bool dependent_launch_enabled() {
  static const bool enabled = [] {
    if (const char* flag = std::getenv("SF_PDL"); flag && std::strcmp(flag, "0") == 0) return false;
    int device = 0, major = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess)
      return false;
    return major >= 9;
  }();
  return enabled;
}

// kernel<<<grid, block, shared, stream>>>(args...), allowed to start early (see above).
template <class... Params, class... Args>
void launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared,
                      cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = shared;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = dependent_launch_enabled() ? 1 : 0;
  SF_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace sf::cuda
