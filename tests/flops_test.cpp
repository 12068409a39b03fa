// flops_test.cpp — the training-FLOP count behind MFU (src/train/flops.h): hand-computed values
// for the GPT-2-small pair (the same numbers the PyTorch twin's bench reports), shared weights
// counted as executed, and the tied head counted once.
#include <gtest/gtest.h>

#include "model/config.h"
#include "train/flops.h"

namespace sf {
namespace {

ModelConfig gpt2_small(int64_t stacks, int64_t layers) {
  ModelConfig c;
  c.vocab_size = 50304;
  c.d_model = 768;
  c.n_heads = 12;
  c.n_kv_heads = 12;
  c.ffn_hidden = 2048;
  c.max_seq_len = 1024;
  c.n_stacks = stacks;
  c.layers_per_stack = layers;
  c.validate("gpt2 small");
  return c;
}

TEST(TrainingFlops, Gpt2SmallPairByHand) {
  // Baseline: 12 layers x (4*768^2 + 3*768*2048 + 2*768) + final norm + head 50304*768.
  const TrainingFlops base = training_flops(gpt2_small(1, 12), 1024);
  EXPECT_EQ(base.matmul_parameters, 123587328);
  EXPECT_EQ(base.attention_blocks, 12);
  EXPECT_DOUBLE_EQ(base.per_token, 6.0 * 123587328 + 12.0 * 12 * 768 * 1024);  // 8.548e8
  // 2 x 6: 12 self-attention + 6 cross-attention sub-blocks.
  const TrainingFlops stag = training_flops(gpt2_small(2, 6), 1024);
  EXPECT_EQ(stag.matmul_parameters, 137748480);
  EXPECT_EQ(stag.attention_blocks, 18);
  EXPECT_DOUBLE_EQ(stag.per_token, 996360192.0);
}

TEST(TrainingFlops, SharedWeightsCountAsExecutedAndTiedHeadOnce) {
  ModelConfig shared = gpt2_small(2, 6);
  shared.weights = WeightSharing::shared;
  EXPECT_EQ(training_flops(shared, 1024).per_token, training_flops(gpt2_small(2, 6), 1024).per_token);
  ModelConfig tied = gpt2_small(1, 12);
  tied.tie_embeddings = true;
  EXPECT_EQ(training_flops(tied, 1024).matmul_parameters, 123587328);
}

}  // namespace
}  // namespace sf
