// cuda_check.h — turning CUDA, cuBLASLt and NCCL status codes into sf::Error.
//
// Kept free of fmt so that .cu files (compiled by nvcc) can include it: the formatting lives
// in cuda_check.cpp. Every CUDA runtime call and every kernel launch is checked; a failure
// names the call, the file and line, and the CUDA error text.
#pragma once

#include <cuda_runtime.h>

namespace sf::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t status, const char* call, const char* file,
                                   int line);
// Checks cudaGetLastError() after a kernel launch; `kernel` names it in the message.
void check_last_launch(const char* kernel, const char* file, int line);
// The current device's multiprocessor count (checked calls): what launchers size grids by.
int multiprocessor_count();

}  // namespace sf::cuda

#define SF_CUDA_CHECK(call)                                                         \
  do {                                                                              \
    cudaError_t sf_cuda_status_ = (call);                                           \
    if (sf_cuda_status_ != cudaSuccess)                                             \
      ::sf::cuda::throw_cuda_error(sf_cuda_status_, #call, __FILE__, __LINE__);     \
  } while (0)

#define SF_CUDA_LAUNCH_CHECK(kernel_name) \
  ::sf::cuda::check_last_launch(kernel_name, __FILE__, __LINE__)
