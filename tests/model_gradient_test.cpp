// model_gradient_test.cpp — finite-difference checks of the whole model's backward, every variant.
//
// For each variant of support/tiny_models.h, in fp64 on the CPU: the analytic gradient of the
// mean cross-entropy with respect to EVERY parameter tensor is compared with fourth-order
// central differences (five-point stencil, h = 2e-4). Threshold: 1e-6 relative error. A correct
// gradient shows 1e-9 .. 3e-7 (truncation ~h^4 f^(5): these deliberately strong random weights
// make the loss sharply curved — at h = 1e-3 truncation alone reached 2e-5 and halving h cut it
// 16-fold, the h^4 signature; rounding ~eps|L|/h ~ 4e-12 absolute), while a wrong sign, a
// missing term or a wrong factor gives 1e-2 .. 1.
// (Second-order differences at h = 1e-5 are rounding-limited at ~1e-6 on the smallest gradient
// elements of these losses; that is why the higher-order stencil is used here.)
// Up to 24 elements per tensor are checked (all of the small ones), chosen at random.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

class ModelGradient : public ::testing::TestWithParam<test::Variant> {};

TEST_P(ModelGradient, EveryParameterMatchesFiniteDifferences) {
  const test::Variant& variant = GetParam();
  CpuBackend backend;
  Model model(variant.config, backend, DType::f64);
  Rng rng(42);
  test::randomize_parameters(model, rng);
  const int64_t B = 2, T = 7;
  Tensor tokens = test::random_ids({B, T}, variant.config.vocab_size, rng);
  Tensor targets = test::random_ids({B, T}, variant.config.vocab_size, rng);
  targets.data<int32_t>()[3] = -1;  // an ignored position must not contribute

  model.params().zero_grad(backend);
  model.forward(tokens, targets);
  model.backward(1.0);

  auto loss = [&] { return model.forward(tokens, targets); };
  test::GradCheckOptions options;
  options.max_elements = 24;
  options.step = 2e-4;
  options.order = 4;
  // Structurally zero gradients (window 1: softmax over a single key is constant, so the cross
  // queries and keys get exactly 0) are compared absolutely: |num - ana| < 1e-11. The stencil's
  // rounding noise there is ~1e-12 at h = 2e-4; real gradients are ~1e-3 and larger.
  options.absolute_floor = 1e-5;
  for (Parameter& p : model.params().all()) {
    Tensor analytic = test::clone(p.grad);
    test::GradCheckResult r = test::check_gradient(p.value, analytic, loss, options);
    EXPECT_LT(r.max_error, 1e-6) << variant.name << " " << p.name << ": " << r.describe();
  }
}

TEST_P(ModelGradient, LossScaleScalesEveryGradient) {
  const test::Variant& variant = GetParam();
  CpuBackend backend;
  Model model(variant.config, backend, DType::f64);
  Rng rng(5);
  test::randomize_parameters(model, rng);
  Tensor tokens = test::random_ids({1, 6}, variant.config.vocab_size, rng);
  Tensor targets = test::random_ids({1, 6}, variant.config.vocab_size, rng);
  model.params().zero_grad(backend);
  model.forward(tokens, targets);
  model.backward(1.0);
  std::vector<Tensor> once;
  for (const Parameter& p : model.params().all()) once.push_back(test::clone(p.grad));
  model.backward(0.5);  // accumulates: total = 1.5 x
  for (size_t i = 0; i < once.size(); ++i) {
    Tensor expected = test::clone(once[i]);
    backend.scale(expected, 1.5);
    EXPECT_LT(test::max_relative_error(model.params().all()[i].grad, expected), 1e-12)
        << model.params().all()[i].name;
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelGradient, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
