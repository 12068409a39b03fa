// parameters.cpp — ParameterSet registration and look-up.
#include "model/parameters.h"

namespace sf {

Parameter& ParameterSet::add(Backend& backend, const std::string& name, const Shape& shape,
                             DType dtype, bool weight_decay) {
  SF_CHECK(!contains(name), "parameter '{}' registered twice", name);
  index_[name] = params_.size();
  params_.push_back(
      Parameter{name, backend.zeros(shape, dtype), backend.zeros(shape, dtype), weight_decay});
  return params_.back();
}

Parameter& ParameterSet::get(const std::string& name) {
  auto it = index_.find(name);
  SF_CHECK(it != index_.end(), "no parameter named '{}'", name);
  return params_[it->second];
}

const Parameter& ParameterSet::get(const std::string& name) const {
  auto it = index_.find(name);
  SF_CHECK(it != index_.end(), "no parameter named '{}'", name);
  return params_[it->second];
}

int64_t ParameterSet::count_elements() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.value.numel();
  return n;
}

void ParameterSet::zero_grad(Backend& backend) {
  std::vector<Tensor> grads;
  for (auto& p : params_) grads.push_back(p.grad);
  backend.fill_many(grads, 0.0);
}

}  // namespace sf
