// tiny_models.cpp — variant configs and strong random parameters for whole-model tests.
#include "support/tiny_models.h"

#include "support/gradcheck.h"

namespace sf::test {

std::vector<Variant> tiny_variants() {
  std::vector<Variant> v;
  auto add = [&](const std::string& name, auto&& edit) {
    ModelConfig c = tiny_config();
    edit(c);
    c.validate(name);
    v.push_back({name, c});
  };
  add("baseline", [](ModelConfig&) {});
  add("separate_p2", [](ModelConfig& c) { c.n_stacks = 2; });
  add("shared_p2", [](ModelConfig& c) { c.n_stacks = 2; c.weights = WeightSharing::shared; });
  add("p3_linear", [](ModelConfig& c) { c.n_stacks = 3; c.combine = CombineMode::linear; });
  add("window1", [](ModelConfig& c) { c.n_stacks = 2; c.cross_window = 1; });
  add("window2", [](ModelConfig& c) { c.n_stacks = 2; c.cross_window = 2; });
  add("no_cross_rope", [](ModelConfig& c) { c.n_stacks = 2; c.cross_rope = false; });
  add("gqa", [](ModelConfig& c) {
    c.n_stacks = 2;
    c.d_model = 16;
    c.n_heads = 4;
    c.n_kv_heads = 2;
  });
  add("tied", [](ModelConfig& c) { c.n_stacks = 2; c.tie_embeddings = true; });
  add("shared_p3_linear_window1", [](ModelConfig& c) {
    c.n_stacks = 3;
    c.weights = WeightSharing::shared;
    c.combine = CombineMode::linear;
    c.cross_window = 1;
  });
  return v;
}

ModelConfig byte_training_config(int64_t stacks) {
  ModelConfig c = tiny_config();
  c.vocab_size = 257;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_kv_heads = 2;
  c.ffn_hidden = 32;
  c.max_seq_len = 32;
  c.n_stacks = stacks;
  c.layers_per_stack = 1;
  c.validate("byte_training_config");
  return c;
}

ModelConfig realistic_config(const ModelConfig& tiny) {
  ModelConfig c = tiny;
  const bool grouped = tiny.n_kv_heads != tiny.n_heads;
  c.d_model = 256;
  c.n_heads = 4;
  c.n_kv_heads = grouped ? 2 : 4;
  c.ffn_hidden = 512;
  c.vocab_size = 1000;
  c.max_seq_len = 160;
  c.validate("realistic config");
  return c;
}

void randomize_parameters(Model& model, Rng& rng) {
  for (Parameter& p : model.params().all()) {
    Tensor host = Tensor::zeros(p.value.shape(), DType::f64);
    double* h = host.data<double>();
    const bool is_norm = p.name.size() >= 11 && p.name.compare(p.name.size() - 11, 11, "norm.weight") == 0;
    for (int64_t i = 0; i < host.numel(); ++i) {
      if (is_norm) h[i] = 1.0 + 0.2 * rng.normal();
      else if (p.name == "combine.alpha") h[i] = 0.5 + 0.3 * rng.normal();
      else h[i] = 0.5 * rng.normal();
    }
    Tensor converted = convert(host, p.value.dtype());
    model.backend().copy(p.value, converted);
  }
}

void randomize_parameters_alike(Model& a, Model& b, uint64_t seed) {
  Rng rng_a(seed), rng_b(seed);
  randomize_parameters(a, rng_a);
  randomize_parameters(b, rng_b);
}

}  // namespace sf::test
