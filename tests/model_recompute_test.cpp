// model_recompute_test.cpp — activation recomputation (Model::set_activation_recomputation):
// the loss and every gradient are bit-identical to those without it (the same operations on
// the same inputs, on the deterministic CPU backend), for every model variant; it keeps fewer
// activations; and what it no longer keeps is refused clearly.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

class Recompute : public ::testing::TestWithParam<test::Variant> {};

TEST_P(Recompute, SameLossAndGradientsAsKeepingEverything) {
  const ModelConfig& c = GetParam().config;
  CpuBackend backend;
  Model kept(c, backend, DType::f64), recomputed(c, backend, DType::f64);
  test::randomize_parameters_alike(kept, recomputed, 11);
  recomputed.set_activation_recomputation(true);
  EXPECT_TRUE(recomputed.activation_recomputation());

  Rng rng(5);
  // Two shapes one after the other: the second forward plans the activations again.
  for (auto [B, T] : {std::pair<int64_t, int64_t>{2, 7}, {1, 12}}) {
    Tensor tokens = test::random_ids({B, T}, c.vocab_size, rng);
    Tensor targets = test::random_ids({B, T}, c.vocab_size, rng);
    targets.data<int32_t>()[0] = -1;
    kept.params().zero_grad(backend);
    recomputed.params().zero_grad(backend);
    const double loss_kept = kept.forward(tokens, targets);
    kept.backward(0.5);
    const double loss_recomputed = recomputed.forward(tokens, targets);
    recomputed.backward(0.5);
    EXPECT_EQ(loss_kept, loss_recomputed);
    for (const Parameter& p : kept.params().all())
      EXPECT_EQ(test::max_abs_difference(p.grad, recomputed.params().get(p.name).grad), 0.0)
          << p.name << " at B=" << B << " T=" << T;
    if (c.layers_per_stack >= 2) {
      EXPECT_LT(recomputed.activation_bytes(), kept.activation_bytes());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, Recompute, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

TEST(Recompute, PerLayerActivationsAreRefusedAndComeBackWhenSwitchedOff) {
  const ModelConfig c = test::tiny_config();
  CpuBackend backend;
  Model model(c, backend);
  Rng rng(1);
  model.initialize();
  Tensor tokens = test::random_ids({1, 5}, c.vocab_size, rng);
  model.set_activation_recomputation(true);
  model.forward(tokens);
  try {
    (void)model.self_attention(0, 0);
    FAIL() << "self_attention() must be refused while recomputing";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("recomputation"), std::string::npos) << e.what();
  }
  model.set_activation_recomputation(false);
  model.forward(tokens);
  EXPECT_EQ(model.self_attention(0, 1).q.dim(1), 5);
}

}  // namespace
}  // namespace sf
