// parameters.h — named model parameters with their gradients, in a fixed order.
//
// A ParameterSet owns one value tensor and one gradient tensor per named parameter. Order is
// the order of registration (the model registers in a canonical order), so checkpoints,
// optimizer state and parameter counts are deterministic. With shared weights a tensor is
// registered once and the stacks that share it hold the same Tensor (same buffer): their
// gradient contributions accumulate into the one gradient tensor.
//
// Parameters registered together by add_stacked() live in one allocation, one after the other
// along dimension 0 (values in one buffer, gradients in another): a batched matrix product reads
// such a group (the q/k/v projections, the two SwiGLU input projections) as one [G, rows, cols]
// operand and writes their gradients in one go. Each is still a Parameter of its own (name,
// checkpoint entry, optimizer state); its tensors are contiguous views into the group's.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/backend.h"

namespace sf {

struct Parameter {
  std::string name;   // e.g. "stacks.1.layers.3.cross_attn.wq.weight"
  Tensor value;
  Tensor grad;        // same shape and dtype as value
  bool weight_decay;  // false for norms and scalars (AdamW skips decay on them)
};

class ParameterSet {
 public:
  // Allocates value and gradient (zeros) on `backend`; the name must be new. The returned
  // reference stays valid as more parameters are added.
  Parameter& add(Backend& backend, const std::string& name, const Shape& shape, DType dtype,
                 bool weight_decay);
  // Registers `names` (in order) as parameters of shape [rows[i], cols...] stacked in one
  // allocation: the group's value and gradient are [sum(rows), cols...] with parameter i at rows
  // [rows[0] + ... + rows[i-1], ...). Returns the group as (value, gradient).
  std::pair<Tensor, Tensor> add_stacked(Backend& backend, const std::vector<std::string>& names,
                                        const std::vector<int64_t>& rows, const Shape& cols,
                                        DType dtype, bool weight_decay);

  const std::deque<Parameter>& all() const { return params_; }
  std::deque<Parameter>& all() { return params_; }
  size_t size() const { return params_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) != 0; }
  Parameter& get(const std::string& name);
  const Parameter& get(const std::string& name) const;

  int64_t count_elements() const;  // total number of scalar parameters
  // The value tensors that own the allocations: one per add(), one per add_stacked() group.
  // Every parameter's value is this tensor or a view into it (same buffer).
  const std::vector<Tensor>& storages() const { return storages_; }
  void zero_grad(Backend& backend);

 private:
  std::deque<Parameter> params_;  // a deque: add() never invalidates earlier references
  std::unordered_map<std::string, size_t> index_;
  std::vector<Tensor> storages_;
};

}  // namespace sf
