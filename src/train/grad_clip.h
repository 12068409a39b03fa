// grad_clip.h — global gradient norm and the clipping factor passed to AdamW::step.
//
// Clipping follows torch.nn.utils.clip_grad_norm_: factor = min(1, max_norm / (norm + 1e-6)).
// The factor is not applied to the gradients here; AdamW::step multiplies each gradient by it
// inside the update (AdamWStep::grad_scale), which saves a full pass over the gradients. The
// trainer leaves even the factor to the device (global_grad_sum_squares, then
// AdamW::step(lr, sum, max_norm)) and reads the norm back only once the next step is queued.
//
// Non-finite gradients: global_grad_norm returns the inf/NaN it computed, clip_scale turns a
// non-finite norm into NaN, and AdamW::step refuses a NaN grad_scale; with the sum on the device
// the update skips itself (AdamWStep::clip_sum_squares). Either way no weight is touched: the
// trainer then reports the step and the norm and stops the run rather than corrupting the
// weights (torch would silently write NaN into every parameter).
#pragma once

#include "core/backend.h"
#include "model/parameters.h"

namespace sf {

// sqrt(sum over all parameters of sum(grad^2)), accumulated in double. Each parameter is counted
// once: shared weights are registered once in a ParameterSet.
double global_grad_norm(Backend& backend, const ParameterSet& params);

// Factor to multiply the gradients by: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0
// (clipping disabled) and the norm is finite; NaN when the norm is not finite.
double clip_scale(double norm, double max_norm);

// The same sum of squares (norm^2) into `total` (F64, one element, on the backend) without
// waiting for it: AdamW::step(lr, total, max_norm) turns it into the clipping factor where the
// update runs, so the host never stalls the GPU to read the norm before the update (the trainer
// reads it one step later, train/step_pipeline.h).
void global_grad_sum_squares(Backend& backend, const ParameterSet& params, Tensor& total);

}  // namespace sf
