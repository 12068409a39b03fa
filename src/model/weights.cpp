// weights.cpp — parameter registration, initialisation and per-part counts.
#include "model/weights.h"

#include <cmath>

#include "core/rng.h"

namespace sf {

namespace {

Weight as_weight(const Parameter& p) { return Weight{p.value, p.grad}; }

std::string layer_prefix(int64_t s, int64_t l) { return fmt::format("stacks.{}.layers.{}.", s, l); }

// FNV-1a: a stable hash of the parameter name for its private RNG stream.
uint64_t name_hash(const std::string& name) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Rows [first, first + count * rows) of a stacked group as [count, rows, cols].
Weight stacked_view(const std::pair<Tensor, Tensor>& group, int64_t first, int64_t count,
                    int64_t rows) {
  const int64_t cols = group.first.dim(1);
  return Weight{group.first.slice(0, first, count * rows).view({count, rows, cols}),
                group.second.slice(0, first, count * rows).view({count, rows, cols})};
}

// The q/k/v projections of one attention sub-block, registered as one stacked group.
void add_attention_inputs(ParameterSet& params, Backend& backend, DType dtype,
                          const std::string& prefix, int64_t Q, int64_t KV, int64_t D,
                          Weight& wq, Weight& wk, Weight& wv, Weight* qkv, Weight& kv) {
  const auto group = params.add_stacked(
      backend, {prefix + ".wq.weight", prefix + ".wk.weight", prefix + ".wv.weight"}, {Q, KV, KV},
      {D}, dtype, true);
  wq = as_weight(params.get(prefix + ".wq.weight"));
  wk = as_weight(params.get(prefix + ".wk.weight"));
  wv = as_weight(params.get(prefix + ".wv.weight"));
  if (qkv && Q == KV) *qkv = stacked_view(group, 0, 3, Q);
  kv = stacked_view(group, Q, 2, KV);
}

}  // namespace

ModelWeights weights_register(const ModelConfig& c, Backend& backend, DType dtype,
                              ParameterSet& params) {
  const int64_t D = c.d_model, Q = c.n_heads * c.head_dim(), KV = c.kv_dim(), F = c.ffn_hidden;
  auto add = [&](const std::string& name, const Shape& shape, bool decay) {
    return as_weight(params.add(backend, name, shape, dtype, decay));
  };
  ModelWeights w;
  w.tok_embeddings = add("tok_embeddings.weight", {c.vocab_size, D}, true);
  w.stacks.resize(c.n_stacks);
  for (int64_t s = 0; s < c.n_stacks; ++s) {
    StackWeights& stack = w.stacks[s];
    stack.layers.resize(c.layers_per_stack);
    const bool owns_blocks = s == 0 || c.weights == WeightSharing::separate;
    for (int64_t l = 0; l < c.layers_per_stack; ++l) {
      LayerWeights& L = stack.layers[l];
      const std::string p = layer_prefix(s, l);
      if (owns_blocks) {
        L.attn_norm = add(p + "attn_norm.weight", {D}, false);
        add_attention_inputs(params, backend, dtype, p + "attn", Q, KV, D, L.wq, L.wk, L.wv,
                             &L.qkv, L.kv);
        L.wo = add(p + "attn.wo.weight", {D, Q}, true);
      }
      if (s >= 1) {
        L.cross_norm = add(p + "cross_norm.weight", {D}, false);
        // (q reads this stack's stream, k and v the memory: only k and v run as one product)
        add_attention_inputs(params, backend, dtype, p + "cross_attn", Q, KV, D, L.cross_wq,
                             L.cross_wk, L.cross_wv, nullptr, L.cross_kv);
        L.cross_wo = add(p + "cross_attn.wo.weight", {D, Q}, true);
      }
      if (owns_blocks) {
        L.mlp_norm = add(p + "mlp_norm.weight", {D}, false);
        const auto w13 = params.add_stacked(backend, {p + "mlp.w1.weight", p + "mlp.w3.weight"},
                                            {F, F}, {D}, dtype, true);
        L.w1 = as_weight(params.get(p + "mlp.w1.weight"));
        L.w3 = as_weight(params.get(p + "mlp.w3.weight"));
        L.w13 = stacked_view(w13, 0, 2, F);
        L.w2 = add(p + "mlp.w2.weight", {D, F}, true);
      } else {
        // Shared weights: the same tensors (same buffers) as stack 0's layer l.
        const LayerWeights& S = w.stacks[0].layers[l];
        L.attn_norm = S.attn_norm;
        L.wq = S.wq;
        L.wk = S.wk;
        L.wv = S.wv;
        L.qkv = S.qkv;
        L.kv = S.kv;
        L.wo = S.wo;
        L.mlp_norm = S.mlp_norm;
        L.w1 = S.w1;
        L.w3 = S.w3;
        L.w13 = S.w13;
        L.w2 = S.w2;
      }
    }
    if (s >= 1) stack.mem_norm = add(fmt::format("stacks.{}.mem_norm.weight", s), {D}, false);
  }
  if (c.combine == CombineMode::linear) w.combine_alpha = add("combine.alpha", {c.n_stacks}, false);
  w.final_norm = add("final_norm.weight", {D}, false);
  w.lm_head = c.tie_embeddings ? w.tok_embeddings : add("lm_head.weight", {c.vocab_size, D}, true);
  return w;
}

void weights_initialize(const ModelConfig& c, Backend& backend, ParameterSet& params) {
  const double residual_std = c.init_std / std::sqrt(2.0 * static_cast<double>(c.total_layers()));
  for (Parameter& p : params.all()) {
    const std::string& n = p.name;
    Tensor host = Tensor::zeros(p.value.shape(), DType::f64);
    double* h = host.data<double>();
    const int64_t count = host.numel();
    if (ends_with(n, "norm.weight")) {
      for (int64_t i = 0; i < count; ++i) h[i] = 1.0;
    } else if (n == "combine.alpha") {
      h[count - 1] = 1.0;  // (0, ..., 0, 1): starts as "last"
    } else {
      const bool residual_out =
          ends_with(n, "attn.wo.weight") || ends_with(n, "mlp.w2.weight");  // incl. cross_attn.wo
      const double stddev = residual_out ? residual_std : c.init_std;
      Rng rng(c.seed ^ name_hash(n));
      for (int64_t i = 0; i < count; ++i) h[i] = stddev * rng.normal();
    }
    if (p.value.dtype() == DType::f64) {
      backend.copy(p.value, host);
    } else {
      Tensor host_f32 = Tensor::zeros(p.value.shape(), DType::f32);
      float* f = host_f32.data<float>();
      for (int64_t i = 0; i < count; ++i) f[i] = static_cast<float>(h[i]);
      backend.copy(p.value, host_f32);
    }
  }
}

std::map<std::string, int64_t> parameter_counts(const ParameterSet& params) {
  std::map<std::string, int64_t> counts{{"embedding", 0}, {"self_attention", 0},
                                        {"cross_attention", 0}, {"mlp", 0},
                                        {"norms", 0},     {"combine", 0},
                                        {"lm_head", 0},   {"total", 0}};
  for (const Parameter& p : params.all()) {
    const std::string& n = p.name;
    std::string part;
    if (ends_with(n, "norm.weight")) part = "norms";
    else if (n == "tok_embeddings.weight") part = "embedding";
    else if (n == "lm_head.weight") part = "lm_head";
    else if (n == "combine.alpha") part = "combine";
    else if (contains(n, ".cross_attn.")) part = "cross_attention";
    else if (contains(n, ".attn.")) part = "self_attention";
    else if (contains(n, ".mlp.")) part = "mlp";
    else fail(fmt::format("parameter_counts: unclassified parameter '{}'", n));
    counts[part] += p.value.numel();
    counts["total"] += p.value.numel();
  }
  return counts;
}

}  // namespace sf
