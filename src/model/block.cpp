// block.cpp — attention and MLP residual sub-blocks, forward and backward.
#include "model/block.h"

namespace sf {

namespace {

// [B, T, H, hd] tensor seen as the [B*T, H*hd] matrix a linear layer reads or writes.
Tensor as_matrix(const Tensor& t) { return t.view({-1, t.dim(-2) * t.dim(-1)}); }

}  // namespace

AttentionActivations attention_activations_allocate(ActivationAllocator& alloc,
                                                    const ModelConfig& c, DType dt, int64_t B,
                                                    int64_t T, int64_t Tk) {
  const int64_t hd = c.head_dim();
  AttentionActivations a;
  a.norm_out = alloc.zeros({B * T, c.d_model}, dt);
  a.rstd = alloc.zeros({B * T}, statistics_dtype(dt));
  a.q = alloc.zeros({B, T, c.n_heads, hd}, dt);
  a.k = alloc.zeros({B, Tk, c.n_kv_heads, hd}, dt);
  a.v = alloc.zeros({B, Tk, c.n_kv_heads, hd}, dt);
  a.out = alloc.zeros({B, T, c.n_heads, hd}, dt);
  a.lse = alloc.zeros({B, c.n_heads, T}, statistics_dtype(dt));
  return a;
}

MlpActivations mlp_activations_allocate(ActivationAllocator& alloc, const ModelConfig& c, DType dt,
                                        int64_t rows) {
  MlpActivations m;
  m.norm_out = alloc.zeros({rows, c.d_model}, dt);
  m.rstd = alloc.zeros({rows}, statistics_dtype(dt));
  m.gate = alloc.zeros({rows, c.ffn_hidden}, dt);
  m.up = alloc.zeros({rows, c.ffn_hidden}, dt);
  m.hidden = alloc.zeros({rows, c.ffn_hidden}, dt);
  return m;
}

BlockScratch block_scratch_allocate(ActivationAllocator& alloc, const ModelConfig& c, DType dt,
                                    int64_t rows) {
  const int64_t Q = c.n_heads * c.head_dim();
  BlockScratch s;
  s.d_attn_out = alloc.zeros({rows, Q}, dt);
  s.dq = alloc.zeros({rows, Q}, dt);
  s.dk = alloc.zeros({rows, c.kv_dim()}, dt);
  s.dv = alloc.zeros({rows, c.kv_dim()}, dt);
  s.d_norm = alloc.zeros({rows, c.d_model}, dt);
  s.d_hidden = alloc.zeros({rows, c.ffn_hidden}, dt);
  s.d_gate = alloc.zeros({rows, c.ffn_hidden}, dt);
  s.d_up = alloc.zeros({rows, c.ffn_hidden}, dt);
  return s;
}

void attention_block_forward(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                             const AttentionSpec& spec, const Tensor& x_in, const Tensor* kv_source,
                             Tensor& x_out, AttentionActivations& a) {
  be.rmsnorm_forward(a.norm_out, a.rstd, x_in, w.norm.value, c.norm_eps);
  const Tensor& kv_in = kv_source ? *kv_source : a.norm_out;
  Tensor q = as_matrix(a.q), k = as_matrix(a.k), v = as_matrix(a.v);
  be.matmul(q, a.norm_out, false, w.wq.value, true, 1.0, 0.0);
  be.matmul(k, kv_in, false, w.wk.value, true, 1.0, 0.0);
  be.matmul(v, kv_in, false, w.wv.value, true, 1.0, 0.0);
  if (spec.rope_q) be.rope_forward(a.q, c.rope_theta, 0);
  if (spec.rope_k) be.rope_forward(a.k, c.rope_theta, 0);
  be.attention_forward(a.out, a.lse, a.q, a.k, a.v, spec.mask);
  be.matmul_add(x_out, as_matrix(a.out), false, w.wo.value, true, x_in);
}

void attention_block_backward(Backend& be, const ModelConfig& c, const AttentionWeights& w,
                              const AttentionSpec& spec, const Tensor& x_in,
                              const Tensor* kv_source, const AttentionActivations& a, Tensor& dx,
                              Tensor* d_kv_source, BlockScratch& s) {
  const Tensor& kv_in = kv_source ? *kv_source : a.norm_out;
  // Output projection: x_out = x_in + out @ wo^T.
  Tensor d_out = s.d_attn_out;
  be.matmul(d_out, dx, false, w.wo.value, false, 1.0, 0.0);
  Tensor dwo = w.wo.grad;
  be.matmul(dwo, dx, true, as_matrix(a.out), false, 1.0, 1.0);
  // Attention, with the rotations undone: gradients w.r.t. q and k before RoPE.
  Tensor dq = s.dq.view(a.q.shape()), dk = s.dk.view(a.k.shape()), dv = s.dv.view(a.v.shape());
  be.attention_backward_rope(dq, dk, dv, d_out.view(a.out.shape()), a.out, a.lse, a.q, a.k, a.v,
                             spec.mask, spec.rope_q, spec.rope_k, c.rope_theta);
  // Projections q = norm @ wq^T, k = kv_in @ wk^T, v = kv_in @ wv^T.
  Tensor dq_m = s.dq, dk_m = s.dk, dv_m = s.dv;
  Tensor dwq = w.wq.grad, dwk = w.wk.grad, dwv = w.wv.grad;
  be.matmul(dwq, dq_m, true, a.norm_out, false, 1.0, 1.0);
  be.matmul(dwk, dk_m, true, kv_in, false, 1.0, 1.0);
  be.matmul(dwv, dv_m, true, kv_in, false, 1.0, 1.0);
  Tensor& d_norm = s.d_norm;
  be.matmul(d_norm, dq_m, false, w.wq.value, false, 1.0, 0.0);
  Tensor& d_kv = d_kv_source ? *d_kv_source : d_norm;  // self-attention: k, v read the norm too
  be.matmul(d_kv, dk_m, false, w.wk.value, false, 1.0, 1.0);
  be.matmul(d_kv, dv_m, false, w.wv.value, false, 1.0, 1.0);
  Tensor dnorm_w = w.norm.grad;
  be.rmsnorm_backward(dx, dnorm_w, d_norm, x_in, w.norm.value, a.rstd);
}

void mlp_block_forward(Backend& be, const ModelConfig& c, const LayerWeights& w, const Tensor& x_in,
                       Tensor& x_out, MlpActivations& m) {
  be.rmsnorm_forward(m.norm_out, m.rstd, x_in, w.mlp_norm.value, c.norm_eps);
  be.matmul(m.gate, m.norm_out, false, w.w1.value, true, 1.0, 0.0);
  be.matmul(m.up, m.norm_out, false, w.w3.value, true, 1.0, 0.0);
  be.swiglu_forward(m.hidden, m.gate, m.up);
  be.matmul_add(x_out, m.hidden, false, w.w2.value, true, x_in);
}

void mlp_block_backward(Backend& be, const ModelConfig& c, const LayerWeights& w, const Tensor& x_in,
                        const MlpActivations& m, Tensor& dx, BlockScratch& s) {
  Tensor dw2 = w.w2.grad, dw1 = w.w1.grad, dw3 = w.w3.grad, dnorm_w = w.mlp_norm.grad;
  be.matmul(s.d_hidden, dx, false, w.w2.value, false, 1.0, 0.0);
  be.matmul(dw2, dx, true, m.hidden, false, 1.0, 1.0);
  be.swiglu_backward(s.d_gate, s.d_up, s.d_hidden, m.gate, m.up);
  be.matmul(dw1, s.d_gate, true, m.norm_out, false, 1.0, 1.0);
  be.matmul(dw3, s.d_up, true, m.norm_out, false, 1.0, 1.0);
  be.matmul(s.d_norm, s.d_gate, false, w.w1.value, false, 1.0, 0.0);
  be.matmul(s.d_norm, s.d_up, false, w.w3.value, false, 1.0, 1.0);
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
