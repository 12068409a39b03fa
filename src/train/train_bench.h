// train_bench.h — timing of full training steps: tokens/s and model FLOPs utilisation (MFU).
//
// A step is what the trainer does per update with --grad-accum 1, run by the same StepPipeline
// (train/step_pipeline.h): forward and backward over one [batch, seq] batch (the first
// micro-batch writes the gradients), the global gradient norm, the clipped AdamW update of every
// parameter, and the read of the step's loss and norm, which happens once the next step's
// forward and backward are queued. Steps run back to back after `warmup` untimed ones; a
// step's time is the wall time between the host's reads of the previous step's results and of
// its own, so it includes everything the training loop waits for, and in the steady state it
// is the time the loop spends per step. Batches are random token ids (the work of a step does
// not depend on the ids) unless a data folder is given, in which case they are the first
// batches of its train split. MFU counts the model's FLOPs: with activation recomputation the
// extra forward is work that MFU does not credit.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/backend.h"
#include "model/config.h"

namespace sf {

struct TrainBenchOptions {
  int64_t batch = 8;
  int64_t seq = 1024;
  int64_t steps = 20;          // timed steps
  int64_t warmup = 3;          // untimed steps first (plans, cuBLASLt heuristics, caches)
  DType compute_dtype = DType::bf16;
  bool recompute = false;      // activation recomputation (Model::set_activation_recomputation)
  bool record_steps = true;    // replay recorded steps (CUDA graphs; Model::forward_backward_async)
  // false: zero every gradient before a step and let the backward add into them (the way before
  // GradientStart::overwrite; for comparisons)
  bool overwrite_gradients = true;
  std::string data_dir;        // empty: random ids
  double peak_flops = 0.0;     // FLOP/s of the device for MFU; 0: no MFU
};

struct TrainBenchResult {
  std::vector<double> step_seconds;  // every timed step
  double median_step_seconds = 0.0;
  double tokens_per_second = 0.0;    // batch * seq / median step time
  double flops_per_token = 0.0;      // train/flops.h
  double achieved_flops = 0.0;       // flops_per_token * tokens_per_second
  double mfu = 0.0;                  // achieved / peak (0 when no peak is known)
  double last_loss = 0.0;
  int64_t parameters = 0;
  int64_t activation_bytes = 0;      // Model::activation_bytes of the benchmarked shape
};

TrainBenchResult bench_training(const ModelConfig& config, const TrainBenchOptions& options,
                                Backend& backend);

// Dense bf16 tensor-core peak of a GPU known by name (H100 SXM/HBM3: 989.4e12, H200: 989.4e12,
// H100 PCIe: 756e12), or 0 when the name is unknown.
double known_bf16_peak_flops(const std::string& device_name);

}  // namespace sf
