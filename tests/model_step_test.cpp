// model_step_test.cpp — Model::forward_backward_async, the trainer's micro-batch call, on a
// backend that cannot record (the CPU): exactly forward_async + backward, for every variant.
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
  Rng init_a(4), init_b(4), rng(8);
  test::randomize_parameters(a, init_a);
  test::randomize_parameters(b, init_b);
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

INSTANTIATE_TEST_SUITE_P(Variants, MicroBatchStep, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
