// adamw.cpp — the CPU AdamW kernel (decoupled weight decay, bias-corrected moments), fp32.
//
// The arithmetic follows torch.optim.AdamW (single-tensor path, amsgrad=False, maximize=False)
// step for step, so that the PyTorch twin of a run can be compared element by element:
//   g      = grad * grad_scale                       (grad_scale: global-norm clipping factor)
//   param *= 1 - lr * weight_decay                   (decay first, on the old parameter)
//   m      = beta1 * m + (1 - beta1) * g
//   v      = beta2 * v + (1 - beta2) * g^2
//   denom  = sqrt(v) / sqrt(1 - beta2^step) + eps    (eps added AFTER bias correction, as torch)
//   param -= lr / (1 - beta1^step) * m / denom
// Mathematically this is param -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * param) with
// the decay on the pre-step parameter (Loshchilov & Hutter). The per-step constants are computed
// in double and rounded once to float; the per-element work is fp32 like the CUDA path's
// fp32 master weights and optimizer state.
#include <cmath>

#include "core/error.h"
#include "cpu/kernels.h"

namespace sf::cpu {

void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWStep& step) {
  SF_CHECK(step.step >= 1, "adamw_update: step must be >= 1 (1-based), got {}", step.step);
  SF_CHECK(std::isfinite(step.lr) && step.lr >= 0.0, "adamw_update: learning rate {} is invalid",
           step.lr);
  SF_CHECK(step.beta1 >= 0.0 && step.beta1 < 1.0, "adamw_update: beta1 {} not in [0, 1)",
           step.beta1);
  SF_CHECK(step.beta2 >= 0.0 && step.beta2 < 1.0, "adamw_update: beta2 {} not in [0, 1)",
           step.beta2);
  SF_CHECK(step.eps > 0.0 && std::isfinite(step.eps), "adamw_update: eps {} must be > 0",
           step.eps);
  SF_CHECK(std::isfinite(step.weight_decay) && step.weight_decay >= 0.0,
           "adamw_update: weight_decay {} is invalid", step.weight_decay);
  SF_CHECK(std::isfinite(step.grad_scale), "adamw_update: grad_scale {} is not finite",
           step.grad_scale);

  const double t = static_cast<double>(step.step);
  const double bias_correction1 = 1.0 - std::pow(step.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(step.beta2, t);

  const float decay = static_cast<float>(1.0 - step.lr * step.weight_decay);
  const float step_size = static_cast<float>(step.lr / bias_correction1);
  const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float beta1 = static_cast<float>(step.beta1);
  const float one_minus_beta1 = static_cast<float>(1.0 - step.beta1);
  const float beta2 = static_cast<float>(step.beta2);
  const float one_minus_beta2 = static_cast<float>(1.0 - step.beta2);
  const float eps = static_cast<float>(step.eps);
  const float grad_scale = static_cast<float>(step.grad_scale);

  // Memory-bound: one read of four arrays and three writes per element. Threads only pay off
  // for large tensors; small ones (norm weights) stay on the calling thread.
#pragma omp parallel for schedule(static) if (n > 32768)
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad[i] * grad_scale;
    const float mi = beta1 * m[i] + one_minus_beta1 * g;
    const float vi = beta2 * v[i] + one_minus_beta2 * (g * g);
    m[i] = mi;
    v[i] = vi;
    const float denom = std::sqrt(vi) / bias_correction2_sqrt + eps;
    param[i] = param[i] * decay - step_size * (mi / denom);
  }
}

}  // namespace sf::cpu
