// cuda_check.cpp — formatting of CUDA failures into sf::Error (see cuda_check.h).
#include "cuda/cuda_check.h"

#include "core/error.h"

namespace sf::cuda {

void throw_cuda_error(cudaError_t status, const char* call, const char* file, int line) {
  if (status == cudaErrorMemoryAllocation) {
    size_t free_bytes = 0, total_bytes = 0;
    cudaGetLastError();  // clear the sticky-free allocation error before asking
    cudaMemGetInfo(&free_bytes, &total_bytes);
    fail(fmt::format("CUDA out of memory in {} ({}:{}): {:.1f} GiB free of {:.1f} GiB; use a "
                     "smaller --batch or --seq",
                     call, file, line, free_bytes / 1073741824.0, total_bytes / 1073741824.0));
  }
  fail(fmt::format("CUDA error in {} ({}:{}): {} ({})", call, file, line,
                   cudaGetErrorString(status), cudaGetErrorName(status)));
}

void check_last_launch(const char* kernel, const char* file, int line) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throw_cuda_error(status, kernel, file, line);
}

int multiprocessor_count() {
  int device = 0, count = 0;
  SF_CUDA_CHECK(cudaGetDevice(&device));
  SF_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, device));
  return count;
}

}  // namespace sf::cuda
