// step_pipeline.h — a training step queued on the backend, whose loss and gradient norm the host
// reads only after it has queued the next step's forward and backward.
//
// Per step the trainer queues its micro-batches (forward + backward), then the gradients' sum
// over ranks, their norm and the clipped AdamW update, and reads back the step's loss and
// gradient norm. Read right away, the GPU finishes the update and then waits while the host
// reads, logs and launches the next step (~0.25 ms of a 37 ms gpt2-small step on an H100).
// The pipeline keeps the GPU fed: the step's loss is summed on the device (Model::add_loss_into),
// the gradients' sum of squares stays there (AdamW clips on the device), and both are copied to
// the host by a HostReadback that does not wait for later work. The caller queues step n + 1's
// micro-batches, then calls finish() for step n, then queue_update() for step n + 1:
//
//     for each step n:  add_micro_batch(...) for each of this rank's micro-batches of step n
//                       if (pending()) report(finish());        // step n - 1
//                       queue_update(n, lr, max_norm);
//                       if (this step must be seen now) report(finish());   // drain
//
// So step n's divergence check runs one step late; the weights are safe meanwhile, because a
// non-finite gradient makes the device skip the update (AdamWStep::clip_sum_squares), and the
// caller stops before queueing another update. A caller that checkpoints, evaluates or stops
// after step n drains first, so the files and the metrics log agree as without the pipeline.
// The trainer (train/trainer.cpp) and bench-train (train/train_bench.cpp) both run steps this
// way, so the benchmark times what training does.
#pragma once

#include <cstdint>
#include <memory>

#include "core/backend.h"
#include "core/host_readback.h"
#include "distributed/collective.h"
#include "model/model.h"
#include "train/adamw.h"

namespace sf {

// What the host learns about a step once it has run.
struct StepReport {
  int64_t step = 0;
  double lr = 0.0;
  double loss = 0.0;       // mean over the step's micro-batches and ranks
  double grad_norm = 0.0;  // global norm of the summed gradients, before clipping
};

class StepPipeline {
 public:
  // Keeps references to all three. `world` sums the gradients and losses over ranks.
  StepPipeline(Model& model, AdamW& optimizer, Collective& world);

  // false: the step's first micro-batch adds to zeroed gradients instead of writing them
  // (ParameterSet::zero_grad first; bench-train --zero-grad, for comparisons).
  void set_overwrite_gradients(bool overwrite) { overwrite_gradients_ = overwrite; }

  // Queues one of this rank's micro-batches of the step being built: forward and backward
  // (Model::forward_backward_async, gradient and loss scaled by loss_scale), its loss added to
  // the step's on the device. The step's first one writes the gradients, the others add.
  void add_micro_batch(const Tensor& tokens, const Tensor& targets, double loss_scale);

  // Queues the rest of step `step`: gradients summed over the ranks (zeroed first when this
  // rank had no micro-batch), their sum of squares, the AdamW update at `lr` clipped to
  // `max_norm`, and the read of the step's loss and norm. An error while a queued step is
  // unfinished (call finish() first): one read is in flight at a time.
  void queue_update(int64_t step, double lr, double max_norm);

  // True when a step was queued and not finished yet.
  bool pending() const;

  // Waits for the queued step's loss and gradient norm (not for work queued after them) and
  // returns them; the loss is summed over the ranks (a collective: every rank calls finish() at
  // the same steps). Non-finite values are returned as they are: the caller decides.
  StepReport finish();

 private:
  Model& model_;
  AdamW& optimizer_;
  Collective& world_;
  Backend& backend_;
  bool overwrite_gradients_ = true;
  bool step_started_ = false;  // a micro-batch of the step being built was queued
  Tensor metrics_;             // F64 [2] on the backend: the step's loss, the gradients' sum of squares
  Tensor loss_sum_, grad_sum_squares_;  // its two elements
  std::unique_ptr<HostReadback> readback_;
  StepReport queued_;          // the queued step's number and lr
};

}  // namespace sf
