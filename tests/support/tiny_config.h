// tiny_config.h — the smallest baseline config of the whole-model tests (d_model 8, 2 heads,
// vocab 11, p = 1, 2 layers). Header-only, with nothing but the engine's config, so that the
// fuzz harnesses (tests/fuzz, which do not link the test support library) build on it too.
#pragma once

#include "model/config.h"

namespace sf::test {

inline ModelConfig tiny_config() {
  ModelConfig c;
  c.vocab_size = 11;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_hidden = 12;
  c.max_seq_len = 16;
  c.n_stacks = 1;
  c.layers_per_stack = 2;
  c.seed = 7;
  c.validate("tiny config");
  return c;
}

}  // namespace sf::test
