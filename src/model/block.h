// block.h — the sub-blocks of a StagFormer layer (spec §2), forward and backward, on any backend.
//
// A layer is   x += SelfAttn(RMSNorm(x))
//              x += CrossAttn(RMSNorm(x), mem)     (stacks >= 1 only)
//              x += SwiGLU(RMSNorm(x))
// Each function here is one residual sub-block. Forward writes x_out = x_in + f(x_in) and keeps
// what backward needs in the activation struct; it serves whole sequences (training, prefill)
// and a decode step over caches (AttentionCache), for the row blocks of one stack or of several
// run together (model/stack_pass.h wires them into layers). Backward receives d(x_out) in `dx` and leaves
// d(x_in) there (the residual passes the gradient through; the branch adds its part). Weight
// gradients are written or added to as `writes` says (GradientWrites: the first product into a
// gradient may write it).
#pragma once

#include <vector>

#include "core/backend.h"
#include "model/config.h"
#include "model/gradient_writes.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace sf {

// The dtype of per-row statistics (RMSNorm rstd, attention lse, losses) for activations of
// dtype `compute`: F32 when activations are BF16 (8 mantissa bits are too few for them).
inline DType statistics_dtype(DType compute) { return compute == DType::bf16 ? DType::f32 : compute; }

// Saved activations of one attention sub-block (self or cross). Shapes for B sequences of T
// positions: norm_out [B*T, D], rstd [B*T], q [B, T, Hq, hd], k/v [B, Tk, Hkv, hd], out like q,
// lse [B, Hq, T]. q, k and v lie one after the other in one buffer, so that they are also the
// stacked outputs of the batched input projection: kv = (k, v) as [2, B*Tk, KV], and qkv =
// (q, k, v) as [3, B*T, Q] when q has their shape (Q == KV, T == Tk; undefined otherwise).
struct AttentionActivations {
  Tensor norm_out, rstd, q, k, v, out, lse;
  Tensor qkv, kv;
};

// gate/up/hidden: [B*T, F]; gate and up are adjacent: gate_up = (gate, up) as [2, B*T, F].
struct MlpActivations {
  Tensor norm_out, rstd, gate, up, hidden;
  Tensor gate_up;
};

// Gradient scratch shared by all sub-blocks of a model (sized for the largest use).
// The input gradients of the projections are packed side by side, so that the products that
// map them back to the block's input read one operand (backend.h allows attention and SwiGLU
// to write such row-strided outputs):
//   d_projections: B*T*(Q + 2KV) elements, seen by attention_block_backward as dq|dk|dv
//     [rows, Q + 2KV] (q, k, v stacked) or as dq [rows, Q] then dk|dv [rows_k, 2KV];
//   d_gate_up: d_gate|d_up as [rows, 2F].
struct BlockScratch {
  Tensor d_attn_out, d_norm, d_hidden;
  Tensor d_projections, d_gate_up;
};

// Which weights an attention sub-block uses, and how it attends.
struct AttentionWeights {
  const Weight& norm;
  const Weight& wq;
  const Weight& wk;
  const Weight& wv;
  const Weight& wo;
  const Weight& kv;    // (wk, wv) stacked [2, KV, D]
  const Weight* qkv;   // (wq, wk, wv) stacked [3, Q, D]; null or undefined: q runs on its own
};

// The weights of a layer's self- and cross-attention sub-blocks.
inline AttentionWeights self_attention_weights(const LayerWeights& L) {
  return {L.attn_norm, L.wq, L.wk, L.wv, L.wo, L.kv, &L.qkv};
}
inline AttentionWeights cross_attention_weights(const LayerWeights& L) {
  return {L.cross_norm, L.cross_wq, L.cross_wk, L.cross_wv, L.cross_wo, L.cross_kv, nullptr};
}

struct AttentionSpec {
  AttentionMask mask;
  bool rope_q = true;  // rotate queries at their positions
  bool rope_k = true;  // rotate keys at their positions
};

// Allocates the buffers a model plans for a shape (zero-filled, on the backend's device) and
// counts their bytes, so that what is reported (Model::activation_bytes) is what was allocated.
// Reusing: an allocator given the buffers another allocator allocated for a larger plan of the
// same structure (the same requests in the same order, each at most as large) hands out views
// into them instead, so one allocation for the longest input serves every shorter one (the
// prefill's activations). Reused views are not zeroed: every plan overwrites before it reads.
class ActivationAllocator {
 public:
  explicit ActivationAllocator(Backend& backend) : backend_(&backend) {}
  explicit ActivationAllocator(const std::vector<Tensor>& reuse) : reuse_(&reuse) {}
  Tensor zeros(const Shape& shape, DType dtype);
  int64_t bytes() const { return bytes_; }
  // What this allocator allocated, in request order (for a later reusing allocator).
  const std::vector<Tensor>& allocated() const { return allocated_; }

 private:
  Backend* backend_ = nullptr;
  const std::vector<Tensor>* reuse_ = nullptr;
  size_t next_ = 0;
  std::vector<Tensor> allocated_;
  int64_t bytes_ = 0;
};

AttentionActivations attention_activations_allocate(ActivationAllocator& alloc,
                                                    const ModelConfig& config, DType dtype,
                                                    int64_t batch, int64_t seq, int64_t kv_seq);
MlpActivations mlp_activations_allocate(ActivationAllocator& alloc, const ModelConfig& config,
                                        DType dtype, int64_t rows);
BlockScratch block_scratch_allocate(ActivationAllocator& alloc, const ModelConfig& config,
                                    DType dtype, int64_t rows);

// Where an attention sub-block attends, besides its own rows.
//   Training (cache == nullptr): keys and values of the whole sequences (kv_source or the
//     normalised input), positions 0..T-1, the mask of `spec`.
//   Prefill (cache, !step): the same, and then the keys (after RoPE) and values of the first
//     `cached_rows` positions of the (one) sequence are written to its rows `sequence` of the
//     cache with one bulk write each.
//   Decode step (cache, step): one new position per row; the row's key and value (from the
//     normalised input for self-attention, from the memory row kv_source for cross-attention)
//     are rotated to key_position and written at `slot`, then the row attends to the cache's
//     keys [key_begin, key_end).
struct AttentionCache {
  LayerKv kv;
  bool step = false;
  AttentionStepRows rows;                 // step
  int64_t sequence = 0, cached_rows = 0;  // prefill
};

// x_out = x_in + Attn(RMSNorm(x_in)) for the rows of `stacks.size()` stacks, one equal row block
// per stack with its own weights (stacks[g]); one stack in training and prefill, the stacks a
// decode step runs together otherwise. Blocks that read the same weights (shared weights) run as
// one product over all their rows; different weights go to the backend as one linear_many call.
// kv_source: nullptr for self-attention (keys/values from the normalised x_in), else the memory
// rows for cross-attention. x_out may be x_in itself (the residual added in place). The
// activations are kept in `act` (what backward reads).
void attention_block_forward(Backend& backend, const ModelConfig& config,
                             const std::vector<AttentionWeights>& stacks, const AttentionSpec& spec,
                             const Tensor& x_in, const Tensor* kv_source, Tensor& x_out,
                             AttentionActivations& act, const AttentionCache* cache = nullptr);
// d_kv_source (cross-attention only) accumulates the gradient of the memory.
void attention_block_backward(Backend& backend, const ModelConfig& config,
                              const AttentionWeights& w, const AttentionSpec& spec,
                              const Tensor& x_in, const Tensor* kv_source,
                              const AttentionActivations& act, Tensor& dx, Tensor* d_kv_source,
                              BlockScratch& scratch, GradientWrites& writes);

// x_out = x_in + SwiGLU(RMSNorm(x_in)), row blocks per stack as attention_block_forward.
// fused (a decode step): the norm is handed to w1 and w3 (Backend::linear_many's InputNorm), as
// a decode step's attention does, and the SwiGLU to w2 (InputGate), instead of each being
// computed first; a backend that fuses them leaves act.norm_out and act.hidden unwritten.
void mlp_block_forward(Backend& backend, const ModelConfig& config,
                       const std::vector<const LayerWeights*>& stacks, const Tensor& x_in,
                       Tensor& x_out, MlpActivations& act, bool fused = false);
void mlp_block_backward(Backend& backend, const ModelConfig& config, const LayerWeights& w,
                        const Tensor& x_in, const MlpActivations& act, Tensor& dx,
                        BlockScratch& scratch, GradientWrites& writes);

// The model's output (spec §3) for any number of rows: combined = the last stack's output, or
// sum_k alpha[k] * stack_outputs[k] (combine = linear; `alpha` holds combine.alpha), then
// norm_out = RMSNorm_final(combined) (rstd kept for backward) and logits = norm_out @ W_out^T.
// fused (a decode step): the final norm is handed to the head's product (InputNorm), and with
// combine = last the product reads the last stack's rows (combined is not written); a backend
// that fuses the norm leaves norm_out and rstd unwritten.
void output_head_forward(Backend& backend, const ModelConfig& config, const ModelWeights& w,
                         const std::vector<const Tensor*>& stack_outputs,
                         const std::vector<double>& alpha, Tensor& combined, Tensor& norm_out,
                         Tensor& rstd, Tensor& logits, bool fused = false);

}  // namespace sf
