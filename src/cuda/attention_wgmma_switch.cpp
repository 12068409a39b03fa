// attention_wgmma_switch.cpp — whether the Hopper (wgmma) attention kernels run
// (attention_kernels.h): on by default, only on compute capability 9.0, where their sm_90a
// images load.
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/attention_kernels.h"

namespace sf::cuda {

namespace {
std::atomic<bool> g_wgmma_enabled{true};
}  // namespace

void set_wgmma_attention(bool enabled) { g_wgmma_enabled.store(enabled); }

bool wgmma_attention_active() {
  if (!g_wgmma_enabled.load(std::memory_order_relaxed)) return false;
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess)
    return false;
  return major == 9 && minor == 0;  // an sm_90a image runs on compute capability 9.0 only
}

}  // namespace sf::cuda
