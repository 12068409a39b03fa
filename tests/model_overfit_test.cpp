// model_overfit_test.cpp — every variant, trained with AdamW on one fixed batch, memorises it.
//
// The end-to-end check that forward, backward and optimizer fit together: the loss on a fixed
// batch of random tokens must fall by more than 90% (from about ln V). A sign error or a missing
// gradient term anywhere makes this fail even when each piece looks plausible on its own.
#include <gtest/gtest.h>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"
#include "train/adamw.h"

namespace sf {
namespace {

class Overfit : public ::testing::TestWithParam<test::Variant> {};

TEST_P(Overfit, LossFallsByMoreThanNinetyPercent) {
  ModelConfig c = GetParam().config;
  c.d_model = 32;
  c.n_heads = 4;
  c.n_kv_heads = c.n_kv_heads == c.n_heads ? 4 : 2;  // keep the GQA variant grouped
  c.ffn_hidden = 64;
  c.vocab_size = 32;
  c.init_std = 0.1;
  c.validate("overfit");
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  model.initialize();
  AdamWConfig opt;
  opt.weight_decay = 0.0;
  AdamW adamw(backend, model.params(), opt);
  Rng rng(17);
  Tensor tokens = test::random_ids({2, 12}, c.vocab_size, rng);
  Tensor targets = test::random_ids({2, 12}, c.vocab_size, rng);
  double first = 0.0, last = 0.0;
  for (int step = 0; step < 150; ++step) {
    model.params().zero_grad(backend);
    last = model.forward(tokens, targets);
    if (step == 0) first = last;
    model.backward();
    adamw.step(1e-2);
  }
  last = model.forward(tokens, targets);
  EXPECT_LT(last, 0.1 * first) << GetParam().name << ": loss " << first << " -> " << last;
}

INSTANTIATE_TEST_SUITE_P(Variants, Overfit, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
