// gradient_writes.h — which parameter gradients a backward pass may write instead of add to.
//
// A training step used to zero every gradient (one pass over all of them: 0.26 ms of a 37 ms
// H100 step at 176M parameters) and let every weight-gradient product add into its gradient
// (beta = 1). But most gradients are written first by one product that covers them whole: that
// product can write (beta = 0), and the zeroing can skip them. GradientWrites keeps this
// straight for the Model:
//   * The first backward observes. Every write into a gradient is reported: products with their
//     range (product_beta), other writers -- the norm weights' reductions, the embedding's
//     scatter, the combination's alpha -- as additions (addition). A range qualifies as
//     "product-written" when the first write touching any of its bytes is a product of exactly
//     that range. (That backward zeroes all gradients first when it starts them afresh.)
//   * From then on, a backward that starts the gradients afresh (GradientStart::overwrite)
//     zeroes only the gradients that no qualifying range contains (begin's answer);
//     product_beta answers 0 for the first product into each qualifying range and 1 otherwise;
//     finish checks that every qualifying range was written.
// Decision: observed, not declared. Which products come first depends on the configuration
// (shared weights: the last stack's backward writes, the earlier stacks add; tied embeddings:
// the LM head's product writes, the embedding's scatter adds; grouped-query attention: wq and
// (wk, wv) are separate products), and a second list of that logic would drift from the
// backward itself. The pattern depends on the configuration only, not on the batch, so one
// observation holds for the model's life; a change is caught (a write overlapping a range not
// yet written in this pass, or a range left unwritten), never silently wrong.
#pragma once

#include <cstdint>
#include <vector>

#include "core/tensor.h"

namespace sf {

// How a backward pass treats the parameter gradients it finds.
enum class GradientStart {
  accumulate,  // adds its gradient to theirs (a later micro-batch, or after zero_grad)
  overwrite,   // they hold nothing of value: the result is this pass's gradient alone
};

class GradientWrites {
 public:
  // Starts a backward over `gradients` (every parameter's, whatever they hold). Returns those
  // to be zeroed before the pass runs: none when accumulating; all, the first time, when
  // overwriting; afterwards only those no product-written range contains.
  std::vector<Tensor> begin(const std::vector<Tensor>& gradients, GradientStart start);
  // The beta of a weight-gradient product into `grad` (grad = alpha * product + beta * grad).
  double product_beta(const Tensor& grad);
  // A write that adds into `grad` and is not a product (it needs the zeros).
  void addition(const Tensor& grad);
  // Ends the pass: after the first, the product-written ranges are known; after an overwriting
  // one, every such range must have been written.
  void finish();

  bool observed() const { return pass_ != Pass::observing; }
  size_t product_written_ranges() const { return qualified_.size(); }

 private:
  struct Range {
    uintptr_t begin = 0, end = 0;
    bool operator==(const Range&) const = default;
    bool overlaps(const Range& o) const { return begin < o.end && o.begin < end; }
    bool contains(const Range& o) const { return begin <= o.begin && o.end <= end; }
  };
  static Range range_of(const Tensor& grad, const char* what);
  // Fails if `r` overlaps a product-written range that this overwriting pass has not written
  // yet (unless it is that range exactly, which product_beta handles).
  void check_no_unwritten_overlap(const Range& r, const Tensor& grad) const;

  enum class Pass {
    observing,    // no backward has finished yet (one may be running): learning the ranges
    settled,      // the ranges are known; no pass, or an accumulating one, is running
    overwriting,  // the ranges are known and an overwriting pass is running
  };
  Pass pass_ = Pass::observing;
  std::vector<Range> touched_;    // observing: every range written so far
  std::vector<Range> qualified_;  // product-written ranges (observing: the candidates so far)
  std::vector<char> written_;     // overwriting: qualified_[i] written in this pass
};

}  // namespace sf
