// adamw.h — AdamW over a ParameterSet: per-parameter moments, step counter, hyper-parameters.
//
// The optimizer owns, for every parameter of the set (in registration order), the first and
// second moments `exp_avg` and `exp_avg_sq` (F32, same shape, allocated zero on the backend) and
// one step counter shared by all parameters, as torch.optim.AdamW keeps them. The update itself is
// Backend::adamw_update (cpu/adamw.cpp documents the exact, torch-identical arithmetic).
//
// Gradient accumulation contract (how the trainer uses this class):
//   1. The backend's backward ops ADD into Parameter::grad (core/backend.h), so gradients of
//      successive micro-batches sum without any extra code. (The trainer runs a step's first
//      micro-batch with GradientStart::overwrite instead: it writes the gradients, so they need
//      no zeroing before it; the others add.)
//   2. With k micro-batches per optimizer step, the trainer scales each micro-batch's loss
//      gradient by 1/k (the `loss_scale` of Model::backward), so the accumulated gradient is the
//      gradient of the mean loss over the whole batch — identical to one pass over all rows.
//   3. It then computes the global gradient norm's square on the device (train/grad_clip.h),
//      calls step(lr, sum, max_norm); the next step's first micro-batch overwrites the
//      gradients (or ParameterSet::zero_grad clears them, for code that only adds). Clipping is
//      folded into the update as its gradient scale, so gradients are never rewritten
//      (step(lr, clip_factor) does the same with a factor from the host).
// tests/optimizer_test.cpp proves 1–3 on a least-squares problem (4 × 2 rows == 1 × 8 rows).
//
// Weight decay is applied only to parameters whose `weight_decay` flag is true (matrices and
// embeddings); norms and scalars have it false, as in the usual GPT/Llama training recipes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/backend.h"
#include "model/parameters.h"

namespace sf {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled; only for parameters flagged weight_decay
};

// Fails with a message naming the field unless every hyper-parameter is in its valid range.
void validate_adamw_config(const AdamWConfig& config);

class AdamW {
 public:
  // Allocates zero moments for every parameter now in `params`; parameters must be F32 (the
  // master weights). Keeps references: `backend` and `params` must outlive the optimizer, and no
  // parameter may be added afterwards.
  AdamW(Backend& backend, ParameterSet& params, const AdamWConfig& config = {});

  // One update of every parameter: increments the step counter (the first call is step 1, used
  // for bias correction), then param <- AdamW(param, grad * grad_scale). Gradients are left
  // unchanged; the caller zeroes them. Throws on a negative or non-finite lr or a non-finite
  // grad_scale (which is what clip_scale returns for a non-finite gradient norm), leaving the
  // parameters, moments and step counter untouched.
  // Mixed precision (the set has working copies): the same pass writes every parameter's new
  // value, rounded, into Parameter::working and marks the copies current
  // (ParameterSet::mark_working_current), so the next forward skips its conversion pass.
  void step(double lr, double grad_scale = 1.0);

  // The same update with global-norm clipping decided where it runs: `grad_sum_squares` is the
  // gradients' sum of squares, an F64 tensor of one element on the backend
  // (global_grad_sum_squares), and the gradients are scaled by clip_scale(sqrt(it), max_norm).
  // Nothing waits for the norm. Non-finite gradients skip the update (parameters, moments and
  // working copies keep their values; the step still counts): the caller reads the norm after
  // and stops (the trainer's divergence error).
  void step(double lr, const Tensor& grad_sum_squares, double max_norm);

  const AdamWConfig& config() const { return config_; }

  // Number of updates taken so far; restored from a checkpoint with set_step_count.
  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t steps);

  // Moments of parameter `index` (registration order) or of the parameter named `name`. The
  // returned tensors share the optimizer's buffers: a checkpoint loader restores them with
  // Backend::copy into these tensors.
  Tensor& exp_avg(size_t index);
  Tensor& exp_avg_sq(size_t index);
  Tensor& exp_avg(const std::string& name);
  Tensor& exp_avg_sq(const std::string& name);

  // Every moment tensor with its checkpoint name, in parameter order:
  // "<param>.exp_avg", "<param>.exp_avg_sq" (torch's state keys). Tensors share the buffers.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;

 private:
  size_t index_of(const std::string& name) const;
  void check_unchanged_set() const;

  Backend& backend_;
  ParameterSet& params_;
  AdamWConfig config_;
  int64_t step_count_ = 0;
  std::vector<Tensor> exp_avg_;
  std::vector<Tensor> exp_avg_sq_;
  void update(AdamWStep hyper);  // both steps: fills in the configuration and the counter

  std::vector<AdamWTensors> update_tensors_;  // step()'s argument list, kept between steps
};

}  // namespace sf
