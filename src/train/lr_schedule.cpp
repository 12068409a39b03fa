// lr_schedule.cpp — warmup + cosine learning-rate schedule and its re-plans (formulas in
// lr_schedule.h).
#include "train/lr_schedule.h"

#include <algorithm>
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

namespace {

int64_t replan_anchor(const RunLrSchedule& s, const LrReplan& r) {
  return std::max(r.from_step, s.base.warmup_steps);
}

// The LR of `step` under the base schedule and its first `count` re-plans.
double lr_with_replans(const RunLrSchedule& s, size_t count, int64_t step) {
  if (count == 0) return lr_at(s.base, step);
  const LrReplan& r = s.replans[count - 1];
  const int64_t anchor = replan_anchor(s, r);
  if (step <= anchor) return lr_with_replans(s, count - 1, step);
  const double min_lr = s.base.peak_lr * s.base.min_lr_ratio;
  if (step >= r.end_step) return min_lr;
  const double anchor_lr = lr_with_replans(s, count - 1, anchor);
  const double progress =
      static_cast<double>(step - anchor) / static_cast<double>(r.end_step - anchor);
  return min_lr + (anchor_lr - min_lr) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace

void validate_lr_schedule(const RunLrSchedule& s) {
  validate_lr_schedule(s.base);
  int64_t previous_from = 0;
  for (size_t i = 0; i < s.replans.size(); ++i) {
    const LrReplan& r = s.replans[i];
    SF_CHECK(r.from_step >= previous_from,
             "lr schedule: re-plan {} starts at step {}, before the previous one (step {})", i + 1,
             r.from_step, previous_from);
    SF_CHECK(r.end_step > replan_anchor(s, r),
             "lr schedule: re-plan {} (at step {}) ends at step {}, which must be after step {} "
             "(the later of the resume step and the end of the warmup)",
             i + 1, r.from_step, r.end_step, replan_anchor(s, r));
    previous_from = r.from_step;
  }
}

double lr_at(const RunLrSchedule& s, int64_t step) {
  validate_lr_schedule(s);
  SF_CHECK(step >= 0, "lr schedule: step {} must be >= 0", step);
  return lr_with_replans(s, s.replans.size(), step);
}

int64_t lr_schedule_end(const RunLrSchedule& s) {
  return s.replans.empty() ? s.base.total_steps : s.replans.back().end_step;
}

}  // namespace sf
