// adamw.cu — AdamW steps on F32 master weights and moments, the same per-element arithmetic
// as the CPU kernel (src/cpu/adamw.cpp, which follows torch.optim.AdamW step for step): one
// parameter per launch, or every parameter of a model in one launch (blocks take chunks of the
// tensors in turn, kernels.h ManyLayout; 4 elements per access where the tensor allows). The
// many-tensor launch can also write each new parameter value, rounded, into the parameter's
// working copy (mixed precision's BF16 weights): that saves the separate conversion pass, which
// would read the F32 masters once more. It can also take its clipping factor from the gradient
// norm on the device, so that the host never waits for the norm before the update.
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace sf::cuda {

namespace {

__device__ __forceinline__ void adamw_element(float& param, float grad, float& m, float& v,
                                              float decay, const AdamWArgs& a) {
  const float g = grad * a.grad_scale;
  const float mi = a.beta1 * m + a.one_minus_beta1 * g;
  const float vi = a.beta2 * v + a.one_minus_beta2 * (g * g);
  m = mi;
  v = vi;
  const float denom = sqrtf(vi) / a.bias_correction2_sqrt + a.eps;
  param = param * decay - a.step_size * (mi / denom);
}

__global__ void adamw_kernel(float* param, const float* grad, float* m, float* v, int64_t n,
                             AdamWArgs a) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    adamw_element(param[i], grad[i], m[i], v[i], a.decay, a);
}

// The gradient scale of this launch: the host's, or the clipping factor computed from the
// device-side sum of squares exactly as clip_scale (train/grad_clip.cpp) computes it in double.
// False: the gradients are not finite, nothing may be updated.
__device__ __forceinline__ bool launch_grad_scale(const AdamWTable& t, AdamWArgs& a) {
  if (!t.clip_sum_squares) return true;
  const double sum = *t.clip_sum_squares;
  if (!isfinite(sum)) return false;
  a.grad_scale = t.max_norm > 0.0 ? static_cast<float>(fmin(1.0, t.max_norm / (sqrt(sum) + 1e-6)))
                                  : 1.0f;
  return true;
}

// W: the working copies' type (float when the launch has none; then every working[k] is null).
template <class W> __global__ void adamw_many_kernel(AdamWTable t, AdamWArgs a) {
  if (!launch_grad_scale(t, a)) return;
  for_each_many_chunk(t.layout, [&](int k, int64_t begin, int64_t end) {
    float* param = t.params[k];
    const float* grad = t.grads[k];
    float *m = t.m[k], *v = t.v[k];
    W* working = static_cast<W*>(t.working[k]);  // null: no working copy
    const float decay = t.decays[k];
    const bool vector_ok =
        all_aligned(16, param, grad, m, v) && all_aligned(4 * sizeof(W), working);
    for_each_chunk_piece(begin, end, vector_ok, [&](int64_t i, int count) {
      if (count == 4) {
        Pack<float, 4> p = load_pack<4>(param + i), g = load_pack<4>(grad + i),
                       mm = load_pack<4>(m + i), vv = load_pack<4>(v + i);
#pragma unroll
        for (int j = 0; j < 4; ++j) adamw_element(p.v[j], g.v[j], mm.v[j], vv.v[j], decay, a);
        store_pack(param + i, p);
        store_pack(m + i, mm);
        store_pack(v + i, vv);
        if (working) {
          Pack<W, 4> w;
#pragma unroll
          for (int j = 0; j < 4; ++j) w.v[j] = from_float<W>(p.v[j]);
          store_pack(working + i, w);
        }
      } else {
        adamw_element(param[i], grad[i], m[i], v[i], decay, a);
        if (working) working[i] = from_float<W>(param[i]);
      }
    });
  });
}

}  // namespace

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWArgs& args, cudaStream_t stream) {
  if (n == 0) return;
  adamw_kernel<<<blocks_for(n, 256), 256, 0, stream>>>(param, grad, m, v, n, args);
  SF_CUDA_LAUNCH_CHECK("adamw_update");
}

void adamw_update_many(const AdamWTable& table, const AdamWArgs& args, cudaStream_t stream) {
  if (table.layout.chunks == 0) return;
  SF_DISPATCH_FLOAT(table.working_dtype, W,
                    adamw_many_kernel<W><<<many_blocks(table.layout.chunks), 256, 0, stream>>>(
                        table, args));
  SF_CUDA_LAUNCH_CHECK("adamw_update_many");
}

}  // namespace sf::cuda
