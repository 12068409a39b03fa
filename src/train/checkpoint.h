// checkpoint.h — training checkpoints: weights, AdamW moments, step, RNG and data position,
// written so that a crash at any moment leaves the previous checkpoint loadable.
//
// Layout inside a run folder:
//   checkpoints/step_00000200/model.safetensors      weights (names of model/weights.h)
//   checkpoints/step_00000200/optimizer.safetensors  "<param>.exp_avg", "<param>.exp_avg_sq"
//   checkpoints/step_00000200/state.json             step, data position, RNG, elapsed, tokens
//   checkpoints/latest.json                           {"step": 200, "dir": "step_00000200"}
// Atomicity: a checkpoint folder is complete (each file written atomically and the folder
// fsynced) before latest.json is atomically replaced to point at it; only then are older
// folders beyond `keep` removed. A kill at any point leaves latest.json naming a complete
// checkpoint (the old one until the switch, the new one after it). A half-written
// step_* folder that latest.json does not name is ignored and removed by the next save.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/rng.h"
#include "data/batch_loader.h"
#include "model/model.h"
#include "train/adamw.h"

namespace sf {

struct TrainingState {
  int64_t step = 0;            // optimizer updates done
  DataPosition data;           // where the next training batch starts
  Rng::State rng{};            // trainer RNG (reserved for stochastic training features)
  double elapsed_seconds = 0;  // training time so far, over all resumed segments
  int64_t tokens_seen = 0;
};

struct CheckpointOptions {
  int keep = 2;  // complete checkpoints kept on disk (>= 1)
  // Test hook: called after each file of the checkpoint is written, with its path. A test
  // kills the process here to prove atomicity.
  std::function<void(const std::string&)> after_file_written;
};

// Writes a checkpoint of the model, the optimizer and the state into run_dir/checkpoints.
// Returns the checkpoint folder.
std::string checkpoint_save(const std::string& run_dir, Model& model, const AdamW& optimizer,
                            const TrainingState& state, const CheckpointOptions& options = {});

// True when run_dir/checkpoints/latest.json exists.
bool checkpoint_exists(const std::string& run_dir);

// The folder of the latest checkpoint (run_dir/checkpoints/step_NNNNNNNN), as latest.json names
// it; errors name latest.json when it is missing, invalid or names no folder of checkpoints/.
std::string checkpoint_latest_dir(const std::string& run_dir);

// Where the latest checkpoint is (its state.json), read without loading weights; errors name
// the file.
struct CheckpointProgress {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  double elapsed_seconds = 0;
};
CheckpointProgress checkpoint_latest_progress(const std::string& run_dir);

// Restores the latest checkpoint into an already constructed model and optimizer (same config)
// and returns the training state. Every file is validated; errors name the file.
TrainingState checkpoint_load(const std::string& run_dir, Model& model, AdamW& optimizer);

}  // namespace sf
