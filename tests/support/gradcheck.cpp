// gradcheck.cpp — random tensors, conversions, relative errors and the finite-difference
// gradient checker declared in gradcheck.h.
#include "support/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "core/error.h"

namespace sf::test {

namespace {

void check_floating(const Tensor& t, const char* op) {
  SF_CHECK(t.defined() && t.device() == Device::cpu && t.is_contiguous(),
           "{}: contiguous CPU tensor expected", op);
  SF_CHECK(t.dtype() == DType::f32 || t.dtype() == DType::f64, "{}: F32 or F64 expected, got {}",
           op, t.describe());
}

void set_value(Tensor& t, int64_t i, double value) {
  if (t.dtype() == DType::f64) {
    t.data<double>()[i] = value;
  } else {
    t.data<float>()[i] = static_cast<float>(value);
  }
}

// Largest |value| of a tensor, NaN propagated as infinity.
double max_magnitude(const Tensor& t) {
  double m = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = std::fabs(value_at(t, i));
    m = std::isnan(v) ? std::numeric_limits<double>::infinity() : std::max(m, v);
  }
  return m;
}

double relative_error(double a, double b, double floor) {
  if (std::isnan(a) || std::isnan(b)) return std::numeric_limits<double>::infinity();
  if (a == b) return 0.0;  // also covers equal infinities
  return std::fabs(a - b) / std::max(std::fabs(a) + std::fabs(b), floor);
}

}  // namespace

double value_at(const Tensor& t, int64_t i) {
  if (t.dtype() == DType::f64) return t.data<double>()[i];
  return t.data<float>()[i];
}

double fill_normal(Tensor& t, Rng& rng, double stddev) {
  check_floating(t, "fill_normal");
  double sum_sq = 0.0;
  for (int64_t i = 0; i < t.numel(); ++i) {
    const double v = stddev * rng.normal();
    set_value(t, i, v);
    sum_sq += v * v;
  }
  return t.numel() > 0 ? std::sqrt(sum_sq / static_cast<double>(t.numel())) : 0.0;
}

void fill_uniform(Tensor& t, Rng& rng, double lo, double hi) {
  check_floating(t, "fill_uniform");
  for (int64_t i = 0; i < t.numel(); ++i) set_value(t, i, lo + (hi - lo) * rng.uniform());
}

Tensor random_normal(const Shape& shape, DType dtype, Rng& rng, double stddev) {
  Tensor t = Tensor::zeros(shape, dtype);
  fill_normal(t, rng, stddev);
  return t;
}

Tensor random_ids(const Shape& shape, int64_t vocab, Rng& rng) {
  SF_CHECK(vocab > 0, "random_ids: vocab must be positive, got {}", vocab);
  Tensor t = Tensor::zeros(shape, DType::i32);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng.below(vocab));
  return t;
}

Tensor convert(const Tensor& t, DType dtype) {
  check_floating(t, "convert");
  Tensor out = Tensor::zeros(t.shape(), dtype);
  check_floating(out, "convert");
  for (int64_t i = 0; i < t.numel(); ++i) set_value(out, i, value_at(t, i));
  return out;
}

Tensor clone(const Tensor& t) {
  SF_CHECK(t.defined() && t.device() == Device::cpu && t.is_contiguous(),
           "clone: contiguous CPU tensor expected");
  Tensor out = Tensor::zeros(t.shape(), t.dtype());
  std::memcpy(out.raw(), t.raw(), t.nbytes());
  return out;
}

Tensor columns(const Tensor& matrix, int64_t start, int64_t width) {
  SF_CHECK(matrix.defined() && matrix.device() == Device::cpu && matrix.is_contiguous() &&
               matrix.ndim() == 2 && start >= 0 && width >= 0 && start + width <= matrix.dim(1),
           "columns: [{}, {}) of {}", start, start + width, matrix.describe());
  const int64_t rows = matrix.dim(0), cols = matrix.dim(1);
  const size_t elem = dtype_size(matrix.dtype());
  Tensor out = Tensor::zeros({rows, width}, matrix.dtype());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char*>(out.raw()) + r * width * elem,
                static_cast<const char*>(matrix.raw()) + (r * cols + start) * elem, width * elem);
  return out;
}

double max_relative_error(const Tensor& a, const Tensor& b, double floor_fraction) {
  check_floating(a, "max_relative_error");
  check_floating(b, "max_relative_error");
  SF_CHECK(a.numel() == b.numel(), "max_relative_error: {} vs {}", a.describe(), b.describe());
  const double floor =
      std::max(floor_fraction * std::max(max_magnitude(a), max_magnitude(b)), 1e-300);
  double worst = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    worst = std::max(worst, relative_error(value_at(a, i), value_at(b, i), floor));
  }
  return worst;
}

double max_abs_difference(const Tensor& a, const Tensor& b) {
  check_floating(a, "max_abs_difference");
  check_floating(b, "max_abs_difference");
  SF_CHECK(a.numel() == b.numel(), "max_abs_difference: {} vs {}", a.describe(), b.describe());
  double worst = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = std::fabs(value_at(a, i) - value_at(b, i));
    worst = std::isnan(d) ? std::numeric_limits<double>::infinity() : std::max(worst, d);
  }
  return worst;
}

double projected_change(const Tensor& out, const Tensor& base, const Tensor& weights) {
  check_floating(out, "projected_change");
  check_floating(base, "projected_change");
  check_floating(weights, "projected_change");
  SF_CHECK(out.numel() == base.numel() && out.numel() == weights.numel(),
           "projected_change: {}, {} and {} differ in size", out.describe(), base.describe(),
           weights.describe());
  double sum = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    sum += (value_at(out, i) - value_at(base, i)) * value_at(weights, i);
  }
  return sum;
}

std::string GradCheckResult::describe() const {
  return fmt::format("max relative error {:.3e} at element {} (numeric {:.12g}, analytic {:.12g}), "
                     "{} elements checked",
                     max_error, worst_index, numeric, analytic, checked);
}

GradCheckResult check_gradient(Tensor& x, const Tensor& analytic,
                               const std::function<double()>& loss,
                               const GradCheckOptions& options) {
  check_floating(x, "check_gradient");
  check_floating(analytic, "check_gradient");
  SF_CHECK(x.dtype() == DType::f64, "check_gradient: x must be F64, got {}", x.describe());
  SF_CHECK(x.numel() == analytic.numel(), "check_gradient: x {} vs gradient {}", x.describe(),
           analytic.describe());
  SF_CHECK(options.step > 0.0, "check_gradient: step must be positive, got {}", options.step);
  SF_CHECK(options.order == 2 || options.order == 4, "check_gradient: order must be 2 or 4, got {}",
           options.order);

  // Which elements: all of them, or a random subset (partial Fisher–Yates shuffle).
  std::vector<int64_t> indices(static_cast<size_t>(x.numel()));
  std::iota(indices.begin(), indices.end(), int64_t{0});
  if (options.max_elements > 0 && x.numel() > options.max_elements) {
    Rng rng(options.seed);
    for (int64_t i = 0; i < options.max_elements; ++i) {
      const int64_t j = i + static_cast<int64_t>(rng.below(static_cast<uint64_t>(x.numel() - i)));
      std::swap(indices[i], indices[j]);
    }
    indices.resize(static_cast<size_t>(options.max_elements));
    std::sort(indices.begin(), indices.end());
  }

  double* px = x.data<double>();
  const double h = options.step;
  std::vector<double> numeric(indices.size());
  for (size_t n = 0; n < indices.size(); ++n) {
    const int64_t i = indices[n];
    const double original = px[i];
    auto loss_at = [&](double offset) {
      px[i] = original + offset;
      return loss();
    };
    if (options.order == 4) {
      numeric[n] = (-loss_at(2 * h) + 8 * loss_at(h) - 8 * loss_at(-h) + loss_at(-2 * h)) / (12 * h);
    } else {
      numeric[n] = (loss_at(h) - loss_at(-h)) / (2.0 * h);
    }
    px[i] = original;
  }

  double scale = max_magnitude(analytic);
  for (double v : numeric) {
    scale = std::isnan(v) ? std::numeric_limits<double>::infinity() : std::max(scale, std::fabs(v));
  }
  const double floor =
      std::max({options.floor_fraction * scale, options.absolute_floor, 1e-300});
  GradCheckResult result;
  result.checked = static_cast<int64_t>(indices.size());
  for (size_t n = 0; n < indices.size(); ++n) {
    const double ana = value_at(analytic, indices[n]);
    const double err = relative_error(numeric[n], ana, floor);
    if (result.worst_index < 0 || err > result.max_error) {
      result.max_error = err;
      result.worst_index = indices[n];
      result.numeric = numeric[n];
      result.analytic = ana;
    }
  }
  return result;
}

}  // namespace sf::test
