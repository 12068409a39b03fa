// tiny_models.h — the small model variants every whole-model test runs over.
//
// One named config per variant the issue lists: baseline, separate/shared p=2, p=3 with a linear
// combination, windows 1 and 2, cross_rope off, GQA, tied embeddings. Sizes are tiny (d_model 8,
// 2 heads) so that fp64 finite differences over every parameter stay fast.
#pragma once

#include <ostream>
#include <string>
#include <vector>

#include "core/rng.h"
#include "model/config.h"
#include "model/model.h"
#include "support/tiny_config.h"

namespace sf::test {

struct Variant {
  std::string name;
  ModelConfig config;
};

// GoogleTest prints a parameter with this (the name) instead of its bytes.
inline void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

std::vector<Variant> tiny_variants();

// The same variant at GPU-realistic sizes: head_dim 64 (the tensor-core attention path),
// d_model 256, 4 query heads (2 kv heads for a GQA variant), ffn 512, vocab 1000, contexts up to
// 160. BF16 tests use these with the standard initialisation: at the tiny sizes with strong
// random weights, bf16 rounding alone moves gradients by 10-40%, which would hide real bugs
// behind a loose tolerance.
ModelConfig realistic_config(const ModelConfig& tiny);

// The byte-level model the training tests run (vocab 257, d_model 16, 2 heads, ffn 32, context
// 32, `stacks` stacks of one layer): small enough for many optimizer steps in a test.
ModelConfig byte_training_config(int64_t stacks = 2);

// Replaces every parameter with random values large enough that attention is far from uniform
// and every nonlinearity matters (matrices ~ N(0, 0.5^2), norm weights ~ 1 + N(0, 0.2^2),
// combine.alpha ~ N(0.5, 0.3^2)). Finite-difference checks on a model at its 0.02-std init
// would exercise a nearly linear function and miss errors.
void randomize_parameters(Model& model, Rng& rng);
// The same random values in two models of one config (each from its own Rng(seed)): the
// starting point of tests that run two ways of computing one thing side by side.
void randomize_parameters_alike(Model& a, Model& b, uint64_t seed);

}  // namespace sf::test
