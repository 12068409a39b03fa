// adamw.cpp — AdamW: moment allocation, the per-parameter update loop, state access.
#include "train/adamw.h"

#include <cmath>

namespace sf {

void validate_adamw_config(const AdamWConfig& config) {
  SF_CHECK(config.beta1 >= 0.0 && config.beta1 < 1.0, "AdamW: beta1 = {} must be in [0, 1)",
           config.beta1);
  SF_CHECK(config.beta2 >= 0.0 && config.beta2 < 1.0, "AdamW: beta2 = {} must be in [0, 1)",
           config.beta2);
  SF_CHECK(std::isfinite(config.eps) && config.eps > 0.0, "AdamW: eps = {} must be > 0",
           config.eps);
  SF_CHECK(std::isfinite(config.weight_decay) && config.weight_decay >= 0.0,
           "AdamW: weight_decay = {} must be >= 0", config.weight_decay);
}

AdamW::AdamW(Backend& backend, ParameterSet& params, const AdamWConfig& config)
    : backend_(backend), params_(params), config_(config) {
  validate_adamw_config(config_);
  exp_avg_.reserve(params_.size());
  exp_avg_sq_.reserve(params_.size());
  for (const Parameter& p : params_.all()) {
    SF_CHECK(p.value.dtype() == DType::f32,
             "AdamW: parameter '{}' is {}; the optimizer updates F32 master weights only", p.name,
             p.value.describe());
    exp_avg_.push_back(backend_.zeros(p.value.shape(), DType::f32));
    exp_avg_sq_.push_back(backend_.zeros(p.value.shape(), DType::f32));
  }
}

void AdamW::check_unchanged_set() const {
  SF_CHECK(params_.size() == exp_avg_.size(),
           "AdamW: the parameter set has {} parameters but the optimizer was built for {}",
           params_.size(), exp_avg_.size());
}

void AdamW::step(double lr, double grad_scale) {
  SF_CHECK(std::isfinite(grad_scale),
           "AdamW::step: grad_scale {} is not finite (non-finite gradient norm?)", grad_scale);
  AdamWStep hyper;
  hyper.lr = lr;
  hyper.grad_scale = grad_scale;
  update(hyper);
}

void AdamW::step(double lr, const Tensor& grad_sum_squares, double max_norm) {
  check_f64_scalar(grad_sum_squares, "AdamW::step: the gradients' sum of squares");
  SF_CHECK(grad_sum_squares.device() == backend_.device(),
           "AdamW::step: the gradients' sum of squares {} is not on the optimizer's device",
           grad_sum_squares.describe());
  SF_CHECK(!std::isnan(max_norm), "AdamW::step: max_norm is NaN");
  AdamWStep hyper;
  hyper.lr = lr;
  hyper.clip_sum_squares = grad_sum_squares;
  hyper.max_norm = max_norm;
  update(hyper);
}

void AdamW::update(AdamWStep hyper) {
  SF_CHECK(std::isfinite(hyper.lr) && hyper.lr >= 0.0, "AdamW::step: learning rate {} is invalid",
           hyper.lr);
  check_unchanged_set();
  hyper.beta1 = config_.beta1;
  hyper.beta2 = config_.beta2;
  hyper.eps = config_.eps;
  hyper.step = step_count_ + 1;

  // With working copies (mixed precision) the update also writes each new value's rounding into
  // Parameter::working, so the next forward need not convert every master again.
  // The list is built once (and again if working copies appear): copying ~5 tensors per
  // parameter every step cost ~0.1 ms of host time between the gradient norm and the update.
  auto& all = params_.all();
  if (update_tensors_.size() != all.size() ||
      (!all.empty() && update_tensors_.front().working.defined() != params_.has_working_copies())) {
    update_tensors_.clear();
    update_tensors_.reserve(all.size());
    for (size_t i = 0; i < all.size(); ++i)
      update_tensors_.push_back({all[i].value, all[i].grad, exp_avg_[i], exp_avg_sq_[i],
                                 all[i].weight_decay ? config_.weight_decay : 0.0, all[i].working});
  }
  params_.invalidate_working_copies();  // should the update fail part way
  backend_.adamw_update_many(update_tensors_, hyper);
  // Every parameter has a working copy, or none does. A skipped update (non-finite gradients
  // on the device) leaves masters and copies as the last forward used them: still current.
  params_.mark_working_current();
  ++step_count_;
}

void AdamW::set_step_count(int64_t steps) {
  SF_CHECK(steps >= 0, "AdamW: step count {} must be >= 0", steps);
  step_count_ = steps;
}

size_t AdamW::index_of(const std::string& name) const {
  const auto& all = params_.all();
  for (size_t i = 0; i < all.size() && i < exp_avg_.size(); ++i) {
    if (all[i].name == name) return i;
  }
  fail(fmt::format("AdamW: no optimizer state for parameter '{}'", name));
}

Tensor& AdamW::exp_avg(size_t index) {
  SF_CHECK(index < exp_avg_.size(), "AdamW: parameter index {} out of range ({} parameters)",
           index, exp_avg_.size());
  return exp_avg_[index];
}

Tensor& AdamW::exp_avg_sq(size_t index) {
  SF_CHECK(index < exp_avg_sq_.size(), "AdamW: parameter index {} out of range ({} parameters)",
           index, exp_avg_sq_.size());
  return exp_avg_sq_[index];
}

Tensor& AdamW::exp_avg(const std::string& name) { return exp_avg_[index_of(name)]; }
Tensor& AdamW::exp_avg_sq(const std::string& name) { return exp_avg_sq_[index_of(name)]; }

std::vector<std::pair<std::string, Tensor>> AdamW::state_tensors() const {
  check_unchanged_set();
  std::vector<std::pair<std::string, Tensor>> out;
  out.reserve(2 * exp_avg_.size());
  const auto& all = params_.all();
  for (size_t i = 0; i < exp_avg_.size(); ++i) {
    out.emplace_back(all[i].name + ".exp_avg", exp_avg_[i]);
    out.emplace_back(all[i].name + ".exp_avg_sq", exp_avg_sq_[i]);
  }
  return out;
}

}  // namespace sf
