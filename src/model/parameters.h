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
//
// Mixed precision: the set also holds the working copies (BF16) of the master values, one per
// allocation, and each parameter's view into its copy (Parameter::working), with one flag
// saying whether those copies are known to be current. Decision: the ParameterSet, not the
// Model, owns both, because it is the one object that the Model (which reads the copies) and
// the optimizer (which writes the masters, and the copies in the same pass) both see; AdamW
// knows no Model.
//
// Contract of the flag ("working copies current"):
//   * AdamW::step sets it after an update that also wrote every working copy
//     (mark_working_current).
//   * Model's forward takes it (consume_working_current: read and clear, so it is used once):
//     set, the forward skips its conversion pass over all masters; clear, it converts as always.
//   * Code that writes master values between an optimizer step and the next forward calls
//     invalidate_working_copies(). The library's writers do (Model::initialize, model and
//     checkpoint loading, AdamW::step before its update; an explicit
//     Model::sync_compute_weights() clears the flag too); a test or tool that edits
//     Parameter::value directly must do the same, or the next forward may read the copies of
//     the old values. Edits at any other time are picked up anyway (the flag is clear then).
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
  // Mixed precision: this parameter's place in its allocation's working copy (the kernels read
  // it; AdamW writes it with the update). Undefined without working copies.
  Tensor working{};  // "{}": initialisers that leave it out stay warning-free
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
  // Every parameter's gradient, in order (views sharing the gradients' buffers: writes through
  // them land in the gradients).
  std::vector<Tensor> gradients() const;
  void zero_grad(Backend& backend);

  // ---- mixed precision (see the contract at the top) ----------------------------------------
  // Allocates a zero working copy of `dtype` for every storage (working_storages()[i] has the
  // shape of storages()[i]) and sets every Parameter::working to the same element range of its
  // storage's copy. Once, after the last add: no parameter may be added afterwards.
  void add_working_copies(Backend& backend, DType dtype);
  bool has_working_copies() const { return !working_storages_.empty(); }
  // The working-copy tensor at the place of `master` (a storage or any contiguous view into one,
  // matched by buffer), in the copies' dtype; fails if `master` is no parameter storage's.
  Tensor working_view(const Tensor& master) const;
  const std::vector<Tensor>& working_storages() const { return working_storages_; }
  // The optimizer: every working copy now holds the rounding of its (new) master value.
  void mark_working_current() { working_current_ = has_working_copies(); }
  // The forward: whether the copies are current, clearing the flag (single use).
  bool consume_working_current() {
    const bool current = working_current_;
    working_current_ = false;
    return current;
  }
  // Whoever writes master values: the working copies no longer follow from the last step.
  void invalidate_working_copies() { working_current_ = false; }

 private:
  std::deque<Parameter> params_;  // a deque: add() never invalidates earlier references
  std::unordered_map<std::string, size_t> index_;
  std::vector<Tensor> storages_;
  std::vector<Tensor> working_storages_;  // parallel to storages_; empty without mixed precision
  bool working_current_ = false;
};

}  // namespace sf
