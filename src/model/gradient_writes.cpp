// gradient_writes.cpp — the bookkeeping of GradientWrites (see gradient_writes.h).
#include "model/gradient_writes.h"

#include <algorithm>

#include "core/error.h"

namespace sf {

GradientWrites::Range GradientWrites::range_of(const Tensor& grad, const char* what) {
  SF_CHECK(grad.defined() && grad.is_contiguous(), "{}: gradient {} must be a contiguous tensor",
           what, grad.describe());
  const auto begin = reinterpret_cast<uintptr_t>(grad.raw());
  return Range{begin, begin + grad.nbytes()};
}

std::vector<Tensor> GradientWrites::begin(const std::vector<Tensor>& gradients,
                                          GradientStart start) {
  if (pass_ == Pass::observing) {  // (again, if an earlier first pass did not finish)
    touched_.clear();
    qualified_.clear();
    return start == GradientStart::overwrite ? gradients : std::vector<Tensor>{};
  }
  pass_ = start == GradientStart::overwrite ? Pass::overwriting : Pass::settled;
  if (pass_ == Pass::settled) return {};
  written_.assign(qualified_.size(), 0);
  std::vector<Tensor> to_zero;
  for (const Tensor& g : gradients) {
    const Range r = range_of(g, "GradientWrites::begin");
    if (std::none_of(qualified_.begin(), qualified_.end(),
                     [&](const Range& q) { return q.contains(r); }))
      to_zero.push_back(g);
  }
  return to_zero;
}

double GradientWrites::product_beta(const Tensor& grad) {
  const Range r = range_of(grad, "GradientWrites::product_beta");
  if (pass_ == Pass::observing) {
    if (std::none_of(touched_.begin(), touched_.end(), [&](const Range& t) { return t.overlaps(r); }))
      qualified_.push_back(r);  // first touch of these bytes, by a product of exactly them
    touched_.push_back(r);
    return 1.0;  // the pass zeroed everything first, or it accumulates
  }
  if (pass_ != Pass::overwriting) return 1.0;
  const auto it = std::find(qualified_.begin(), qualified_.end(), r);
  if (it != qualified_.end()) {
    char& done = written_[static_cast<size_t>(it - qualified_.begin())];
    const double beta = done ? 1.0 : 0.0;
    done = 1;
    return beta;
  }
  check_no_unwritten_overlap(r, grad);
  return 1.0;
}

void GradientWrites::addition(const Tensor& grad) {
  const Range r = range_of(grad, "GradientWrites::addition");
  if (pass_ == Pass::observing) touched_.push_back(r);
  else if (pass_ == Pass::overwriting) check_no_unwritten_overlap(r, grad);
}

void GradientWrites::check_no_unwritten_overlap(const Range& r, const Tensor& grad) const {
  for (size_t i = 0; i < qualified_.size(); ++i)
    SF_CHECK(written_[i] || !qualified_[i].overlaps(r),
             "backward: a write into gradient {} comes before the product that the first pass "
             "saw writing those elements first (the backward's write order changed; "
             "GradientWrites needs a new observation)",
             grad.describe());
}

void GradientWrites::finish() {
  const Pass ended = pass_;
  pass_ = Pass::settled;
  if (ended == Pass::observing) {
    touched_.clear();
    touched_.shrink_to_fit();
  }
  if (ended != Pass::overwriting) return;
  SF_CHECK(std::all_of(written_.begin(), written_.end(), [](char w) { return w != 0; }),
           "backward: {} of {} gradients that the first pass wrote with a product were not "
           "written by this one (the backward's write order changed)",
           std::count(written_.begin(), written_.end(), char{0}), written_.size());
}

}  // namespace sf
