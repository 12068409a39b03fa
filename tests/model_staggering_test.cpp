// model_staggering_test.cpp — the staggering itself (spec §3), shared-weight sharing, the
// baseline as a first-class model, and parameter counts against hand-computed formulas.
//
// Staggering: perturbing stack k-1's output at position i must leave every stack-k output (and,
// with combine = last, the logits) at positions <= i bit-identical and must change position i+1.
// With cross_window = w, stack k reads memory position i only at positions i+1..i+w; positions
// > i + w are then unchanged when the stack has one layer. With two or more layers they DO
// change, by design: stack k's own self-attention carries what position i+1 read onwards, so
// the test expects "unchanged" there only for h = 1 and "changed after i" for h >= 2. Bit-identical is the
// right bar: the rows that may not see the perturbation are computed from exactly the same
// numbers (masked keys are skipped, not multiplied by zero).
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "model/weights.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

// Largest |a - b| over the D features of row (b, t) of two [B*T, D] tensors.
double row_difference(const Tensor& a, const Tensor& b, int64_t row) {
  const int64_t D = a.dim(-1);
  double diff = 0.0;
  for (int64_t d = 0; d < D; ++d)
    diff = std::max(diff, std::fabs(test::value_at(a, row * D + d) - test::value_at(b, row * D + d)));
  return diff;
}

struct StaggerCase {
  int64_t layers_per_stack;
  int64_t n_stacks;
  int64_t window;
  CombineMode combine;
  WeightSharing weights;
};

class Staggering : public ::testing::TestWithParam<StaggerCase> {};

TEST_P(Staggering, PerturbingStackOutputOnlyReachesLaterPositionsOfNextStack) {
  const StaggerCase sc = GetParam();
  ModelConfig c = test::tiny_config();
  c.n_stacks = sc.n_stacks;
  c.layers_per_stack = sc.layers_per_stack;
  c.cross_window = sc.window;
  c.combine = sc.combine;
  c.weights = sc.weights;
  c.validate("staggering");
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  Rng rng(3);
  test::randomize_parameters(model, rng);
  const int64_t B = 2, T = 9;
  Tensor tokens = test::random_ids({B, T}, c.vocab_size, rng);

  model.forward(tokens);
  std::vector<Tensor> base_out;
  for (int64_t s = 0; s < c.n_stacks; ++s) base_out.push_back(test::clone(model.stack_output(s)));
  Tensor base_logits = test::clone(model.logits());

  for (int64_t k = 1; k < c.n_stacks; ++k) {
    for (int64_t i : {0L, 3L, T - 2}) {
      const int64_t batch = 1;
      ForwardHooks hooks;
      hooks.after_stack = [&](int64_t s, Tensor& out) {
        if (s != k - 1) return;
        float* row = out.data<float>() + (batch * T + i) * c.d_model;
        for (int64_t d = 0; d < c.d_model; ++d) row[d] += 0.5f * static_cast<float>(d % 3 + 1);
      };
      model.forward(tokens, Tensor(), &hooks);
      const Tensor& out_k = model.stack_output(k);
      for (int64_t t = 0; t < T; ++t) {
        const int64_t row = batch * T + t;
        const double diff = row_difference(out_k, base_out[k], row);
        const bool window_bounds_reach = sc.window == 0 || sc.layers_per_stack > 1;
        const bool visible = t > i && (window_bounds_reach || t <= i + sc.window);
        if (visible) {
          EXPECT_GT(diff, 1e-4) << "stack " << k << " position " << t << " must see the change at " << i;
        } else {
          EXPECT_EQ(diff, 0.0) << "stack " << k << " position " << t << " changed by a perturbation at " << i;
        }
        // The other sequence of the batch is never affected.
        EXPECT_EQ(row_difference(out_k, base_out[k], (1 - batch) * T + t), 0.0);
      }
      // Logits come from the last stack when combine = last, and only stack k = p-1's
      // perturbation reaches them through the memory alone.
      if (sc.combine == CombineMode::last && k == c.n_stacks - 1) {
        Tensor logits = model.logits().view({B * T, c.vocab_size});
        Tensor base = base_logits.view({B * T, c.vocab_size});
        for (int64_t t = 0; t <= i; ++t) EXPECT_EQ(row_difference(logits, base, batch * T + t), 0.0);
        if (i + 1 < T) {
          EXPECT_GT(row_difference(logits, base, batch * T + i + 1), 1e-5);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, Staggering,
    ::testing::Values(StaggerCase{2, 2, 0, CombineMode::last, WeightSharing::separate},
                      StaggerCase{1, 2, 1, CombineMode::last, WeightSharing::separate},
                      StaggerCase{1, 2, 2, CombineMode::last, WeightSharing::separate},
                      StaggerCase{1, 2, 3, CombineMode::last, WeightSharing::shared},
                      StaggerCase{2, 2, 2, CombineMode::last, WeightSharing::separate},
                      StaggerCase{2, 3, 0, CombineMode::linear, WeightSharing::separate},
                      StaggerCase{1, 3, 2, CombineMode::last, WeightSharing::shared}));

TEST(Staggering, PositionZeroCrossAttentionIsExactlyZero) {
  // With stack 1's output replaced by garbage everywhere, stack 2's position 0 must not change:
  // it sees no memory at all, and its cross-attention output is exactly zero.
  ModelConfig c = test::tiny_config();
  c.n_stacks = 2;
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  Rng rng(11);
  test::randomize_parameters(model, rng);
  Tensor tokens = test::random_ids({1, 5}, c.vocab_size, rng);
  model.forward(tokens);
  Tensor base = test::clone(model.stack_output(1));
  ForwardHooks hooks;
  hooks.after_stack = [&](int64_t s, Tensor& out) {
    if (s == 0) test::fill_normal(out, rng, 10.0);
  };
  model.forward(tokens, Tensor(), &hooks);
  EXPECT_EQ(row_difference(model.stack_output(1), base, 0), 0.0);
  EXPECT_GT(row_difference(model.stack_output(1), base, 1), 1e-3);
}

TEST(SharedWeights, StacksHoldTheSameTensors) {
  ModelConfig c = test::tiny_config();
  c.n_stacks = 3;
  c.weights = WeightSharing::shared;
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  const ModelWeights& w = model.weights();
  for (int64_t s = 1; s < c.n_stacks; ++s) {
    for (int64_t l = 0; l < c.layers_per_stack; ++l) {
      const LayerWeights& a = w.stacks[0].layers[l];
      const LayerWeights& b = w.stacks[s].layers[l];
      for (auto [x, y] : {std::pair{&a.wq, &b.wq}, {&a.wk, &b.wk}, {&a.wv, &b.wv}, {&a.wo, &b.wo},
                          {&a.w1, &b.w1}, {&a.w2, &b.w2}, {&a.w3, &b.w3},
                          {&a.attn_norm, &b.attn_norm}, {&a.mlp_norm, &b.mlp_norm}}) {
        EXPECT_EQ(x->value.buffer(), y->value.buffer());
        EXPECT_EQ(x->grad.buffer(), y->grad.buffer());
      }
      EXPECT_FALSE(model.params().contains(fmt::format("stacks.{}.layers.{}.attn.wq.weight", s, l)));
      EXPECT_TRUE(model.params().contains(fmt::format("stacks.{}.layers.{}.cross_attn.wq.weight", s, l)));
      if (s >= 2) {  // cross-attention is never shared
        EXPECT_NE(b.cross_wq.value.buffer(), w.stacks[1].layers[l].cross_wq.value.buffer());
      }
    }
    EXPECT_TRUE(model.params().contains(fmt::format("stacks.{}.mem_norm.weight", s)));
  }
}

// The batched projections read (wq, wk, wv), (wk, wv) and (w1, w3) as stacked [G, rows, D]
// views: element (g, r, c) of a view must be element (r, c) of parameter g, for values and
// gradients, in each stack, with and without grouped-query attention (where q does not stack).
TEST(StackedWeights, ViewsAreTheParameters) {
  for (int64_t kv_heads : {int64_t{0}, int64_t{1}}) {
    ModelConfig c = test::tiny_config();
    c.n_stacks = 2;
    if (kv_heads > 0) c.n_kv_heads = kv_heads;
    CpuBackend backend;
    Model model(c, backend, DType::f32);
    Rng rng(5);
    test::randomize_parameters(model, rng);
    for (Parameter& p : model.params().all())
      for (int64_t i = 0; i < p.grad.numel(); ++i) p.grad.data<float>()[i] = static_cast<float>(rng.normal());
    auto expect_stack = [&](const Weight& stacked, std::vector<const Weight*> parts,
                            const std::string& what) {
      ASSERT_TRUE(stacked.value.defined()) << what;
      ASSERT_EQ(stacked.value.dim(0), static_cast<int64_t>(parts.size())) << what;
      for (size_t g = 0; g < parts.size(); ++g) {
        EXPECT_EQ(test::max_abs_difference(stacked.value.select(g), parts[g]->value), 0.0) << what;
        EXPECT_EQ(test::max_abs_difference(stacked.grad.select(g), parts[g]->grad), 0.0) << what;
      }
    };
    const ModelConfig& mc = model.config();  // n_kv_heads resolved
    for (int64_t s = 0; s < mc.n_stacks; ++s) {
      const LayerWeights& L = model.weights().stacks[s].layers[0];
      const std::string where = fmt::format("stack {} kv_heads {}", s, mc.n_kv_heads);
      if (mc.n_kv_heads == mc.n_heads) expect_stack(L.qkv, {&L.wq, &L.wk, &L.wv}, "qkv " + where);
      else EXPECT_FALSE(L.qkv.value.defined()) << "GQA: q has another shape " << where;
      expect_stack(L.kv, {&L.wk, &L.wv}, "kv " + where);
      expect_stack(L.w13, {&L.w1, &L.w3}, "w13 " + where);
      if (s >= 1) expect_stack(L.cross_kv, {&L.cross_wk, &L.cross_wv}, "cross kv " + where);
    }
  }
}

TEST(SharedWeights, GradientIsTheSumOverPasses) {
  // The shared gradient must equal the sum of the gradients the same weights get when each stack
  // has its own copy: build a separate-weights model whose every stack holds stack 0's shared
  // values, backprop, and sum the per-stack gradients.
  ModelConfig shared_c = test::tiny_config();
  shared_c.n_stacks = 2;
  shared_c.weights = WeightSharing::shared;
  ModelConfig separate_c = shared_c;
  separate_c.weights = WeightSharing::separate;
  CpuBackend backend;
  Model shared(shared_c, backend, DType::f64);
  Model separate(separate_c, backend, DType::f64);
  Rng rng(8);
  test::randomize_parameters(shared, rng);
  for (Parameter& p : separate.params().all()) {
    std::string source = p.name;
    if (source.rfind("stacks.1.layers.", 0) == 0 && source.find("cross") == std::string::npos)
      source.replace(0, 8, "stacks.0");
    backend.copy(p.value, shared.params().get(source).value);
  }
  Tensor tokens = test::random_ids({2, 6}, shared_c.vocab_size, rng);
  Tensor targets = test::random_ids({2, 6}, shared_c.vocab_size, rng);
  shared.params().zero_grad(backend);
  separate.params().zero_grad(backend);
  EXPECT_DOUBLE_EQ(shared.forward(tokens, targets), separate.forward(tokens, targets));
  shared.backward();
  separate.backward();
  for (const Parameter& p : shared.params().all()) {
    Tensor expected = test::clone(separate.params().get(p.name).grad);
    if (p.name.rfind("stacks.0.layers.", 0) == 0) {
      std::string twin = p.name;
      twin.replace(0, 8, "stacks.1");
      backend.axpy(expected, 1.0, separate.params().get(twin).grad);
    }
    EXPECT_LT(test::max_relative_error(p.grad, expected), 1e-12) << p.name;
  }
}

TEST(Baseline, SingleStackHasNoCrossAttentionOrMemory) {
  ModelConfig c = test::tiny_config();
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  for (const Parameter& p : model.params().all()) {
    EXPECT_EQ(p.name.find("cross"), std::string::npos) << p.name;
    EXPECT_EQ(p.name.find("mem_norm"), std::string::npos) << p.name;
  }
}

// Hand-computed parameter count of a config (the formulas of docs/model.md).
int64_t expected_parameters(const ModelConfig& c) {
  const int64_t D = c.d_model, V = c.vocab_size, F = c.ffn_hidden, p = c.n_stacks,
                h = c.layers_per_stack;
  const int64_t Q = c.n_heads * c.head_dim(), KV = c.n_kv_heads * c.head_dim();
  const int64_t attention = D * Q + 2 * D * KV + Q * D;  // wq, wk, wv, wo
  const int64_t mlp = 3 * D * F;
  const int64_t block = attention + mlp + 2 * D;  // + attn_norm, mlp_norm
  const int64_t block_sets = c.weights == WeightSharing::shared ? 1 : p;
  const int64_t cross = (p - 1) * h * (attention + D);  // cross_attn + cross_norm
  const int64_t mem_norms = (p - 1) * D;
  const int64_t head = c.tie_embeddings ? 0 : V * D;
  const int64_t alpha = c.combine == CombineMode::linear ? p : 0;
  return V * D + block_sets * h * block + cross + mem_norms + alpha + D + head;
}

TEST(ParameterCounts, MatchHandComputedFormulas) {
  CpuBackend backend;
  for (const test::Variant& v : test::tiny_variants()) {
    Model model(v.config, backend, DType::f32);
    const auto counts = parameter_counts(model.params());
    EXPECT_EQ(counts.at("total"), expected_parameters(v.config)) << v.name;
    EXPECT_EQ(counts.at("total"), model.params().count_elements()) << v.name;
  }
  // The reference pair: 2 x 6 StagFormer vs 12-layer baseline at d_model 768.
  ModelConfig stag;
  stag.vocab_size = 50304;
  stag.d_model = 768;
  stag.n_heads = 12;
  stag.ffn_hidden = 2048;
  stag.n_stacks = 2;
  stag.layers_per_stack = 6;
  stag.validate("stag");
  ModelConfig base = stag;
  base.n_stacks = 1;
  base.layers_per_stack = 12;
  const int64_t D = 768, V = 50304, F = 2048;
  const int64_t block = 4 * D * D + 3 * D * F + 2 * D;
  EXPECT_EQ(expected_parameters(base), 2 * V * D + 12 * block + D);
  EXPECT_EQ(expected_parameters(stag), 2 * V * D + 12 * block + 6 * (4 * D * D + D) + D + D);
}

}  // namespace
}  // namespace sf
