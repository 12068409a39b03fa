// adamw.cu — one AdamW step on F32 master weights and moments, the same per-element arithmetic
// as the CPU kernel (src/cpu/adamw.cpp, which follows torch.optim.AdamW step for step).
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                             AdamWArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grad[i] * a.grad_scale;
    const float mi = a.beta1 * m[i] + a.one_minus_beta1 * g;
    const float vi = a.beta2 * v[i] + a.one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    const float denom = sqrtf(vi) / a.bias_correction2_sqrt + a.eps;
    param[i] = param[i] * a.decay - a.step_size * (mi / denom);
  }
}

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWArgs& args, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(param, grad, m, v, n, args);
  SF_CUDA_LAUNCH_CHECK("adamw_update");
}

}  // namespace sf::cuda
