// stack_pass.cpp — a layer of a group of stacks: self-attention, cross-attention (stacks >= 1),
// MLP; where the attention of each use finds its keys.
#include "model/stack_pass.h"

namespace sf {

namespace {

// The cache side of one attention sub-block of layer `layer` for the stacks [first, first +
// count) (cross: the group's stacks >= 1), or nullopt-like `used = false` when training.
struct SubBlockCache {
  bool used = false;
  AttentionCache cache;
};

SubBlockCache sub_block_cache(const StackPass& pass, int64_t layer, bool cross, int64_t rows) {
  SubBlockCache out;
  const PassCaches& pc = pass.caches;
  if (!pc.cache) return out;
  out.used = true;
  AttentionCache& c = out.cache;
  const int64_t first = cross ? pass.group.cross_first() : pass.group.first;
  const int64_t count = cross ? pass.group.cross_count() : pass.group.count;
  c.kv = cross ? pc.cache->cross(layer, first, count) : pc.cache->self(layer, first, count);
  if (!pc.step) {
    // Prefill of one sequence: its rows are its positions 0..T-1. The memory row of the last
    // position stays pending for the next decode step, which appends it (decoding.h).
    SF_CHECK(pass.group.count == 1, "prefill runs one stack at a time (group of {})",
             pass.group.count);
    c.sequence = pc.sequence;
    c.cached_rows = cross ? rows - 1 : rows;
    return out;
  }
  using F = StepIndices::Field;
  const StepIndices& at = *pc.step;
  c.step = true;
  c.rows.position = at.rows(F::position, first, count);
  c.rows.key_position = at.rows(cross ? F::memory_position : F::position, first, count);
  c.rows.slot = at.rows(cross ? F::cross_slot : F::self_slot, first, count);
  c.rows.key_begin = at.rows(cross ? F::cross_begin : F::self_begin, first, count);
  c.rows.key_end = at.rows(cross ? F::cross_end : F::self_end, first, count);
  if (at.width() < pc.cache->batch()) {
    // A step of the first n sequences: each stack's n rows use the first n of its B cache rows.
    c.rows.block_rows = at.width();
    c.rows.cache_block_rows = pc.cache->batch();
  }
  return out;
}

}  // namespace

AttentionSpec self_attention_spec(const ModelConfig&) {
  return AttentionSpec{AttentionMask::causal(), true, true};
}

// The staggering (spec §3): position i sees memory positions i-w..i-1 (all j < i when w = 0);
// position 0 sees nothing and its cross-attention output is exactly zero.
AttentionSpec cross_attention_spec(const ModelConfig& c) {
  return AttentionSpec{AttentionMask::staggered(c.cross_window), c.cross_rope, c.cross_rope};
}

LayerActivations layer_activations_allocate(ActivationAllocator& alloc, const ModelConfig& c,
                                            DType dt, const StackGroup& group, int64_t batch,
                                            int64_t seq, bool in_place) {
  LayerActivations L;
  const int64_t B = group.count * batch, N = B * seq;
  if (!in_place) L.x_after_attn = alloc.zeros({N, c.d_model}, dt);
  L.self = attention_activations_allocate(alloc, c, dt, B, seq, seq);
  if (group.cross_count() > 0) {
    const int64_t Bx = group.cross_count() * batch;
    if (!in_place) L.x_after_cross = alloc.zeros({Bx * seq, c.d_model}, dt);
    L.cross = attention_activations_allocate(alloc, c, dt, Bx, seq, seq);
  }
  L.mlp = mlp_activations_allocate(alloc, c, dt, N);
  return L;
}

void layer_pass(const StackPass& pass, int64_t layer, const Tensor& x_in, const Tensor* memory,
                LayerActivations& act, Tensor& x_out) {
  Backend& be = pass.backend;
  const ModelConfig& c = pass.config;
  const StackGroup& group = pass.group;
  std::vector<AttentionWeights> self_w;
  std::vector<const LayerWeights*> layer_w;
  for (int64_t s = group.first; s <= group.last(); ++s) {
    const LayerWeights& LW = pass.weights.stacks[s].layers[layer];
    self_w.push_back(self_attention_weights(LW));
    layer_w.push_back(&LW);
  }
  const int64_t rows_per_stack = x_in.dim(0) / group.count;

  Tensor after_attn = act.x_after_attn.defined() ? act.x_after_attn : x_in;
  const SubBlockCache self_cache = sub_block_cache(pass, layer, false, rows_per_stack);
  attention_block_forward(be, c, self_w, self_attention_spec(c), x_in, nullptr, after_attn,
                          act.self, self_cache.used ? &self_cache.cache : nullptr);

  Tensor mlp_in = after_attn;
  if (group.cross_count() > 0) {
    SF_CHECK(memory != nullptr, "layer_pass: stacks >= 1 need their memory rows");
    std::vector<AttentionWeights> cross_w;
    for (int64_t s = group.cross_first(); s <= group.last(); ++s)
      cross_w.push_back(cross_attention_weights(pass.weights.stacks[s].layers[layer]));
    // The group's stacks >= 1 are its last cross_count() row blocks. When the group also holds
    // stack 0 (which has no cross-attention), its rows must be updated in place so that the
    // MLP finds every stack's rows in one tensor.
    const int64_t offset = (group.cross_first() - group.first) * rows_per_stack;
    const int64_t rows = group.cross_count() * rows_per_stack;
    const Tensor cross_in = after_attn.slice(0, offset, rows);
    Tensor after_cross = act.x_after_cross.defined() ? act.x_after_cross : cross_in;
    SF_CHECK(offset == 0 || after_cross.same_view(cross_in),
             "layer_pass: a group with stack 0 and stacks >= 1 runs in place");
    const SubBlockCache cross_cache = sub_block_cache(pass, layer, true, rows_per_stack);
    attention_block_forward(be, c, cross_w, cross_attention_spec(c), cross_in, memory, after_cross,
                            act.cross, cross_cache.used ? &cross_cache.cache : nullptr);
    if (offset == 0) mlp_in = after_cross;
  }
  mlp_block_forward(be, c, layer_w, mlp_in, x_out, act.mlp, pass.caches.step != nullptr);
}

void memory_norm(Backend& be, const ModelConfig& c, const ModelWeights& w, int64_t stack,
                 const Tensor& previous_output, Tensor& memory, Tensor& rstd) {
  SF_CHECK(stack >= 1 && stack < c.n_stacks, "memory_norm: stack {} has no memory", stack);
  be.rmsnorm_forward(memory, rstd, previous_output, w.stacks[stack].mem_norm.value, c.norm_eps);
}

}  // namespace sf
