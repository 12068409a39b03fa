// grad_clip.cpp — global gradient norm over a ParameterSet and the clipping factor.
#include "train/grad_clip.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace sf {

double global_grad_norm(Backend& backend, const ParameterSet& params) {
  return std::sqrt(backend.sum_squares_total(params.gradients()));
}

double clip_scale(double norm, double max_norm) {
  SF_CHECK(!std::isnan(max_norm), "clip_scale: max_norm is NaN");
  // Even with clipping disabled a non-finite norm must not yield a usable factor.
  if (!std::isfinite(norm)) return std::numeric_limits<double>::quiet_NaN();
  SF_CHECK(norm >= 0.0, "clip_scale: gradient norm {} is negative", norm);
  return clip_factor(norm, max_norm);
}

void global_grad_sum_squares(Backend& backend, const ParameterSet& params, Tensor& total) {
  backend.sum_squares_total_into(total, params.gradients());
}

}  // namespace sf
