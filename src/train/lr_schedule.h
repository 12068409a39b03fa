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
//
// A run whose planned length changes when it is resumed (train --resume --steps N with N larger
// than planned: the run is extended; smaller, with --override-resume: shortened) re-plans its
// decay instead of restarting the schedule. A re-plan at resume step s to a new end E, with
// anchor a = max(s, warmup_steps):
//   steps <= a:   the schedule in force before (so the warmup is never cut short or redone)
//   a < step < E: lr = min_lr + (lr_a - min_lr) * (1 + cos(pi * (step - a) / (E - a))) / 2,
//                 lr_a = the LR of step a under the schedule in force before
//   step >= E:    min_lr
// The LR is continuous at the anchor: the run goes on from the LR it had reached and decays to
// the same floor at its new end. Extending a finished run (s = the old end, where the LR is
// already min_lr) therefore trains the added steps at the constant floor min_lr. Re-plans chain:
// each one starts from the schedule made by the ones before it.
#pragma once

#include <cstdint>
#include <vector>

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

// A change of a run's planned length, made when it was resumed at `from_step` (formula above).
struct LrReplan {
  int64_t from_step = 0;  // the step the run was resumed at (>= 0)
  int64_t end_step = 1;   // the new end of the decay (> max(from_step, warmup_steps))
};

// A run's whole schedule: the one it was started with and its re-plans, oldest first.
struct RunLrSchedule {
  LrSchedule base;
  std::vector<LrReplan> replans;
};

// Fails with a message naming the field (and the re-plan) unless the schedule is well formed:
// the base valid, each re-plan's from_step not before the previous one's and its end_step after
// its anchor.
void validate_lr_schedule(const RunLrSchedule& schedule);

// Learning rate for optimizer step `step` (>= 0) under the base schedule and its re-plans;
// without re-plans exactly lr_at(schedule.base, step).
double lr_at(const RunLrSchedule& schedule, int64_t step);

// Where the schedule's decay ends: the last re-plan's end_step, else base.total_steps.
int64_t lr_schedule_end(const RunLrSchedule& schedule);

}  // namespace sf
