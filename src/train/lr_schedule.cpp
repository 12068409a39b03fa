// lr_schedule.cpp — warmup + cosine learning-rate schedule (formula in lr_schedule.h).
#include "train/lr_schedule.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace sf {

void validate_lr_schedule(const LrSchedule& s) {
  SF_CHECK(std::isfinite(s.peak_lr) && s.peak_lr >= 0.0,
           "lr schedule: peak_lr = {} must be finite and >= 0", s.peak_lr);
  SF_CHECK(s.min_lr_ratio >= 0.0 && s.min_lr_ratio <= 1.0,
           "lr schedule: min_lr_ratio = {} must be in [0, 1]", s.min_lr_ratio);
  SF_CHECK(s.warmup_steps >= 0, "lr schedule: warmup_steps = {} must be >= 0", s.warmup_steps);
  SF_CHECK(s.total_steps >= 1, "lr schedule: total_steps = {} must be >= 1", s.total_steps);
  SF_CHECK(s.warmup_steps <= s.total_steps,
           "lr schedule: warmup_steps = {} exceeds total_steps = {}", s.warmup_steps,
           s.total_steps);
}

double lr_at(const LrSchedule& s, int64_t step) {
  validate_lr_schedule(s);
  SF_CHECK(step >= 0, "lr schedule: step {} must be >= 0", step);
  const double min_lr = s.peak_lr * s.min_lr_ratio;
  if (step < s.warmup_steps) {
    return s.peak_lr * static_cast<double>(step) / static_cast<double>(s.warmup_steps);
  }
  if (step >= s.total_steps) return min_lr;
  // Here warmup_steps <= step < total_steps, so the cosine span is at least one step.
  const double progress = static_cast<double>(step - s.warmup_steps) /
                          static_cast<double>(s.total_steps - s.warmup_steps);
  return min_lr + (s.peak_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace sf
