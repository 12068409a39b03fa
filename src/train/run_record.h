// run_record.h — train.json, the record of a training run, and how a resumed run gets its
// options back from it.
//
// train.json (format 2) holds
//   - every recorded option, flat, by the names of the table below (the values in force now),
//     and "data_dir_absolute" (the data folder made absolute: found from another directory);
//   - "lr_schedule": {"peak_lr", "min_lr_ratio", "warmup_steps", "total_steps", "replans":
//     [{"from_step", "end_step"}, ...]}: the schedule of train/lr_schedule.h, warmup resolved;
//   - "segments": one object per train / train --resume that trained: "segment", "start_step",
//     "steps" (the planned end then), "started" (UTC), and where something changed "extended"
//     {"from", "to", "lr_at_start"}, "overridden" / "changed" / "unrecorded": lists of
//     {"option", "from", "to"}.
// A train.json without "format" (older runs) is read as format 1: the flat options only, with
// the schedule of its "steps" and "warmup"; options it lacks are taken from the invocation and
// named in the segment's "unrecorded".
//
// On resume every recorded option is restored unless the caller chose it (resume_given):
//   checked  (a different value is refused unless --override-resume):
//            data_dir (--data), batch, seq, grad_accum, lr, min_lr_ratio, warmup, weight_decay,
//            beta1, beta2, grad_clip, eval_every, eval_batches, checkpoint_every,
//            compute_dtype (--precision), device (--device), world_size (WORLD_SIZE), and
//            steps when fewer than planned;
//   extends  steps more than planned: the run is extended, its decay re-planned (lr_schedule.h);
//   free     recompute (the same arithmetic, bit for bit on the CPU), keep_checkpoints (disk
//            use) and threads (-t: the CPU thread count, which CPU numerics depend on; the CLI
//            restores it unless it exceeds the machine's cores): restored, but may be changed;
//            the change is recorded.
// Not recorded at all (per invocation): progress display, stop_after.
// The model config (its seed included) is config.json's; --config / --set must agree with it.
// An overridden schedule option (lr, min_lr_ratio, warmup) applies from the resume step on as
// if the run had been planned with it: the steps done are history, the LR may jump there.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "train/lr_schedule.h"
#include "train/trainer.h"

namespace sf {

struct OptionChange {
  std::string key;   // the train.json name, e.g. "lr"
  std::string flag;  // how it is chosen, e.g. "--lr" (WORLD_SIZE for the process count)
  nlohmann::json from, to;
};

struct ResumePlan {
  TrainOptions options;       // the run's options with this segment's changes (resume = true)
  std::string device;         // "cpu" or "cuda"
  int world_size = 1;
  RunLrSchedule schedule;     // in force from this segment on
  int64_t start_step = 0;     // the latest checkpoint's step
  int64_t planned_before = 0; // the run's planned steps before this segment
  int segment = 2;            // this segment's number
  std::vector<OptionChange> overridden;  // checked options changed with override_resume
  std::vector<OptionChange> changed;     // free options that changed
  std::vector<OptionChange> unrecorded;  // options an older train.json lacks: the invocation's
  nlohmann::json record;      // the run's train.json as read
  bool extended() const { return options.steps > planned_before; }
  bool nothing_to_do() const { return start_step >= options.steps; }
};

// The schedule a new run with these options starts with (warmup -1 resolved to
// min(100, steps / 10)).
RunLrSchedule lr_schedule_for_new_run(const TrainOptions& options);

// Restores the options of the run in requested.run_dir from its train.json and latest
// checkpoint. `device` and `world_size` are what this process trains with; device "" means
// "the run's" (the CLI asks before it makes a backend). Throws sf::Error naming every chosen
// option that differs from the run's (flag, both values, --override-resume), a missing or
// malformed train.json, a checkpoint beyond --steps, and a schedule that cannot be re-planned.
ResumePlan plan_resume(const TrainOptions& requested, const std::string& device, int world_size);

// One line per thing the plan changes (the extension and its schedule, each change), for
// stdout; empty when the run simply continues.
std::vector<std::string> describe_resume(const ResumePlan& plan);

// train.json of a new run, and after a resumed segment started (the plan's record with its
// options, schedule and one more segment).
nlohmann::json run_record_new(const TrainOptions& options, const std::string& device,
                              int world_size, const RunLrSchedule& schedule);
nlohmann::json run_record_resumed(const ResumePlan& plan);

// The record of a segment for metrics.jsonl, {"step", "segment", "event": "resume", ...}: what
// the log of a resumed run says about the resume.
nlohmann::json resume_metrics_record(const ResumePlan& plan);

}  // namespace sf
