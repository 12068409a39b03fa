// gradcheck.h — test helpers shared by every test: random tensors, dtype conversion, relative
// error of two tensors, and a central finite-difference gradient checker.
//
// All helpers work on contiguous CPU tensors. The gradient checker needs F64: it is meant to be
// used with the fp64 path of CpuBackend, where tight tolerances are meaningful.
//
// Relative error, as used by both max_relative_error() and check_gradient():
//     err_i = |a_i - b_i| / max(|a_i| + |b_i|, floor),
//     floor = max(floor_fraction * max_j max(|a_j|, |b_j|), 1e-300).
// The symmetric denominator |a| + |b| (cs231n style) treats both sides alike; for a close pair it
// is about half the one-sided relative error |a - b| / |b|. The floor keeps elements that are
// (nearly) zero — e.g. the gradient of a key no query sees — from turning rounding noise into a
// huge relative error: they are compared in absolute terms against a fraction of the tensor's
// scale. Because the floor follows the tensor's largest element, a gradient that is wrongly all
// zero (or wrongly scaled) still gives an O(1) error.
//
// Step and threshold for fp64 checks (the recommended use: h = 1e-5, error < 1e-6):
//   * the central difference (L(x+h) - L(x-h)) / 2h has truncation error h^2 * L''' / 6, about
//     1e-10 relative to the derivative for O(1) inputs;
//   * rounding in the two loss evaluations adds about eps * |L| / h ~ 2e-11 * |L| — which is
//     why losses should be measured from the unperturbed output (projected_change below): then
//     |L| ~ h * |gradient| and only the rounding of the perturbed outputs themselves remains;
//   so a correct gradient shows errors of 1e-11 .. 1e-8, and 1e-6 leaves two orders of margin,
//   while a wrong sign, a missing term or a wrong factor gives errors of order 1e-2 .. 1.
//   The default floor_fraction = 1e-3 keeps that noise negligible on near-zero elements too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "core/rng.h"
#include "core/tensor.h"

namespace sf::test {

// Fills every element of an F32 or F64 tensor with independent N(0, stddev^2) draws. Returns the
// root mean square of the values written (0 for an empty tensor).
double fill_normal(Tensor& t, Rng& rng, double stddev = 1.0);
// Fills every element of an F32 or F64 tensor with independent uniform draws in [lo, hi).
void fill_uniform(Tensor& t, Rng& rng, double lo, double hi);

// A new F32 or F64 CPU tensor of the given shape filled by fill_normal.
Tensor random_normal(const Shape& shape, DType dtype, Rng& rng, double stddev = 1.0);
// A new I32 tensor of ids drawn uniformly from [0, vocab).
Tensor random_ids(const Shape& shape, int64_t vocab, Rng& rng);

// A contiguous copy of `t` (F32 or F64) in `dtype`. F32 -> F64 is exact, F64 -> F32 rounds.
Tensor convert(const Tensor& t, DType dtype);
// A contiguous copy of `t` with the same dtype (any dtype).
Tensor clone(const Tensor& t);
// A contiguous copy of columns [start, start + width) of a contiguous 2-D CPU tensor.
Tensor columns(const Tensor& matrix, int64_t start, int64_t width);

// Element i of an F32 or F64 tensor, as double (flat contiguous index).
double value_at(const Tensor& t, int64_t i);

// max_i |a_i - b_i| / max(|a_i| + |b_i|, floor) with the floor defined in the header comment.
// a and b: F32 or F64 (may differ), same number of elements. NaN anywhere gives +infinity.
double max_relative_error(const Tensor& a, const Tensor& b, double floor_fraction = 1e-3);
// max_i |a_i - b_i| (NaN anywhere gives +infinity).
double max_abs_difference(const Tensor& a, const Tensor& b);

// The random projection loss for gradient checks, measured from a baseline:
//     sum_i (out_i - base_i) * weights_i, accumulated in double.
// Its gradient is that of sum(out * weights) (base is a constant: the output at the unperturbed
// inputs), but its value stays of order h * |gradient| instead of |sum(out * weights)|, so the
// rounding of the total (ulp(L) / h in the numeric derivative) no longer limits the check.
// All three tensors: F32 or F64, same number of elements.
double projected_change(const Tensor& out, const Tensor& base, const Tensor& weights);

struct GradCheckOptions {
  double step = 1e-5;            // h of the central difference
  // 2: (L(x+h) - L(x-h)) / 2h.  4: the five-point stencil
  // (-L(x+2h) + 8 L(x+h) - 8 L(x-h) + L(x-2h)) / 12h, truncation O(h^4): with h = 1e-3 both
  // truncation (~1e-12) and rounding (~eps |L| / h ~ 1e-13 |L|) are far below 1e-6 even for
  // gradient elements 1e5 times smaller than the loss — use it for whole-model checks, where
  // the loss is a sum over many terms and second-order differences at h = 1e-5 hit rounding.
  int order = 2;
  int64_t max_elements = 0;      // > 0: check a random subset of at most this many elements
  uint64_t seed = 1234;          // picks the subset
  double floor_fraction = 1e-3;  // see the header comment
  // A floor that does not follow the tensor's scale: gradients that are exactly zero by
  // structure (e.g. cross-attention queries under window 1, where softmax over one key is
  // constant) are compared in absolute terms, |num - ana| < threshold * absolute_floor.
  double absolute_floor = 0.0;
};

struct GradCheckResult {
  double max_error = 0.0;     // max relative error over the checked elements
  int64_t worst_index = -1;   // flat index of the element with that error
  double numeric = 0.0;       // numeric and analytic derivative at worst_index
  double analytic = 0.0;
  int64_t checked = 0;        // number of elements checked
  std::string describe() const;  // one line for test failure messages
};

// Central finite-difference check of d loss / d x against `analytic`.
// x: F64, contiguous; `loss` must read x (through the tensor, whose buffer is modified in place)
// and return the scalar loss. Each checked element is set to x_i + h and x_i - h, the loss is
// evaluated twice, and x_i is restored bit-exactly. analytic: F64 or F32, same numel as x.
GradCheckResult check_gradient(Tensor& x, const Tensor& analytic,
                               const std::function<double()>& loss,
                               const GradCheckOptions& options = {});

}  // namespace sf::test
