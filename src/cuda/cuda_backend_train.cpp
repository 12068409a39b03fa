// cuda_backend_train.cpp — CudaBackend's training operations (cuda_backend_impl.h): matrix
// products, embedding, RMSNorm, RoPE, attention forward and backward, SwiGLU, cross entropy,
// AdamW and the multi-tensor fills and conversions, dispatched to cuBLASLt and the kernels.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_backend_impl.h"
#include "cuda/host_uploads.h"
#include "cuda/kernels.h"
#include "cuda/matmul.h"
#include "cuda/stream_recorder.h"

namespace sf::cuda_detail {

void CudaBackend::matmul(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                         double alpha, double beta) {
  check_matmul(out, a, ta, b, tb);
  const int64_t M = out.dim(0), N = out.dim(1), K = ta ? a.dim(0) : a.dim(1);
  const auto op_timer = profile(profiler_ ? fmt::format("matmul {}x{}x{} {}{} {}", M, N, K,
                                                        ta ? "T" : "N", tb ? "T" : "N",
                                                        dtype_name(out.dtype()))
                                          : std::string());
  if (K == 0) {  // an empty sum: out = beta * out
    if (beta == 0.0) fill(out, 0.0);
    else scale(out, beta);
    return;
  }
  if (small_product(out, a, ta, b, tb, alpha, beta)) {
    const cuda::SmallProduct p{out.raw(), a.raw(), b.raw(), beta == 1.0 ? out.raw() : nullptr,
                               M, N, K};
    return cuda::linear_small_many(out.dtype(), &p, 1, stream_, &recorder_->program());
  }
  flush_program();
  matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), M, N, K,
               static_cast<float>(alpha), static_cast<float>(beta));
}

void CudaBackend::matmul_batched(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                                 double alpha, double beta) {
  check_batched_operands(out, a, b);
  const Tensor a0 = a.ndim() == 3 ? a.select(0) : a, b0 = b.ndim() == 3 ? b.select(0) : b;
  check(out, "matmul_batched");
  check(a, "matmul_batched");
  check(b, "matmul_batched");
  check_matmul(out.select(0), a0, ta, b0, tb);
  const int64_t G = out.dim(0), M = out.dim(1), N = out.dim(2), K = ta ? a0.dim(0) : a0.dim(1);
  if (K == 0 || G <= 1) return Backend::matmul_batched(out, a, ta, b, tb, alpha, beta);
  if (small_product(out.select(0), a0, ta, b0, tb, alpha, beta)) {
    std::vector<cuda::SmallProduct> products;
    for (int64_t g = 0; g < G; ++g) {
      Tensor out_g = out.select(g);
      products.push_back({out_g.raw(), (a.ndim() == 3 ? a.select(g) : a).raw(),
                          (b.ndim() == 3 ? b.select(g) : b).raw(),
                          beta == 1.0 ? out_g.raw() : nullptr, M, N, K});
    }
    return cuda::linear_small_many(out.dtype(), products.data(), static_cast<int>(G), stream_, &recorder_->program());
  }
  const auto op_timer = profile(profiler_ ? fmt::format("matmul {}x{}x{}x{} {}{} {}", G, M, N,
                                                        K, ta ? "T" : "N", tb ? "T" : "N",
                                                        dtype_name(out.dtype()))
                                          : std::string());
  flush_program();
  matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), M, N, K,
               static_cast<float>(alpha), static_cast<float>(beta), nullptr,
               cuda::Matmul::Batch{G, a.ndim() == 3 ? a0.numel() : 0,
                                   b.ndim() == 3 ? b0.numel() : 0});
}

void CudaBackend::matmul_add(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                             const Tensor& addend) {
  check(addend, "matmul_add");
  SF_CHECK(addend.shape() == out.shape() && addend.dtype() == out.dtype(),
           "matmul_add: addend {} for out {}", addend.describe(), out.describe());
  if ((ta ? a.dim(0) : a.dim(1)) == 0 || addend.raw() == out.raw()) {  // degenerate or in place
    if (addend.raw() != out.raw()) copy(out, addend);
    return matmul(out, a, ta, b, tb, 1.0, 1.0);
  }
  const auto op_timer = profile("matmul_add");
  check_matmul(out, a, ta, b, tb);
  if (small_product(out, a, ta, b, tb, 1.0, 0.0)) {
    const cuda::SmallProduct p{out.raw(), a.raw(), b.raw(), addend.raw(), out.dim(0),
                               out.dim(1), a.dim(1)};
    return cuda::linear_small_many(out.dtype(), &p, 1, stream_, &recorder_->program());
  }
  flush_program();
  matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), out.dim(0),
               out.dim(1), ta ? a.dim(0) : a.dim(1), 1.0f, 1.0f, addend.raw());
}

void CudaBackend::embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) {
  const auto op_timer = profile("embedding_forward");
  check(out, "embedding_forward");
  check(table, "embedding_forward");
  check_tokens(tokens, "embedding_forward");
  SF_CHECK(out.dtype() == table.dtype() && table.ndim() == 2 && out.dim(-1) == table.dim(1) &&
               out.numel() == tokens.numel() * table.dim(1),
           "embedding_forward: tokens {} table {} out {}", tokens.describe(), table.describe(),
           out.describe());
  cuda::embedding_forward(out.dtype(), out.raw(), tokens_ptr(tokens), table.raw(),
                          tokens.numel(), table.dim(1), enqueue());
}

void CudaBackend::embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) {
  const auto op_timer = profile("embedding_backward");
  check(dtable, "embedding_backward");
  check(dout, "embedding_backward");
  check_tokens(tokens, "embedding_backward");
  SF_CHECK(dtable.dtype() == DType::f32, "embedding_backward: the table gradient must be F32, got {}",
           dtable.describe());
  SF_CHECK(dtable.ndim() == 2 && dout.numel() == tokens.numel() * dtable.dim(1),
           "embedding_backward: dtable {} dout {} tokens {}", dtable.describe(), dout.describe(),
           tokens.describe());
  cuda::embedding_backward(static_cast<float*>(dtable.raw()), dout.dtype(), dout.raw(),
                           tokens_ptr(tokens), tokens.numel(), dtable.dim(1), enqueue());
}

void CudaBackend::rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                                  double eps) {
  const auto op_timer = profile("rmsnorm_forward");
  check(out, "rmsnorm_forward");
  check(x, "rmsnorm_forward");
  check(weight, "rmsnorm_forward");
  check_f32(rstd, "rmsnorm_forward rstd");
  same_shape(out, x, "rmsnorm_forward");
  const int64_t D = x.dim(-1), rows = x.numel() / std::max<int64_t>(D, 1);
  SF_CHECK(out.dtype() == x.dtype() && weight.numel() == D && rstd.numel() == rows,
           "rmsnorm_forward: x {} weight {} rstd {} out {}", x.describe(), weight.describe(),
           rstd.describe(), out.describe());
  cuda::rmsnorm_forward(x.dtype(), out.raw(), static_cast<float*>(rstd.raw()), x.raw(),
                        weight.dtype(), weight.raw(), rows, D, static_cast<float>(eps), enqueue());
}

void CudaBackend::rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                                   const Tensor& weight, const Tensor& rstd) {
  const auto op_timer = profile("rmsnorm_backward");
  for (const Tensor* t : TensorList{&dx, &dout, &x, &weight}) check(*t, "rmsnorm_backward");
  check_f32(dweight, "rmsnorm_backward dweight");
  check_f32(rstd, "rmsnorm_backward rstd");
  same_shape(dx, x, "rmsnorm_backward");
  same_shape(dout, x, "rmsnorm_backward");
  const int64_t D = x.dim(-1), rows = x.numel() / std::max<int64_t>(D, 1);
  SF_CHECK(dx.dtype() == x.dtype() && dout.dtype() == x.dtype() && weight.numel() == D &&
               dweight.numel() == D && rstd.numel() == rows,
           "rmsnorm_backward: x {} dx {} dout {} weight {} dweight {} rstd {}", x.describe(),
           dx.describe(), dout.describe(), weight.describe(), dweight.describe(), rstd.describe());
  cuda::rmsnorm_backward(x.dtype(), dx.raw(), static_cast<float*>(dweight.raw()), dout.raw(),
                         x.raw(), weight.dtype(), weight.raw(),
                         static_cast<const float*>(rstd.raw()), rows, D, enqueue());
}

void CudaBackend::rope_forward(Tensor& x, double theta, int64_t offset) {
  rope(x, theta, offset, false);
}

void CudaBackend::rope_backward(Tensor& dx, double theta, int64_t offset) {
  rope(dx, theta, offset, true);
}

void CudaBackend::attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                    const Tensor& v, AttentionMask mask) {
  const auto op_timer = profile("attention_forward");
  const cuda::AttentionDims d = attention_dims(q, k, v, "attention_forward");
  check(out, "attention_forward");
  check_f32(lse, "attention_forward lse");
  same_shape(out, q, "attention_forward");
  SF_CHECK(out.dtype() == q.dtype() && lse.numel() == d.batch * d.q_heads * d.q_len,
           "attention_forward: out {} lse {} for q {}", out.describe(), lse.describe(), q.describe());
  cuda::attention_forward(q.dtype(), d, mask.shift, mask.window, q.raw(), k.raw(), v.raw(),
                          out.raw(), static_cast<float*>(lse.raw()), enqueue());
}

void CudaBackend::attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                     const Tensor& out, const Tensor& lse, const Tensor& q,
                                     const Tensor& k, const Tensor& v, AttentionMask mask) {
  attention_backward_rope(dq, dk, dv, dout, out, lse, q, k, v, mask, false, false, 0.0);
}

void CudaBackend::attention_backward_rope(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                          const Tensor& out, const Tensor& lse, const Tensor& q,
                                          const Tensor& k, const Tensor& v, AttentionMask mask,
                                          bool rope_q, bool rope_k, double theta) {
  const auto op_timer = profile("attention_backward");
  const cuda::AttentionDims d = attention_dims(q, k, v, "attention_backward");
  for (const Tensor* t : TensorList{&dout, &out}) check(*t, "attention_backward");
  const cuda::AttentionGradStrides strides{check_rows(dq, 2, "attention_backward dq"),
                                           check_rows(dk, 2, "attention_backward dk"),
                                           check_rows(dv, 2, "attention_backward dv")};
  check_f32(lse, "attention_backward lse");
  same_shape(dq, q, "attention_backward dq");
  same_shape(dk, k, "attention_backward dk");
  same_shape(dv, v, "attention_backward dv");
  same_shape(dout, q, "attention_backward dout");
  same_shape(out, q, "attention_backward out");
  for (const Tensor* t : TensorList{&dq, &dk, &dv, &dout, &out})
    SF_CHECK(t->dtype() == q.dtype(), "attention_backward: {} next to q {}", t->describe(),
             q.describe());
  const size_t bytes = cuda::attention_backward_workspace_bytes(q.dtype(), d);
  SF_CHECK(d.head_dim % 2 == 0 || !(rope_q || rope_k),
           "attention_backward_rope: RoPE needs an even head_dim, got {}", d.head_dim);
  // One table for both (asking twice could grow it and free the first pointer); it is built
  // before the workspace, as building may wait for the stream.
  cuda::AttentionRopeUndo rope;
  if (rope_q || rope_k) {
    const float* table = rope_table(theta, d.head_dim, std::max(d.q_len, d.kv_len));
    rope.q_table = rope_q ? table : nullptr;
    rope.k_table = rope_k ? table : nullptr;
  }
  void* workspace = grown(workspace_, workspace_bytes_, bytes);
  cuda::attention_backward(q.dtype(), d, mask.shift, mask.window, dout.raw(), out.raw(),
                           static_cast<const float*>(lse.raw()), q.raw(), k.raw(), v.raw(),
                           dq.raw(), dk.raw(), dv.raw(), workspace, enqueue(), rope, strides);
}

void CudaBackend::swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) {
  const auto op_timer = profile("swiglu_forward");
  for (const Tensor* t : TensorList{&out, &gate, &up}) check(*t, "swiglu_forward");
  same_shape(out, gate, "swiglu_forward");
  same_shape(up, gate, "swiglu_forward");
  same_dtype({&out, &gate, &up}, "swiglu_forward");
  cuda::swiglu_forward(out.dtype(), out.raw(), gate.raw(), up.raw(), out.numel(), enqueue());
}

void CudaBackend::swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout,
                                  const Tensor& gate, const Tensor& up) {
  const auto op_timer = profile("swiglu_backward");
  for (const Tensor* t : TensorList{&dout, &gate, &up}) check(*t, "swiglu_backward");
  // dgate and dup may be the two halves of one [rows, 2F] matrix: one row stride for both.
  const int64_t stride = check_rows(dgate, 1, "swiglu_backward dgate");
  SF_CHECK(check_rows(dup, 1, "swiglu_backward dup") == stride,
           "swiglu_backward: dgate and dup rows are {} and {} elements apart", stride,
           dup.row_stride(1));
  for (const Tensor* t : TensorList{&dgate, &dup, &dout, &up}) same_shape(*t, gate, "swiglu_backward");
  same_dtype({&dgate, &dup, &dout, &gate, &up}, "swiglu_backward");
  const int64_t cols = gate.ndim() == 0 ? 1 : gate.dim(-1);
  cuda::swiglu_backward(gate.dtype(), dgate.raw(), dup.raw(), dout.raw(), gate.raw(), up.raw(),
                        cols == 0 ? 0 : gate.numel() / cols, cols, enqueue(), stride);
}

int64_t CudaBackend::cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                           const Tensor& targets) {
  const auto op_timer = profile("cross_entropy_forward");
  check(logits, "cross_entropy_forward");
  check_f32(losses, "cross_entropy_forward losses");
  check_tokens(targets, "cross_entropy_forward");
  const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
  SF_CHECK(targets.numel() == rows && losses.numel() == rows,
           "cross_entropy_forward: logits {} targets {} losses {}", logits.describe(),
           targets.describe(), losses.describe());
  auto* counted = reinterpret_cast<int64_t*>(scalars_);
  cuda::cross_entropy_forward(logits.dtype(), static_cast<float*>(losses.raw()), counted,
                              logits.raw(), tokens_ptr(targets), rows, V, enqueue());
  return read_back(counted);
}

void CudaBackend::cross_entropy_forward_backward(Tensor& losses, Tensor& dlogits,
                                                 const Tensor& logits, const Tensor& targets) {
  const auto op_timer = profile("cross_entropy_forward_backward");
  check(logits, "cross_entropy_forward_backward");
  check(dlogits, "cross_entropy_forward_backward");
  check_f32(losses, "cross_entropy_forward_backward losses");
  check_tokens(targets, "cross_entropy_forward_backward");
  same_shape(dlogits, logits, "cross_entropy_forward_backward");
  const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
  SF_CHECK(dlogits.dtype() == logits.dtype() && targets.numel() == rows && losses.numel() == rows,
           "cross_entropy_forward_backward: logits {} dlogits {} targets {} losses {}",
           logits.describe(), dlogits.describe(), targets.describe(), losses.describe());
  cuda::cross_entropy_forward_backward(logits.dtype(), static_cast<float*>(losses.raw()),
                                       dlogits.raw(), logits.raw(), tokens_ptr(targets), rows, V,
                                       enqueue());
}

void CudaBackend::cross_entropy_backward(Tensor& dlogits, const Tensor& logits,
                                         const Tensor& targets, double scale) {
  const auto op_timer = profile("cross_entropy_backward");
  check(dlogits, "cross_entropy_backward");
  check(logits, "cross_entropy_backward");
  check_tokens(targets, "cross_entropy_backward");
  same_shape(dlogits, logits, "cross_entropy_backward");
  SF_CHECK(dlogits.dtype() == logits.dtype(), "cross_entropy_backward: dlogits {} logits {}",
           dlogits.describe(), logits.describe());
  const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
  SF_CHECK(targets.numel() == rows, "cross_entropy_backward: logits {} targets {}",
           logits.describe(), targets.describe());
  cuda::cross_entropy_backward(logits.dtype(), dlogits.raw(), logits.raw(), tokens_ptr(targets),
                               rows, V, static_cast<float>(scale), enqueue());
}

void CudaBackend::adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                               const AdamWStep& s) {
  const auto op_timer = profile("adamw_update");
  for (const Tensor* t : TensorList{&param, &grad, &m, &v}) check_f32(*t, "adamw_update");
  for (const Tensor* t : TensorList{&grad, &m, &v}) same_shape(*t, param, "adamw_update");
  check_adamw_step(s);
  cuda::adamw_update(static_cast<float*>(param.raw()), static_cast<const float*>(grad.raw()),
                     static_cast<float*>(m.raw()), static_cast<float*>(v.raw()), param.numel(),
                     adamw_args(s), enqueue());
}

// ---- many tensors in one launch (tables of pointers and sizes uploaded per call) ----------
void CudaBackend::fill_many(const std::vector<Tensor>& tensors, double value) {
  const auto op_timer = profile("fill_many");
  if (tensors.empty()) return;
  std::vector<uint64_t> pointers, sizes;
  for (const Tensor& t : tensors) {
    check(t, "fill_many");
    SF_CHECK(t.dtype() == tensors[0].dtype(), "fill_many: {} next to {}", t.describe(),
             tensors[0].describe());
    pointers.push_back(reinterpret_cast<uint64_t>(t.raw()));
    sizes.push_back(static_cast<uint64_t>(t.numel()));
  }
  const cuda::ManyTable table = upload_many({pointers}, sizes);
  cuda::fill_many(tensors[0].dtype(), table.column<void>(0), table.layout,
                  static_cast<float>(value), enqueue());
}

void CudaBackend::convert_many(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) {
  const auto op_timer = profile("convert_many");
  SF_CHECK(dst.size() == src.size(), "convert_many: {} destinations for {} sources", dst.size(),
           src.size());
  if (dst.empty()) return;
  std::vector<uint64_t> to, from, sizes;
  for (size_t i = 0; i < dst.size(); ++i) {
    check(dst[i], "convert_many");
    check(src[i], "convert_many");
    SF_CHECK(dst[i].shape() == src[i].shape() && dst[i].dtype() == dst[0].dtype() &&
                 src[i].dtype() == src[0].dtype(),
             "convert_many: {} into {} (one source dtype, one destination dtype, same shapes)",
             src[i].describe(), dst[i].describe());
    to.push_back(reinterpret_cast<uint64_t>(dst[i].raw()));
    from.push_back(reinterpret_cast<uint64_t>(src[i].raw()));
    sizes.push_back(static_cast<uint64_t>(src[i].numel()));
  }
  const cuda::ManyTable table = upload_many({to, from}, sizes);
  cuda::convert_many(dst[0].dtype(), table.column<void>(0), src[0].dtype(),
                     table.column<const void>(1), table.layout, enqueue());
}

// AdamW and the refresh of the working copies (where given) in one pass: see AdamWTensors.
void CudaBackend::adamw_update_many(const std::vector<AdamWTensors>& params, const AdamWStep& s) {
  const auto op_timer = profile("adamw_update_many");
  if (params.empty()) return;
  check_adamw_step(s);
  if (s.clip_sum_squares.defined()) {
    check_f64_scalar(s.clip_sum_squares, "adamw_update_many clip_sum_squares");
    SF_CHECK(s.clip_sum_squares.device() == Device::cuda,
             "adamw_update_many: clip_sum_squares {} is not on the GPU",
             s.clip_sum_squares.describe());
  }
  std::vector<uint64_t> values, grads, ms, vs, working, sizes;
  std::vector<float> decays;
  const Tensor* first_working = nullptr;  // every working copy of one launch has its dtype
  for (const AdamWTensors& p : params) {
    for (const Tensor* t : TensorList{&p.param, &p.grad, &p.m, &p.v}) check_f32(*t, "adamw_update_many");
    for (const Tensor* t : TensorList{&p.grad, &p.m, &p.v}) same_shape(*t, p.param, "adamw_update_many");
    if (p.working.defined()) {
      check(p.working, "adamw_update_many");
      adamw_check_working(p, "adamw_update_many");
      if (!first_working) first_working = &p.working;
      SF_CHECK(p.working.dtype() == first_working->dtype(),
               "adamw_update_many: working copies of one call share a dtype: {} next to {}",
               p.working.describe(), first_working->describe());
    }
    values.push_back(reinterpret_cast<uint64_t>(p.param.raw()));
    grads.push_back(reinterpret_cast<uint64_t>(p.grad.raw()));
    ms.push_back(reinterpret_cast<uint64_t>(p.m.raw()));
    vs.push_back(reinterpret_cast<uint64_t>(p.v.raw()));
    working.push_back(p.working.defined() ? reinterpret_cast<uint64_t>(p.working.raw()) : 0);
    sizes.push_back(static_cast<uint64_t>(p.param.numel()));
    AdamWStep own = s;
    own.weight_decay = p.weight_decay;
    decays.push_back(adamw_args(own).decay);
  }
  std::vector<uint64_t> decay_words((decays.size() + 1) / 2);  // two floats per word
  std::memcpy(decay_words.data(), decays.data(), decays.size() * sizeof(float));
  const cuda::ManyTable table = upload_many({values, grads, ms, vs, working}, sizes, decay_words);
  cuda::AdamWTable t;
  t.params = table.column<float>(0);
  t.grads = table.column<const float>(1);
  t.m = table.column<float>(2);
  t.v = table.column<float>(3);
  t.working = table.column<void>(4);
  t.decays = reinterpret_cast<const float*>(table.extra);
  t.layout = table.layout;
  t.working_dtype = first_working ? first_working->dtype() : DType::f32;
  if (s.clip_sum_squares.defined()) {
    t.clip_sum_squares = static_cast<const double*>(s.clip_sum_squares.raw());
    t.max_norm = s.max_norm;
  }
  cuda::adamw_update_many(t, adamw_args(s), enqueue());
}

void CudaBackend::check_adamw_step(const AdamWStep& s) {
  SF_CHECK(s.step >= 1 && std::isfinite(s.lr) && s.lr >= 0.0 && s.eps > 0.0 &&
               std::isfinite(s.grad_scale),
           "adamw_update: invalid step {} lr {} eps {} grad_scale {}", s.step, s.lr, s.eps,
           s.grad_scale);
}

// The per-step constants, in double and rounded once (as the CPU kernel does).
cuda::AdamWArgs CudaBackend::adamw_args(const AdamWStep& s) {
  const double t = static_cast<double>(s.step);
  cuda::AdamWArgs a;
  a.decay = static_cast<float>(1.0 - s.lr * s.weight_decay);
  a.step_size = static_cast<float>(s.lr / (1.0 - std::pow(s.beta1, t)));
  a.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(s.beta2, t)));
  a.beta1 = static_cast<float>(s.beta1);
  a.one_minus_beta1 = static_cast<float>(1.0 - s.beta1);
  a.beta2 = static_cast<float>(s.beta2);
  a.one_minus_beta2 = static_cast<float>(1.0 - s.beta2);
  a.eps = static_cast<float>(s.eps);
  a.grad_scale = static_cast<float>(s.grad_scale);
  return a;
}

void CudaBackend::rope(Tensor& x, double theta, int64_t offset, bool inverse) {
  check(x, inverse ? "rope_backward" : "rope_forward");
  SF_CHECK(x.ndim() == 4 && x.dim(3) % 2 == 0, "rope: expected [B, T, H, even head_dim], got {}",
           x.describe());
  SF_CHECK(offset >= 0, "rope: negative position offset {}", offset);
  const float* table = rope_table(theta, x.dim(3), offset + x.dim(1));
  cuda::rope(x.dtype(), x.raw(), table, x.dim(0) * x.dim(1), x.dim(1), x.dim(2), x.dim(3),
             offset, inverse, enqueue());
}

// The (cos, sin) table of rope() for (theta, head_dim), covering positions [0, positions):
// built on first use, rebuilt larger (doubling) when a longer sequence needs it.
const float* CudaBackend::rope_table(double theta, int64_t head_dim, int64_t positions) {
  RopeTable* table = nullptr;
  for (RopeTable& t : rope_tables_)
    if (t.theta == theta && t.head_dim == head_dim) table = &t;
  if (!table) table = &rope_tables_.emplace_back(RopeTable{theta, head_dim});
  if (table->positions < positions) {
    const int64_t grown_positions = std::max(positions, 2 * table->positions);
    grown(table->data, table->bytes, grown_positions * head_dim * sizeof(float));
    cuda::rope_table(static_cast<float*>(table->data), grown_positions, head_dim, theta, enqueue());
    table->positions = grown_positions;
  }
  return static_cast<const float*>(table->data);
}

cuda::AttentionDims CudaBackend::attention_dims(const Tensor& q, const Tensor& k, const Tensor& v,
                                                const char* op) const {
  for (const Tensor* t : {&q, &k, &v}) check(*t, op);
  SF_CHECK(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() && q.dim(0) == k.dim(0) &&
               q.dim(3) == k.dim(3) && k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0 &&
               q.dtype() == k.dtype() && q.dtype() == v.dtype(),
           "{}: q {} k {} v {}", op, q.describe(), k.describe(), v.describe());
  cuda::AttentionDims d;
  d.batch = q.dim(0);
  d.q_len = q.dim(1);
  d.q_heads = q.dim(2);
  d.head_dim = q.dim(3);
  d.kv_len = k.dim(1);
  d.kv_heads = k.dim(2);
  return d;
}

}  // namespace sf::cuda_detail
