// weights.h — the model's parameters as a structure: names, shapes, sharing, initialisation.
//
// Parameter names (safetensors keys; stacks and layers are 0-based, so stacks.1 is the first
// stack that has cross-attention):
//   tok_embeddings.weight                           [V, D]
//   stacks.{s}.layers.{l}.attn_norm.weight          [D]
//   stacks.{s}.layers.{l}.attn.{wq,wk,wv,wo}.weight [Hq*hd, D] [Hkv*hd, D] [Hkv*hd, D] [D, Hq*hd]
//   stacks.{s}.layers.{l}.cross_norm.weight         [D]            (s >= 1)
//   stacks.{s}.layers.{l}.cross_attn.{wq,wk,wv,wo}.weight          (s >= 1, same shapes as attn)
//   stacks.{s}.layers.{l}.mlp_norm.weight           [D]
//   stacks.{s}.layers.{l}.mlp.{w1,w3}.weight        [F, D];  mlp.w2.weight [D, F]
//   stacks.{s}.mem_norm.weight                      [D]            (s >= 1: norm of stack s-1's output)
//   combine.alpha                                   [p]            (combine = linear)
//   final_norm.weight                               [D]
//   lm_head.weight                                  [V, D]         (absent when tie_embeddings)
// With weights = shared, the self-attention, MLP and their norms exist only under stacks.0 and
// every stack's LayerWeights point at those tensors; cross-attention, its norm and the memory
// norms stay per stack (spec §4).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/parameters.h"

namespace sf {

// A parameter tensor together with its gradient (both views of a Parameter in the set).
struct Weight {
  Tensor value;
  Tensor grad;
};

struct LayerWeights {
  Weight attn_norm, wq, wk, wv, wo;
  Weight cross_norm, cross_wq, cross_wk, cross_wv, cross_wo;  // stacks >= 1 only
  Weight mlp_norm, w1, w3, w2;
  // The same parameters stacked (they are registered with ParameterSet::add_stacked, so they are
  // adjacent in memory): the [G, rows, D] operands of the batched input projections.
  //   qkv = (wq, wk, wv) as [3, Q, D]: only without grouped-query attention (Q == KV)
  //   kv = (wk, wv) as [2, KV, D];  cross_kv = (cross_wk, cross_wv) likewise (stacks >= 1)
  //   w13 = (w1, w3) as [2, F, D]
  Weight qkv, kv, cross_kv, w13;
};

struct StackWeights {
  std::vector<LayerWeights> layers;
  Weight mem_norm;  // stacks >= 1 only
};

struct ModelWeights {
  Weight tok_embeddings;
  std::vector<StackWeights> stacks;
  Weight combine_alpha;  // combine = linear only
  Weight final_norm;
  Weight lm_head;  // = tok_embeddings when tied
};

// Registers every parameter of `config` in `params` (canonical order) and returns the structure
// pointing at them.
ModelWeights weights_register(const ModelConfig& config, Backend& backend, DType dtype,
                              ParameterSet& params);

// Initialisation (decision, documented in docs/model.md): matrices ~ N(0, init_std); the output
// projections that write into the residual stream (attn.wo, cross_attn.wo, mlp.w2) ~
// N(0, init_std / sqrt(2 * n_stacks * layers_per_stack)) (GPT-2 style); norm weights = 1;
// combine.alpha = (0, ..., 0, 1). Each tensor draws from its own stream, seeded by
// (config.seed, parameter name), so a tensor's initial value does not depend on which other
// tensors the model has: a baseline and a StagFormer with the same seed share their stack-0 init.
void weights_initialize(const ModelConfig& config, Backend& backend, ParameterSet& params);

// Parameter counts by part, computed from the registered tensors (names decide the part):
// "embedding", "self_attention", "cross_attention", "mlp", "norms", "combine", "lm_head", "total".
std::map<std::string, int64_t> parameter_counts(const ParameterSet& params);

}  // namespace sf
