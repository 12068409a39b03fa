// parameter_counts.cpp — the parameter-count formulas (see parameter_counts.h).
#include "model/parameter_counts.h"

namespace sf {

std::map<std::string, int64_t> parameter_counts_for(const ModelConfig& c) {
  const int64_t D = c.d_model, V = c.vocab_size, F = c.ffn_hidden;
  const int64_t Q = c.n_heads * c.head_dim(), K = c.kv_dim();
  const int64_t p = c.n_stacks, h = c.layers_per_stack;
  const int64_t attention = D * Q + 2 * D * K + Q * D;  // wq, wk, wv, wo
  const int64_t mlp = 3 * D * F;                          // w1, w3, w2
  // Block sets holding self-attention and MLP: one per stack, or stack 0's alone when shared.
  const int64_t block_sets = c.weights == WeightSharing::shared ? 1 : p;
  std::map<std::string, int64_t> counts;
  counts["embedding"] = V * D;
  counts["self_attention"] = block_sets * h * attention;
  counts["cross_attention"] = (p - 1) * h * attention;
  counts["mlp"] = block_sets * h * mlp;
  counts["norms"] = block_sets * h * 2 * D  // attn_norm, mlp_norm
                    + (p - 1) * h * D       // cross_norm
                    + (p - 1) * D           // mem_norm
                    + D;                    // final_norm
  counts["combine"] = c.combine == CombineMode::linear ? p : 0;
  counts["lm_head"] = c.tie_embeddings ? 0 : V * D;
  int64_t total = 0;
  for (const auto& [part, n] : counts) total += n;
  counts["total"] = total;
  return counts;
}

}  // namespace sf
