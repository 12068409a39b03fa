// model_step_test.cpp — Model::forward_backward_async, the trainer's micro-batch call, on a
// backend that cannot record (the CPU): exactly forward_async + backward, for every variant; a
// step's first micro-batch overwriting the gradients equals zeroing them first.
// (Recording and replay on the GPU: tests/cuda_model_test.cpp, RecordedStepsMatchDirectOnes.)
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

class MicroBatchStep : public ::testing::TestWithParam<test::Variant> {};

TEST_P(MicroBatchStep, EqualsForwardThenBackward) {
  const ModelConfig& c = GetParam().config;
  CpuBackend backend;
  EXPECT_FALSE(backend.can_record());
  Model a(c, backend), b(c, backend);
  test::randomize_parameters_alike(a, b, 4);
  Rng rng(8);
  for (int step = 0; step < 3; ++step) {
    Tensor tokens = test::random_ids({2, 6}, c.vocab_size, rng);
    Tensor targets = test::random_ids({2, 6}, c.vocab_size, rng);
    a.params().zero_grad(backend);
    b.params().zero_grad(backend);
    a.forward_async(tokens, targets);
    a.backward(0.25);
    b.forward_backward_async(tokens, targets, 0.25);
    EXPECT_EQ(a.loss(), b.loss());
    for (const Parameter& p : a.params().all())
      EXPECT_EQ(test::max_abs_difference(p.grad, b.params().get(p.name).grad), 0.0) << p.name;
  }
  Tensor tokens = test::random_ids({1, 4}, c.vocab_size, rng);
  EXPECT_THROW(b.forward_backward_async(tokens, Tensor()), Error) << "targets are required";
}

// The trainer's steps: the first micro-batch overwrites whatever the gradients hold, the second
// adds. Equal, to the bit, to zeroing and adding twice; and the products do write (the count of
// product-written gradients is what the model's backward should give).
TEST_P(MicroBatchStep, OverwritingEqualsZeroingThenAdding) {
  const ModelConfig& c = GetParam().config;
  CpuBackend backend;
  Model a(c, backend), b(c, backend);
  test::randomize_parameters_alike(a, b, 4);
  Rng rng(9);
  for (int step = 0; step < 3; ++step) {
    int garbage = 0;  // what a gradient holds after an optimizer step: anything
    for (Parameter& p : b.params().all()) backend.fill(p.grad, 1000.0 + garbage++);
    a.params().zero_grad(backend);
    for (int micro = 0; micro < 2; ++micro) {
      Tensor tokens = test::random_ids({2, 6}, c.vocab_size, rng);
      Tensor targets = test::random_ids({2, 6}, c.vocab_size, rng);
      a.forward_backward_async(tokens, targets, 0.5);
      b.forward_backward_async(tokens, targets, 0.5,
                               micro == 0 ? GradientStart::overwrite : GradientStart::accumulate);
    }
    for (const Parameter& p : a.params().all())
      EXPECT_EQ(test::max_abs_difference(p.grad, b.params().get(p.name).grad), 0.0)
          << p.name << " at step " << step;
  }
  // Self-attention: (wq, wk, wv) as one product (two, wq and (wk, wv), with grouped-query
  // attention) and wo; the MLP: (w1, w3) and w2; cross-attention: wq, (wk, wv), wo per stack
  // >= 1 (its own weights even when the others are shared); the LM head (tied: the head's
  // product comes before the embedding's scatter, so it writes too).
  const int64_t self_layers =
      (c.weights == WeightSharing::shared ? 1 : c.n_stacks) * c.layers_per_stack;
  const int64_t per_self_layer = c.n_kv_heads == c.n_heads ? 4 : 5;
  const int64_t cross_layers = (c.n_stacks - 1) * c.layers_per_stack;
  EXPECT_EQ(static_cast<int64_t>(b.gradient_writes().product_written_ranges()),
            self_layers * per_self_layer + cross_layers * 3 + 1);
}

INSTANTIATE_TEST_SUITE_P(Variants, MicroBatchStep, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
