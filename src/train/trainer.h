// trainer.h — the training loop: batches from shards, gradient accumulation, AdamW with warmup +
// cosine and global-norm clipping, periodic validation, metrics log, loss plot, atomic
// checkpoints, bit-identical resume, clean stop on Ctrl-C, and a hard stop on a NaN/Inf loss;
// optionally data-parallel over several processes (TrainOptions::collective).
//
// A run folder holds: config.json + model.safetensors (the latest weights, loadable by
// generate/eval/info), tokenizer.json (copied from the data folder), train.json (the options),
// metrics.jsonl, loss.svg, and checkpoints/ (see train/checkpoint.h).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

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
  int64_t stop_after = 0;    // > 0: stop (with a checkpoint) after this update, as if interrupted
  bool progress = true;      // progress bar on stderr
  // Activations and working weights: F32, or BF16 mixed precision (CUDA; F32 master weights,
  // gradients and optimizer state either way).
  DType compute_dtype = DType::f32;
  // Activation recomputation (Model::set_activation_recomputation): long sequences in less
  // memory for about one more forward per step.
  bool recompute = false;
  // Data parallelism (docs/data-parallel.md): this process's rank in a job of several, each
  // training on its share of every update's micro-batches. nullptr: one process. Only rank 0
  // writes files.
  Collective* collective = nullptr;
};

struct TrainResult {
  int64_t steps_done = 0;
  double last_train_loss = 0.0;
  double last_val_loss = 0.0;    // NaN when never evaluated (or no validation split)
  double unigram_val_loss = 0.0; // the context-free reference on the validation data (NaN: none)
  bool interrupted = false;      // stopped by Ctrl-C / SIGTERM / stop_after before `steps`
  double seconds = 0.0;
  int64_t tokens = 0;
};

// Trains `config` (ignored when resuming: the run folder's config is used and must match) on
// `backend`. Throws sf::Error for bad options or data, and for a non-finite loss or gradient
// (naming the step and the last good checkpoint).
TrainResult train(const ModelConfig& config, const TrainOptions& options, Backend& backend);

// Validates options (every bad field named).
void train_options_validate(const TrainOptions& options);

}  // namespace sf
