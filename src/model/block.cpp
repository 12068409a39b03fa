// block.cpp — attention and MLP residual sub-blocks, forward (whole sequences, a prefill, or a
// decode step over caches; one stack or several at once) and backward.
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

// ---- row blocks of several stacks ------------------------------------------------------------
// The rows of a sub-block are stacks.size() equal blocks, block g read by stack g's weights.

// Block g of a [rows, ...] tensor.
Tensor block_of(const Tensor& t, size_t g, size_t blocks) {
  const int64_t rows = t.dim(0) / static_cast<int64_t>(blocks);
  return t.slice(0, static_cast<int64_t>(g) * rows, rows);
}

// Whether every block reads the same tensor (shared weights, or one block): then one backend
// call covers all the rows.
template <class Get>
bool one_weight(size_t blocks, Get&& weight_of) {
  for (size_t g = 1; g < blocks; ++g)
    if (!weight_of(g).same_view(weight_of(0))) return false;
  return true;
}

// x_out = x_in + y @ W^T: in place when x_out is x_in, else in one pass (matmul_add).
void residual_product(Backend& be, Tensor& x_out, const Tensor& y, const Tensor& w,
                      const Tensor& x_in) {
  if (x_out.same_view(x_in)) be.matmul(x_out, y, false, w, true, 1.0, 1.0);
  else be.matmul_add(x_out, y, false, w, true, x_in);
}

// The output projection of several blocks: x_out = x_in + y' @ W_g^T per block, y' = y, or
// with a gate (its tensors rows like y, all blocks) y' = silu(gate) * y, formed as the product
// reads it (LinearTask's InputGate). Blocks that share their weight run as one product.
template <class Get>
void residual_products(Backend& be, size_t blocks, Get&& weight_of, Tensor& x_out, const Tensor& y,
                       const Tensor& x_in, const InputGate& gate = {}) {
  const bool shared = one_weight(blocks, weight_of);
  if (shared && !gate.gate.defined()) {
    residual_product(be, x_out, y, weight_of(0), x_in);
    return;
  }
  const size_t n = shared ? 1 : blocks;
  if (!x_out.same_view(x_in)) be.copy(x_out, x_in);
  std::vector<LinearTask> tasks;
  for (size_t g = 0; g < n; ++g) {
    const InputGate block_gate = gate.gate.defined()
                                     ? InputGate{block_of(gate.gate, g, n), block_of(gate.out, g, n)}
                                     : InputGate{};
    tasks.push_back({block_of(x_out, g, n), block_of(y, g, n), weight_of(g), true, InputNorm{},
                     block_gate});
  }
  be.linear_many(tasks);
}

// q, k, v of one stack's rows: one batched product when the weights stack, else q alone and
// (k, v) together.
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

// A decode step's projections: q (and k, v for self-attention) of every block as one
// linear_many call, the sub-block's norm fused into the products that read the normalised input
// (a backend that does not fuse it writes norm_out first); blocks that share their weights run
// as one task over all their rows.
void project_step(Backend& be, const ModelConfig& c, const std::vector<AttentionWeights>& w,
                  const Tensor& x_in, const Tensor* kv_source, AttentionActivations& a) {
  const size_t G = w.size();
  const bool merged = one_weight(G, [&](size_t g) { return w[g].wq.value; }) &&
                      one_weight(G, [&](size_t g) { return w[g].kv.value; }) &&
                      one_weight(G, [&](size_t g) { return w[g].norm.value; });
  const size_t blocks = merged ? 1 : G;
  const Tensor q = as_matrix(a.q), k = as_matrix(a.k), v = as_matrix(a.v);
  std::vector<LinearTask> tasks;
  for (size_t g = 0; g < blocks; ++g) {
    const InputNorm norm{w[g].norm.value, c.norm_eps, block_of(a.norm_out, g, blocks),
                         block_of(a.rstd, g, blocks)};
    const Tensor x = block_of(x_in, g, blocks);
    tasks.push_back({block_of(q, g, blocks), x, w[g].wq.value, false, norm});
    const Tensor kv_x = kv_source ? block_of(*kv_source, g, blocks) : x;
    const InputNorm kv_norm = kv_source ? InputNorm{} : norm;  // the memory is normalised already
    tasks.push_back({block_of(k, g, blocks), kv_x, w[g].wk.value, false, kv_norm});
    tasks.push_back({block_of(v, g, blocks), kv_x, w[g].wv.value, false, kv_norm});
  }
  be.linear_many(tasks);
}

}  // namespace

Tensor ActivationAllocator::zeros(const Shape& shape, DType dtype) {
  Tensor t;
  if (reuse_) {
    SF_CHECK(next_ < reuse_->size(), "ActivationAllocator: more requests than the plan it reuses");
    const Tensor& buffer = (*reuse_)[next_++];
    int64_t numel = 1;
    for (int64_t d : shape) numel *= d;
    SF_CHECK(buffer.dtype() == dtype && numel <= buffer.numel(),
             "ActivationAllocator: request {} of {} elements does not fit the reused {}",
             dtype_name(dtype), numel, buffer.describe());
    t = buffer.view({buffer.numel()}).slice(0, 0, numel).view(shape);
  } else {
    t = backend_->zeros(shape, dtype);
    allocated_.push_back(t);
  }
  bytes_ += static_cast<int64_t>(t.nbytes());
  return t;
}

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

void attention_block_forward(Backend& be, const ModelConfig& c,
                             const std::vector<AttentionWeights>& w, const AttentionSpec& spec,
                             const Tensor& x_in, const Tensor* kv_source, Tensor& x_out,
                             AttentionActivations& a, const AttentionCache* cache) {
  const size_t G = w.size();
  if (cache && cache->step) {
    // One new position per row of every block: the projections with the norm fused, then RoPE
    // at the rows' positions, this step's key and value into the cache, attention over the
    // cache's visible keys.
    project_step(be, c, w, x_in, kv_source, a);
    const int64_t N = a.q.dim(0) * a.q.dim(1);
    auto rows_of = [N](const Tensor& t) { return t.view({N, t.dim(2), t.dim(3)}); };
    Tensor q = rows_of(a.q), k = rows_of(a.k), out = rows_of(a.out);
    Tensor k_cache = cache->kv.k, v_cache = cache->kv.v;
    be.attention_step(out, q, k, rows_of(a.v), k_cache, v_cache, cache->rows, spec.rope_q,
                      spec.rope_k, c.rope_theta);
  } else {
    // Whole sequences of one stack (training, prefill).
    SF_CHECK(G == 1, "attention_block_forward: whole sequences run one stack at a time, not {}", G);
    be.rmsnorm_forward(a.norm_out, a.rstd, x_in, w[0].norm.value, c.norm_eps);
    const Tensor& kv_in = kv_source ? *kv_source : a.norm_out;
    project_qkv(be, w[0], a.norm_out, kv_in, qkv_stacked(w[0], a, kv_source), a);
    if (spec.rope_q && spec.rope_k && a.qkv.defined()) {
      // q and k are adjacent with one shape: rotated in one pass, as [2B, T, H, hd].
      Tensor qk = a.qkv.slice(0, 0, 2).view({2 * a.q.dim(0), a.q.dim(1), a.q.dim(2), a.q.dim(3)});
      be.rope_forward(qk, c.rope_theta, 0);
    } else {
      if (spec.rope_q) be.rope_forward(a.q, c.rope_theta, 0);
      if (spec.rope_k) be.rope_forward(a.k, c.rope_theta, 0);
    }
    be.attention_forward(a.out, a.lse, a.q, a.k, a.v, spec.mask);
    if (cache && cache->cached_rows > 0) {
      // Prefill: the sequence's first cached_rows keys and values, one bulk write each.
      Tensor k_cache = cache->kv.k, v_cache = cache->kv.v;
      be.kv_cache_write_range(k_cache, as_matrix(a.k).slice(0, 0, cache->cached_rows),
                              cache->sequence, 0);
      be.kv_cache_write_range(v_cache, as_matrix(a.v).slice(0, 0, cache->cached_rows),
                              cache->sequence, 0);
    }
  }
  residual_products(be, G, [&](size_t g) { return w[g].wo.value; }, x_out, as_matrix(a.out), x_in);
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

void mlp_block_forward(Backend& be, const ModelConfig& c, const std::vector<const LayerWeights*>& w,
                       const Tensor& x_in, Tensor& x_out, MlpActivations& m, bool fused) {
  const size_t G = w.size();
  const auto w2_of = [&](size_t g) { return w[g]->w2.value; };
  if (fused) {
    // A decode step: the norm fused into w1 and w3 (blocks sharing them as one task), the
    // SwiGLU into w2 (a backend that fuses neither leaves norm_out and hidden unwritten).
    const bool merged = one_weight(G, [&](size_t g) { return w[g]->w13.value; }) &&
                        one_weight(G, [&](size_t g) { return w[g]->mlp_norm.value; });
    const size_t blocks = merged ? 1 : G;
    std::vector<LinearTask> tasks;
    for (size_t g = 0; g < blocks; ++g) {
      const InputNorm norm{w[g]->mlp_norm.value, c.norm_eps, block_of(m.norm_out, g, blocks),
                           block_of(m.rstd, g, blocks)};
      const Tensor x = block_of(x_in, g, blocks);
      tasks.push_back({block_of(m.gate, g, blocks), x, w[g]->w1.value, false, norm});
      tasks.push_back({block_of(m.up, g, blocks), x, w[g]->w3.value, false, norm});
    }
    be.linear_many(tasks);
    residual_products(be, G, w2_of, x_out, m.up, x_in, InputGate{m.gate, m.hidden});
    return;
  }
  // Whole sequences of one stack (training, prefill).
  SF_CHECK(G == 1, "mlp_block_forward: whole sequences run one stack at a time, not {}", G);
  be.rmsnorm_forward(m.norm_out, m.rstd, x_in, w[0]->mlp_norm.value, c.norm_eps);
  be.matmul_batched(m.gate_up, m.norm_out, false, w[0]->w13.value, true, 1.0, 0.0);
  be.swiglu_forward(m.hidden, m.gate, m.up);
  residual_products(be, G, w2_of, x_out, m.hidden, x_in);
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
                         Tensor& rstd, Tensor& logits, bool fused) {
  Tensor head_in = combined;
  if (c.combine == CombineMode::linear) {
    be.fill(combined, 0.0);
    for (size_t s = 0; s < stack_outputs.size(); ++s) be.axpy(combined, alpha[s], *stack_outputs[s]);
  } else if (fused) {
    head_in = *stack_outputs.back();
  } else {
    be.copy(combined, *stack_outputs.back());
  }
  if (fused) {
    be.linear_many({LinearTask{logits, head_in, w.lm_head.value, false,
                               InputNorm{w.final_norm.value, c.norm_eps, norm_out, rstd}}});
    return;
  }
  be.rmsnorm_forward(norm_out, rstd, head_in, w.final_norm.value, c.norm_eps);
  be.matmul(logits, norm_out, false, w.lm_head.value, true, 1.0, 0.0);
}

}  // namespace sf
