// lr_schedule.h — the learning-rate schedule: linear warmup, then cosine decay to a floor.
//
//   step 0 .. warmup_steps:       lr = peak_lr * step / warmup_steps     (step 1 -> peak/warmup)
//   warmup_steps .. total_steps:  lr = min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2,
//                                 progress = (step - warmup_steps) / (total_steps - warmup_steps)
//   after total_steps:            lr = min_lr
// with min_lr = peak_lr * min_lr_ratio. The floor is a ratio (llm.c's final_lr_frac) rather than
// an absolute value so that overriding the peak on the command line moves the floor with it.
// `step` is the 1-based number of the optimizer update about to be taken (AdamW's step count
// after the update), so the first update uses peak/warmup and never a zero learning rate.
#pragma once

#include <cstdint>

namespace sf {

struct LrSchedule {
  double peak_lr = 3e-4;
  double min_lr_ratio = 0.1;  // in [0, 1]; 0 decays to zero
  int64_t warmup_steps = 0;   // 0: start at peak_lr
  int64_t total_steps = 1;    // end of the cosine; >= warmup_steps
};

// Fails with a message naming the field unless the schedule is well formed.
void validate_lr_schedule(const LrSchedule& schedule);

// Learning rate for optimizer step `step` (>= 0); validates the schedule and the step.
double lr_at(const LrSchedule& schedule, int64_t step);

}  // namespace sf
