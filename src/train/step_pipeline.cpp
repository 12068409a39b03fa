// step_pipeline.cpp — StepPipeline: queueing a training step's micro-batches and update, and
// reading its loss and gradient norm back after the next step is queued.
#include "train/step_pipeline.h"

#include <cmath>

#include "train/data_parallel.h"
#include "train/grad_clip.h"

namespace sf {

StepPipeline::StepPipeline(Model& model, AdamW& optimizer, Collective& world)
    : model_(model),
      optimizer_(optimizer),
      world_(world),
      backend_(model.backend()),
      metrics_(backend_.zeros({2}, DType::f64)),
      loss_sum_(metrics_.slice(0, 0, 1)),
      grad_sum_squares_(metrics_.slice(0, 1, 1)),
      readback_(backend_.make_readback()) {}

void StepPipeline::add_micro_batch(const Tensor& tokens, const Tensor& targets, double loss_scale) {
  const bool first = !step_started_;
  if (first && !overwrite_gradients_) model_.params().zero_grad(backend_);
  const GradientStart start =
      first && overwrite_gradients_ ? GradientStart::overwrite : GradientStart::accumulate;
  model_.forward_backward_async(tokens, targets, loss_scale, start);
  // Queued after the previous step's read (stream order): that read still sees its own loss.
  if (first)
    model_.write_loss_into(loss_sum_, loss_scale);
  else
    model_.add_loss_into(loss_sum_, loss_scale);
  step_started_ = true;
}

void StepPipeline::queue_update(int64_t step, double lr, double max_norm) {
  SF_CHECK(!readback_->pending(),
           "StepPipeline::queue_update: step {} is still unfinished (finish() it first)",
           queued_.step);
  if (!step_started_) {  // no micro-batch of this rank's: it adds nothing to the sums
    model_.params().zero_grad(backend_);
    backend_.write_f64_scalar(loss_sum_, 0.0, "StepPipeline");
  }
  step_started_ = false;
  all_reduce_gradients(world_, model_.params());
  global_grad_sum_squares(backend_, model_.params(), grad_sum_squares_);
  // Non-finite gradients skip the update on the device: the weights stay as they were.
  optimizer_.step(lr, grad_sum_squares_, max_norm);
  readback_->start(metrics_);
  queued_.step = step;
  queued_.lr = lr;
}

bool StepPipeline::pending() const { return readback_->pending(); }

StepReport StepPipeline::finish() {
  SF_CHECK(readback_->pending(), "StepPipeline::finish: no step is queued");
  const std::vector<double> values = readback_->wait();
  StepReport report = queued_;
  report.loss = world_.all_reduce_sum(values[0]);
  report.grad_norm = std::sqrt(values[1]);
  return report;
}

}  // namespace sf
