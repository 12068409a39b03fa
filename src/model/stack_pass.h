// stack_pass.h — the one place a stack's layers are wired (spec §2-3), for every use: the
// training forward, the activation recomputation of its backward, a prefill, and every decode
// schedule. Callers differ only in the rows they pass and in where attention finds its keys:
//   training   one stack over whole sequences, keys from the same rows (no cache);
//   prefill    the same, and each attention sub-block also writes its keys/values into the
//              sequence's caches;
//   decode     one new position per sequence for each stack of a group of stacks run together
//              (their rows one block per stack); each attention sub-block appends this step's
//              key/value row to its cache and attends over the cache (StepIndices say where).
// A layer is  x += SelfAttn(RMSNorm(x)); x += CrossAttn(RMSNorm(x), mem) (stacks >= 1);
// x += SwiGLU(RMSNorm(x)), the sub-blocks of model/block.h.
#pragma once

#include <cstdint>
#include <vector>

#include "core/backend.h"
#include "model/block.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace sf {

// Stacks [first, first + count), run together by one pass: their rows are consecutive equal
// blocks, stack first + g in block g.
struct StackGroup {
  int64_t first = 0;
  int64_t count = 1;
  int64_t last() const { return first + count - 1; }
  // The group's stacks that have cross-attention (>= 1): [cross_first(), last()].
  int64_t cross_first() const { return first >= 1 ? first : 1; }
  int64_t cross_count() const { return last() >= 1 ? last() - cross_first() + 1 : 0; }
};

// What one layer of a pass keeps: the residual stream inside the layer and every sub-block's
// activations (what backward reads; scratch for inference). For a group, the self-attention and
// MLP activations have the rows of all its stacks and the cross-attention ones the rows of its
// stacks >= 1.
struct LayerActivations {
  Tensor x_after_attn, x_after_cross;
  AttentionActivations self, cross;
  MlpActivations mlp;
};

// The activations of one layer for `rows` rows of each stack of `group` over sequences of `seq`
// positions (`rows` = batch * seq). x_after_attn / x_after_cross are allocated unless
// `in_place` (a decode step adds every sub-block into its input rows).
LayerActivations layer_activations_allocate(ActivationAllocator& alloc, const ModelConfig& config,
                                            DType dtype, const StackGroup& group, int64_t batch,
                                            int64_t seq, bool in_place);

// How a pass attends: no cache (training), or a prefill of one sequence, or a decode step.
struct PassCaches {
  const KvCache* cache = nullptr;
  // Prefill: the sequence whose rows of the caches the pass fills (its prompt is the pass's
  // rows, positions 0..T-1). The self caches get all T keys; the cross caches the memory
  // positions 0..T-2, position T-1 being appended by the next decode step (see decoding.h).
  int64_t sequence = 0;
  // Decode step: the step's indices (positions, slots, visible keys).
  const StepIndices* step = nullptr;
};

struct StackPass {
  Backend& backend;
  const ModelConfig& config;
  const ModelWeights& weights;
  StackGroup group;
  PassCaches caches;
};

// Layer `layer` of the group's stacks: x_in -> x_out. `memory`: the normalised memory rows that
// cross-attention reads (stacks >= 1): the previous stack's outputs over the whole sequences, or
// in a decode step the group's [rows of its stacks >= 1] memory rows appended this step.
// x_out may be x_in (in place), as may act.x_after_attn / act.x_after_cross.
void layer_pass(const StackPass& pass, int64_t layer, const Tensor& x_in, const Tensor* memory,
                LayerActivations& act, Tensor& x_out);

// All layers: residual[l] enters layer l and residual[l + 1] receives its output (h + 1 tensors;
// entries may repeat a tensor to run in place), activations(l) gives layer l's activations.
template <class ActivationsOf>
void stack_pass(const StackPass& pass, const std::vector<Tensor>& residual, const Tensor* memory,
                ActivationsOf&& activations) {
  for (int64_t l = 0; l < pass.config.layers_per_stack; ++l) {
    Tensor out = residual[static_cast<size_t>(l + 1)];
    layer_pass(pass, l, residual[static_cast<size_t>(l)], memory, activations(l), out);
  }
}

// The memory stack s >= 1 cross-attends to: RMSNorm_mem,s (its own norm, spec §3) of stack
// s-1's output rows. rstd is kept for backward.
void memory_norm(Backend& backend, const ModelConfig& config, const ModelWeights& weights,
                 int64_t stack, const Tensor& previous_output, Tensor& memory, Tensor& rstd);

// The attention masks and RoPE flags of self- and cross-attention (spec §3): causal; staggered
// with cross_window, keys rotated when cross_rope.
AttentionSpec self_attention_spec(const ModelConfig& config);
AttentionSpec cross_attention_spec(const ModelConfig& config);

}  // namespace sf
