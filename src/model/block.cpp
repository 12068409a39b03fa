// block.cpp — attention and MLP residual sub-blocks, forward and backward.
#include "model/block.h"

namespace sf {

namespace {

// [B, T, H, hd] tensor seen as the [B*T, H*hd] matrix a linear layer reads or writes.
Tensor as_matrix(const Tensor& t) { return t.view({-1, t.dim(-2) * t.dim(-1)}); }

// q [Nq, Q], k and v [Nk, KV] one after the other in one buffer (AttentionActivations).
struct StackedQkv {
  Tensor q, k, v, qkv, kv;  // q, k, v as [rows, width]
};
StackedQkv stacked_qkv(ActivationAllocator& alloc, DType dt, int64_t Nq, int64_t Q, int64_t Nk,
                       int64_t KV) {
  const Tensor all = alloc.zeros({Nq * Q + 2 * Nk * KV}, dt);
  StackedQkv s;
  s.q = all.slice(0, 0, Nq * Q).view({Nq, Q});
  s.k = all.slice(0, Nq * Q, Nk * KV).view({Nk, KV});
  s.v = all.slice(0, Nq * Q + Nk * KV, Nk * KV).view({Nk, KV});
  s.kv = all.slice(0, Nq * Q, 2 * Nk * KV).view({2, Nk, KV});
  if (Nq == Nk && Q == KV) s.qkv = all.view({3, Nq, Q});
  return s;
}

// Whether q, k and v of a sub-block are stacked (one batched forward product, one packed
// [rows, Q + 2KV] gradient in backward): self-attention (one input) whose weights and
// activations both stack; otherwise q runs alone and (k, v) together.
bool qkv_stacked(const AttentionWeights& w, const AttentionActivations& a,
                 const Tensor* kv_source) {
  return !kv_source && a.qkv.defined() && w.qkv && w.qkv->value.defined();
}

void project_qkv(Backend& be, const AttentionWeights& w, const Tensor& q_in, const Tensor& kv_in,
                 bool stacked, AttentionActivations& a) {
  if (stacked) {
    be.matmul_batched(a.qkv, q_in, false, w.qkv->value, true, 1.0, 0.0);
    return;
  }
  Tensor q_matrix = as_matrix(a.q);
  be.matmul(q_matrix, q_in, false, w.wq.value, true, 1.0, 0.0);
  be.matmul_batched(a.kv, kv_in, false, w.kv.value, true, 1.0, 0.0);
}

}  // namespace

AttentionActivations attention_activations_allocate(ActivationAllocator& alloc,
                                                    const ModelConfig& c, DType dt, int64_t B,
                                                    int64_t T, int64_t Tk) {
  const int64_t hd = c.head_dim();
  AttentionActivations a;
  a.norm_out = alloc.zeros({B * T, c.d_model}, dt);
  a.rstd = alloc.zeros({B * T}, statistics_dtype(dt));
  const StackedQkv s = stacked_qkv(alloc, dt, B * T, c.n_heads * hd, B * Tk, c.kv_dim());
  a.q = s.q.view({B, T, c.n_heads, hd});
  a.k = s.k.view({B, Tk, c.n_kv_heads, hd});
  a.v = s.v.view({B, Tk, c.n_kv_heads, hd});
  a.qkv = s.qkv;
  a.kv = s.kv;
  a.out = alloc.zeros({B, T, c.n_heads, hd}, dt);
  a.lse = alloc.zeros({B, c.n_heads, T}, statistics_dtype(dt));
  return a;
}

MlpActivations mlp_activations_allocate(ActivationAllocator& alloc, const ModelConfig& c, DType dt,
                                        int64_t rows) {
  MlpActivations m;
  m.norm_out = alloc.zeros({rows, c.d_model}, dt);
  m.rstd = alloc.zeros({rows}, statistics_dtype(dt));
  m.gate_up = alloc.zeros({2, rows, c.ffn_hidden}, dt);
  m.gate = m.gate_up.select(0);
  m.up = m.gate_up.select(1);
  m.hidden = alloc.zeros({rows, c.ffn_hidden}, dt);
  return m;
}

BlockScratch block_scratch_allocate(ActivationAllocator& alloc, const ModelConfig& c, DType dt,
                                    int64_t rows) {
  const int64_t Q = c.n_heads * c.head_dim();
  BlockScratch s;
  s.d_attn_out = alloc.zeros({rows, Q}, dt);
  s.d_projections = alloc.zeros({rows * (Q + 2 * c.kv_dim())}, dt);
  s.d_norm = alloc.zeros({rows, c.d_model}, dt);
  s.d_hidden = alloc.zeros({rows, c.ffn_hidden}, dt);
  s.d_gate_up = alloc.zeros({rows, 2 * c.ffn_hidden}, dt);
  return s;
}

void attention_block_forward(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                             const AttentionSpec& spec, const Tensor& x_in, const Tensor* kv_source,
                             Tensor& x_out, AttentionActivations& a) {
  be.rmsnorm_forward(a.norm_out, a.rstd, x_in, w.norm.value, c.norm_eps);
  const Tensor& kv_in = kv_source ? *kv_source : a.norm_out;
  project_qkv(be, w, a.norm_out, kv_in, qkv_stacked(w, a, kv_source), a);
  if (spec.rope_q && spec.rope_k && a.qkv.defined()) {
    // q and k are adjacent with one shape: rotated in one pass, as [2B, T, H, hd].
    Tensor qk = a.qkv.slice(0, 0, 2).view({2 * a.q.dim(0), a.q.dim(1), a.q.dim(2), a.q.dim(3)});
    be.rope_forward(qk, c.rope_theta, 0);
  } else {
    if (spec.rope_q) be.rope_forward(a.q, c.rope_theta, 0);
    if (spec.rope_k) be.rope_forward(a.k, c.rope_theta, 0);
  }
  be.attention_forward(a.out, a.lse, a.q, a.k, a.v, spec.mask);
  be.matmul_add(x_out, as_matrix(a.out), false, w.wo.value, true, x_in);
}

void attention_block_backward(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                              const AttentionSpec& spec, const Tensor& x_in,
                              const Tensor* kv_source, const AttentionActivations& a, Tensor& dx,
                              Tensor* d_kv_source, BlockScratch& s, GradientWrites& writes) {
  const Tensor& kv_in = kv_source ? *kv_source : a.norm_out;
  // Output projection: x_out = x_in + out @ wo^T.
  Tensor d_out = s.d_attn_out;
  be.matmul(d_out, dx, false, w.wo.value, false, 1.0, 0.0);
  Tensor dwo = w.wo.grad;
  be.matmul(dwo, dx, true, as_matrix(a.out), false, 1.0, writes.product_beta(dwo));

  // The attention writes dq, dk, dv as column ranges of packed gradient matrices (BlockScratch):
  //   stacked: [rows, Q + 2KV] = dq|dk|dv, read against (wq, wk, wv) as one [Q + 2KV, D] weight;
  //   else:    dq [rows, Q], then [rows_k, 2KV] = dk|dv against (wk, wv) as [2KV, D].
  const int64_t rows = a.norm_out.dim(0), rows_k = kv_in.dim(0);
  const int64_t Q = a.q.dim(2) * a.q.dim(3), KV = a.k.dim(2) * a.k.dim(3);
  const bool stacked = qkv_stacked(w, a, kv_source);
  const Tensor d_qkv = stacked ? s.d_projections.slice(0, 0, rows * (Q + 2 * KV)).view({rows, Q + 2 * KV})
                               : Tensor();
  const Tensor d_q = stacked ? d_qkv.slice(1, 0, Q) : s.d_projections.slice(0, 0, rows * Q).view({rows, Q});
  const Tensor d_kv_packed =
      stacked ? d_qkv.slice(1, Q, 2 * KV)
              : s.d_projections.slice(0, rows * Q, rows_k * 2 * KV).view({rows_k, 2 * KV});
  auto as_heads = [](const Tensor& m, const Tensor& like) {  // [B*T, H*hd] -> like's [B, T, H, hd]
    return m.unflatten(0, {like.dim(0), like.dim(1)}).unflatten(2, {like.dim(2), like.dim(3)});
  };
  Tensor dq = as_heads(d_q, a.q), dk = as_heads(d_kv_packed.slice(1, 0, KV), a.k),
         dv = as_heads(d_kv_packed.slice(1, KV, KV), a.v);
  // Attention, with the rotations undone: gradients w.r.t. q and k before RoPE.
  be.attention_backward_rope(dq, dk, dv, d_out.view(a.out.shape()), a.out, a.lse, a.q, a.k, a.v,
                             spec.mask, spec.rope_q, spec.rope_k, c.rope_theta);

  // Projections q = norm @ wq^T, k = kv_in @ wk^T, v = kv_in @ wv^T: their weight gradients and
  // the gradient of their inputs, one product per packed matrix.
  Tensor& d_norm = s.d_norm;
  if (stacked) {
    const Tensor w_qkv = w.qkv->value.view({Q + 2 * KV, -1});
    Tensor dw_qkv = w.qkv->grad.view({Q + 2 * KV, -1});
    be.matmul(dw_qkv, d_qkv, true, a.norm_out, false, 1.0, writes.product_beta(dw_qkv));
    be.matmul(d_norm, d_qkv, false, w_qkv, false, 1.0, 0.0);
  } else {
    const Tensor w_kv = w.kv.value.view({2 * KV, -1});
    Tensor dwq = w.wq.grad, dw_kv = w.kv.grad.view({2 * KV, -1});
    be.matmul(dwq, d_q, true, a.norm_out, false, 1.0, writes.product_beta(dwq));
    be.matmul(dw_kv, d_kv_packed, true, kv_in, false, 1.0, writes.product_beta(dw_kv));
    be.matmul(d_norm, d_q, false, w.wq.value, false, 1.0, 0.0);
    Tensor& d_kv = d_kv_source ? *d_kv_source : d_norm;  // self-attention: k, v read the norm too
    be.matmul(d_kv, d_kv_packed, false, w_kv, false, 1.0, 1.0);
  }
  Tensor dnorm_w = w.norm.grad;
  writes.addition(dnorm_w);
  be.rmsnorm_backward(dx, dnorm_w, d_norm, x_in, w.norm.value, a.rstd);
}

void mlp_block_forward(Backend& be, const ModelConfig& c, const LayerWeights& w, const Tensor& x_in,
                       Tensor& x_out, MlpActivations& m) {
  be.rmsnorm_forward(m.norm_out, m.rstd, x_in, w.mlp_norm.value, c.norm_eps);
  be.matmul_batched(m.gate_up, m.norm_out, false, w.w13.value, true, 1.0, 0.0);
  be.swiglu_forward(m.hidden, m.gate, m.up);
  be.matmul_add(x_out, m.hidden, false, w.w2.value, true, x_in);
}

void mlp_block_backward(Backend& be, const ModelConfig& c, const LayerWeights& w, const Tensor& x_in,
                        const MlpActivations& m, Tensor& dx, BlockScratch& s,
                        GradientWrites& writes) {
  Tensor dw2 = w.w2.grad;
  be.matmul(s.d_hidden, dx, false, w.w2.value, false, 1.0, 0.0);
  be.matmul(dw2, dx, true, m.hidden, false, 1.0, writes.product_beta(dw2));
  // d_gate|d_up side by side [rows, 2F]: one product each against (w1, w3) as [2F, D].
  const int64_t F = c.ffn_hidden;
  Tensor d_gate = s.d_gate_up.slice(1, 0, F), d_up = s.d_gate_up.slice(1, F, F);
  be.swiglu_backward(d_gate, d_up, s.d_hidden, m.gate, m.up);
  Tensor dw13 = w.w13.grad.view({2 * F, -1});
  be.matmul(dw13, s.d_gate_up, true, m.norm_out, false, 1.0, writes.product_beta(dw13));
  be.matmul(s.d_norm, s.d_gate_up, false, w.w13.value.view({2 * F, -1}), false, 1.0, 0.0);
  Tensor dnorm_w = w.mlp_norm.grad;
  writes.addition(dnorm_w);
  be.rmsnorm_backward(dx, dnorm_w, s.d_norm, x_in, w.mlp_norm.value, m.rstd);
}

void output_head_forward(Backend& be, const ModelConfig& c, const ModelWeights& w,
                         const std::vector<const Tensor*>& stack_outputs,
                         const std::vector<double>& alpha, Tensor& combined, Tensor& norm_out,
                         Tensor& rstd, Tensor& logits) {
  if (c.combine == CombineMode::linear) {
    be.fill(combined, 0.0);
    for (size_t s = 0; s < stack_outputs.size(); ++s) be.axpy(combined, alpha[s], *stack_outputs[s]);
  } else {
    be.copy(combined, *stack_outputs.back());
  }
  be.rmsnorm_forward(norm_out, rstd, combined, w.final_norm.value, c.norm_eps);
  be.matmul(logits, norm_out, false, w.lm_head.value, true, 1.0, 0.0);
}

DecodeScratch decode_scratch_allocate(Backend& be, const ModelConfig& c, DType dt, int64_t B) {
  const int64_t hd = c.head_dim();
  DecodeScratch d;
  d.norm_out = be.zeros({B, c.d_model}, dt);
  d.rstd = be.zeros({B}, statistics_dtype(dt));
  d.q = be.zeros({B, c.n_heads, hd}, dt);
  d.k = be.zeros({B, c.n_kv_heads, hd}, dt);
  d.v = be.zeros({B, c.n_kv_heads, hd}, dt);
  d.out = be.zeros({B, c.n_heads, hd}, dt);
  return d;
}

void attention_block_decode(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                            const AttentionSpec& spec, const Tensor& x_in, const Tensor& positions,
                            const Tensor* write_slots, DecodeCache& cache, Tensor& x_out,
                            DecodeScratch& d) {
  be.rmsnorm_forward(d.norm_out, d.rstd, x_in, w.norm.value, c.norm_eps);
  Tensor q = as_matrix(d.q);
  be.matmul(q, d.norm_out, false, w.wq.value, true, 1.0, 0.0);
  if (spec.rope_q) be.rope_at(d.q, positions, c.rope_theta);
  if (write_slots) {
    Tensor k = as_matrix(d.k), v = as_matrix(d.v);
    be.matmul(k, d.norm_out, false, w.wk.value, true, 1.0, 0.0);
    be.matmul(v, d.norm_out, false, w.wv.value, true, 1.0, 0.0);
    if (spec.rope_k) be.rope_at(d.k, positions, c.rope_theta);
    be.kv_cache_write(cache.k, d.k, *write_slots);
    be.kv_cache_write(cache.v, d.v, *write_slots);
  }
  be.attention_decode(d.out, d.q, cache.k, cache.v, cache.key_begin, cache.key_end);
  be.matmul_add(x_out, as_matrix(d.out), false, w.wo.value, true, x_in);
}

void cross_cache_append(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                        const AttentionSpec& spec, const Tensor& mem, const Tensor& positions,
                        const Tensor& slots, DecodeCache& cache, DecodeScratch& d) {
  Tensor k = as_matrix(d.k), v = as_matrix(d.v);
  be.matmul(k, mem, false, w.wk.value, true, 1.0, 0.0);
  be.matmul(v, mem, false, w.wv.value, true, 1.0, 0.0);
  if (spec.rope_k) be.rope_at(d.k, positions, c.rope_theta);
  be.kv_cache_write(cache.k, d.k, slots);
  be.kv_cache_write(cache.v, d.v, slots);
}

}  // namespace sf
