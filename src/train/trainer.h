// trainer.h — the training loop: batches from shards, gradient accumulation, AdamW with warmup +
// cosine and global-norm clipping, periodic validation, metrics log, loss plot, atomic
// checkpoints, bit-identical resume, clean stop on Ctrl-C, and a hard stop on a NaN/Inf loss;
// optionally data-parallel over several processes (TrainOptions::collective).
//
// A run folder holds: config.json + model.safetensors (the latest weights, loadable by
// generate/eval/info), tokenizer.json (copied from the data folder), train.json (the options,
// the learning-rate schedule and the history of the run's segments: train/run_record.h),
// metrics.jsonl, loss.svg, and checkpoints/ (see train/checkpoint.h).
//
// Resuming (TrainOptions::resume) restores every training option from train.json; see
// train/run_record.h for which options may be given again, changed, or extend the run.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "model/config.h"
#include "train/checkpoint.h"

namespace sf {

class Collective;

struct TrainOptions {
  std::string data_dir;
  std::string run_dir;
  int64_t steps = 200;       // optimizer updates in the whole run (the schedule's length)
  int64_t batch = 8;         // sequences per micro-batch
  int64_t seq = 128;         // tokens per sequence
  int64_t grad_accum = 1;    // micro-batches per update
  double lr = 1e-3;          // peak learning rate
  double min_lr_ratio = 0.1; // cosine floor as a fraction of the peak
  int64_t warmup = -1;       // warmup updates; -1: min(100, steps / 10)
  double weight_decay = 0.1;
  double beta1 = 0.9, beta2 = 0.95;
  double grad_clip = 1.0;    // global-norm clip; <= 0 disables
  int64_t eval_every = 50;   // validation every N updates (and at the end); 0: only at the end
  int64_t eval_batches = 20; // validation batches (from the start of the val split)
  int64_t checkpoint_every = 100;  // 0: only at the end (and on Ctrl-C)
  int keep_checkpoints = 2;
  bool resume = false;       // continue the run in run_dir from its latest checkpoint
  // Resume only (train/run_record.h): the options the caller chose, by their train.json names
  // ("lr", "eval_every", "steps", ...; the CLI: those given on the command line). Every other
  // recorded option is restored from the run's train.json. A chosen value that differs from the
  // run's is refused, naming the option and both values, unless override_resume (then the
  // change is recorded in train.json and metrics.jsonl); `steps` beyond the run's plan extends
  // the run (train/lr_schedule.h). Empty: everything is restored.
  std::vector<std::string> resume_given;
  bool override_resume = false;
  int64_t stop_after = 0;    // > 0: stop (with a checkpoint) after this update, as if interrupted
  bool progress = true;      // progress bar
  std::FILE* progress_stream = stderr;  // where the bar goes (tests read it from a file)
  // Test hook: called after each update is queued, with its step (a test sleeps here to make a
  // run of known speed).
  std::function<void(int64_t step)> after_step;
  // Activations and working weights: F32, or BF16 mixed precision (CUDA; F32 master weights,
  // gradients and optimizer state either way).
  DType compute_dtype = DType::f32;
  // Activation recomputation (Model::set_activation_recomputation): long sequences in less
  // memory for about one more forward per step.
  bool recompute = false;
  // CPU threads this segment trains with (0: not known). Only recorded (train.json) so that a
  // resume can use the same count: OpenBLAS's products, and so a CPU run's numbers, depend on it.
  int threads = 0;
  // Data parallelism (docs/data-parallel.md): this process's rank in a job of several, each
  // training on its share of every update's micro-batches. nullptr: one process. Only rank 0
  // writes files.
  Collective* collective = nullptr;
};

struct TrainResult {
  int64_t steps_done = 0;        // the run's step at the end (over all segments)
  int64_t planned_steps = 0;     // the run's planned length (TrainOptions::steps, as resumed)
  // The last logged losses, with their steps; a resumed run starts from those of its metrics
  // log (a segment may train no step, or validate at no step); NaN where there is none (never
  // evaluated, no validation split).
  double last_train_loss = 0.0;
  double last_val_loss = 0.0;
  int64_t last_loss_step = 0;    // the step of last_train_loss
  int64_t last_val_step = 0;     // the step of last_val_loss
  int64_t last_val_tokens = 0;   // tokens it was measured on (--eval-batches: an estimate)
  double unigram_val_loss = 0.0; // the context-free reference on the validation data (NaN: none)
  bool interrupted = false;      // stopped by Ctrl-C / SIGTERM / stop_after before `steps`
  bool nothing_to_do = false;    // resumed a run already at its planned end: nothing trained
  double seconds = 0.0;          // this call, from start to end (setup included)
  int64_t tokens = 0;            // tokens trained on over the whole run (all segments)
  // This segment (this call) alone: its first step - 1, the updates and tokens it trained, and
  // the time of its training loop (evaluations and checkpoints inside it included, setup not).
  // Its rates are segment_steps / segment_seconds and segment_tokens / segment_seconds.
  int segment = 1;               // 1 for a new run, +1 for each resumed segment that trained
  int64_t segment_start_step = 0;
  int64_t segment_steps = 0;
  int64_t segment_tokens = 0;
  double segment_seconds = 0.0;
  double run_seconds = 0.0;      // training time over all segments (the checkpoints' elapsed)
};

// Trains `config` (ignored when resuming: the run folder's config is used and must match) on
// `backend`. Throws sf::Error for bad options or data, and for a non-finite loss or gradient
// (naming the step and the last good checkpoint).
TrainResult train(const ModelConfig& config, const TrainOptions& options, Backend& backend);

// Validates options (every bad field named).
void train_options_validate(const TrainOptions& options);

}  // namespace sf
