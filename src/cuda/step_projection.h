// step_projection.h — reads a decode step's q, k, v projection tasks (Backend::
// attention_step_projected: three LinearTasks per block of rows) as the fused kernel's
// StepProjection (kernels.h), when they have the one structure it computes.
#pragma once

#include <vector>

#include "core/backend.h"
#include "cuda/kernels.h"

namespace sf::cuda {

// True, with `out` filled, when `tasks` are block g's q, k, v products in order, for equal
// blocks of the rows of q, k and v (contiguous [N, heads, head_dim] each): no accumulation, no
// gate; q's input normalised or not; k and v reading one input, either q's with q's norm (self-
// attention) or other rows without a norm (cross-attention's memory); one d_model and one eps.
// False for anything else (the caller runs the tasks unfused).
bool read_step_projection(const std::vector<LinearTask>& tasks, const Tensor& q, const Tensor& k,
                          const Tensor& v, StepProjection& out);

}  // namespace sf::cuda
