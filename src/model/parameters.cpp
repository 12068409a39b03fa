// parameters.cpp — ParameterSet registration and look-up.
#include "model/parameters.h"

namespace sf {

Parameter& ParameterSet::add(Backend& backend, const std::string& name, const Shape& shape,
                             DType dtype, bool weight_decay) {
  SF_CHECK(!contains(name), "parameter '{}' registered twice", name);
  SF_CHECK(!has_working_copies(), "parameter '{}' added after the working copies", name);
  index_[name] = params_.size();
  params_.push_back(
      Parameter{name, backend.zeros(shape, dtype), backend.zeros(shape, dtype), weight_decay});
  storages_.push_back(params_.back().value);
  return params_.back();
}

std::pair<Tensor, Tensor> ParameterSet::add_stacked(Backend& backend,
                                                    const std::vector<std::string>& names,
                                                    const std::vector<int64_t>& rows,
                                                    const Shape& cols, DType dtype,
                                                    bool weight_decay) {
  SF_CHECK(!names.empty() && names.size() == rows.size(),
           "add_stacked: {} names for {} row counts", names.size(), rows.size());
  SF_CHECK(!has_working_copies(), "parameter '{}' added after the working copies", names[0]);
  int64_t total = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    SF_CHECK(!contains(names[i]), "parameter '{}' registered twice", names[i]);
    SF_CHECK(rows[i] > 0, "add_stacked: parameter '{}' has {} rows", names[i], rows[i]);
    total += rows[i];
  }
  Shape shape{total};
  shape.insert(shape.end(), cols.begin(), cols.end());
  const Tensor value = backend.zeros(shape, dtype), grad = backend.zeros(shape, dtype);
  int64_t first = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    index_[names[i]] = params_.size();
    params_.push_back(Parameter{names[i], value.slice(0, first, rows[i]),
                                grad.slice(0, first, rows[i]), weight_decay});
    first += rows[i];
  }
  storages_.push_back(value);
  return {value, grad};
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

void ParameterSet::add_working_copies(Backend& backend, DType dtype) {
  SF_CHECK(!has_working_copies(), "the parameters already have working copies");
  for (const Tensor& master : storages_)
    working_storages_.push_back(backend.zeros(master.shape(), dtype));
  for (Parameter& p : params_) p.working = working_view(p.value);
}

Tensor ParameterSet::working_view(const Tensor& master) const {
  // A parameter is its storage or a contiguous slice of it (add_stacked): matched by buffer, it
  // gets the same element range of the storage's copy.
  for (size_t i = 0; i < storages_.size() && i < working_storages_.size(); ++i)
    if (storages_[i].buffer() == master.buffer())
      return Tensor(working_storages_[i].buffer(), working_storages_[i].dtype(), master.shape(),
                    working_storages_[i].offset() + master.offset() - storages_[i].offset());
  fail(fmt::format("{} is not a parameter's storage or a view into one (or the set has no "
                   "working copies)", master.describe()));
}

std::vector<Tensor> ParameterSet::gradients() const {
  std::vector<Tensor> grads;
  grads.reserve(params_.size());
  for (const Parameter& p : params_) grads.push_back(p.grad);
  return grads;
}

void ParameterSet::zero_grad(Backend& backend) { backend.fill_many(gradients(), 0.0); }

}  // namespace sf
