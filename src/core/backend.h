// backend.h — the operations the model is built from, one virtual call per kernel.
//
// The model wiring (src/model) is written once against this interface; a backend (CPU in
// src/cpu, CUDA in src/cuda) implements the kernels. Conventions shared by every backend:
//   * Activations are row-major and contiguous. "rows" means every leading dimension together
//     (B*T for a [B, T, D] tensor); the last dimension is the feature dimension.
//     Exception: the gradient outputs of attention_backward(_rope) (dq, dk, dv) and of
//     swiglu_backward (dgate, dup) may be row-strided (Tensor::row_stride: each row contiguous,
//     rows further apart), i.e. column ranges of one wider matrix. The model packs dq|dk|dv as
//     [rows, Q + 2KV] and dgate|dup as [rows, 2F] that way, so that the products that follow
//     read them as one operand (one matrix product instead of three or two).
//   * Linear layers store W as [out_features, in_features] (the PyTorch layout), so y = x W^T.
//   * Unless a comment says "overwrites", gradient outputs ACCUMULATE (+=): weight gradients sum
//     over micro-batches and over the p passes of shared weights; input gradients sum over the
//     branches that read the same input.
//   * The CPU backend runs fp32 (the reference) and fp64 (used by the finite-difference checks);
//     all tensors of one call have the same floating dtype.
//   * The CUDA backend runs F32 or BF16 activations (fp32 arithmetic either way). In BF16 mixed
//     precision the weights a kernel reads are BF16 working copies while the gradients it
//     accumulates into are the F32 master gradients, so matmul, rmsnorm_backward and
//     embedding_backward accept an F32 gradient output next to BF16 inputs; statistics (rstd,
//     lse, losses) are F32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "core/attention_mask.h"
#include "core/error.h"
#include "core/host_readback.h"
#include "core/memory_bandwidth.h"
#include "core/tensor.h"

namespace sf {

// Hyper-parameters of one AdamW step (decoupled weight decay, bias-corrected moments).
struct AdamWStep {
  double lr = 0.0;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;  // 0 for parameters that are not decayed (norms, scalars)
  int64_t step = 1;           // 1-based, for bias correction
  double grad_scale = 1.0;    // gradients are multiplied by this first (global-norm clipping)
  // Clipping decided where the update runs, so the host need not wait for the norm: when
  // defined, an F64 tensor of one element on the backend holding the gradients' sum of squares
  // (Backend::sum_squares_total_into). grad_scale is then clip_factor(sqrt(sum), max_norm), and a
  // non-finite sum skips the whole update (nothing is written).
  Tensor clip_sum_squares{};
  double max_norm = 0.0;
};

// The factor gradients are multiplied by under global-norm clipping, as
// torch.nn.utils.clip_grad_norm_: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0 (no
// clipping); NaN when the norm is not finite. (cuda/adamw.cu computes the same in double.)
inline double clip_factor(double norm, double max_norm) {
  if (!std::isfinite(norm)) return std::nan("");
  if (max_norm <= 0.0) return 1.0;
  const double factor = max_norm / (norm + 1e-6);
  return factor < 1.0 ? factor : 1.0;
}

// Fails with a message naming `op` unless `t` is an F64 tensor of one element (a device-side
// scalar such as the gradients' sum of squares).
inline void check_f64_scalar(const Tensor& t, const char* op) {
  SF_CHECK(t.defined() && t.dtype() == DType::f64 && t.numel() == 1,
           "{}: expected an F64 tensor of one element, got {}", op,
           t.defined() ? t.describe() : std::string("undefined"));
}

// One parameter's tensors for Backend::adamw_update_many. `working` is optional (undefined =
// none): when defined (same shape as param, F32 or BF16) the update also writes the new
// parameter value converted to working's dtype, rounded exactly as Backend::convert rounds.
// Mixed precision passes the BF16 working copy here, so the optimizer step refreshes it in the
// same pass instead of a separate convert_many at the next forward.
struct AdamWTensors {
  Tensor param, grad, m, v;
  double weight_decay = 0.0;
  Tensor working{};  // "{}": initialisers that leave it out stay warning-free
};

// One product of Backend::linear_many: out [M, N] = x [M, K] @ w [N, K]^T (w in the PyTorch
// layout of a linear layer), added to out when `accumulate`. One dtype per task.
// Where the rows of one decode step of attention sit (Backend::attention_step), I32 [N] each:
// the query's position, its new key's position (the query's for self-attention, the memory
// row's i - 1 for cross-attention), the cache slot the new key and value go to, and the cache
// keys [key_begin, key_end) the query sees.
// Which cache row a step row uses: its own (block_rows = 0), or, where a step runs fewer
// sequences than its caches hold (a decoder stepping only its first n sequences), the rows come
// in blocks of block_rows, one per stack, and row r uses cache row
// (r / block_rows) * cache_block_rows + r % block_rows (each stack's caches being a block of
// cache_block_rows rows).
struct AttentionStepRows {
  Tensor position, key_position, slot, key_begin, key_end;
  int64_t block_rows = 0, cache_block_rows = 0;
  // The cache row of step row r.
  int64_t cache_row(int64_t r) const {
    return block_rows == 0 ? r : (r / block_rows) * cache_block_rows + r % block_rows;
  }
  // The cache rows a step of n rows may use: n, or up to the last block's end.
  int64_t cache_rows_used(int64_t n) const { return n == 0 ? 0 : cache_row(n - 1) + 1; }
};

// An RMSNorm a product applies to its input rows first (decoding: a sub-block's norm fused into
// its projections): RMSNorm(x) = x / sqrt(mean(x^2) + eps) * weight. A backend that does not
// fuse it writes the normalised rows into `out` and their rstd into `rstd` (scratch the caller
// provides, [rows, K] and [rows]); tasks that share `out` share one normalisation.
struct InputNorm {
  Tensor weight;  // [K]; undefined: no norm
  double eps = 0.0;
  Tensor out, rstd;
};

// A SwiGLU a product applies to its input first (decoding: the MLP's activation fused into w2):
// x' = silu(gate) * x, x being the up projection and `gate` the gate projection (rows like x).
// A backend that does not fuse it writes x' into `out` (scratch like x) with swiglu_forward;
// tasks that share `out` share one evaluation. Not together with a norm.
struct InputGate {
  Tensor gate;  // undefined: no gate
  Tensor out;
};

struct LinearTask {
  Tensor out, x, w;
  bool accumulate = false;
  InputNorm norm{};
  InputGate gate{};
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // New zero-filled contiguous tensor on this backend's device.
  virtual Tensor zeros(const Shape& shape, DType dtype) = 0;
  // Copies between any two devices (one of them this backend's); shapes and dtypes must match.
  virtual void copy(Tensor& dst, const Tensor& src) = 0;
  // dst = src converted to dst's floating dtype (F32, F64, BF16; rounding to nearest even).
  // Both on this backend's device, same shape. The CUDA backend's mixed precision uses it to
  // refresh the BF16 working weights from the F32 master weights.
  virtual void convert(Tensor& dst, const Tensor& src) = 0;

  // ---- elementwise and reductions -----------------------------------------------------------
  virtual void fill(Tensor& x, double value) = 0;
  virtual void scale(Tensor& x, double alpha) = 0;                      // x *= alpha
  virtual void axpy(Tensor& y, double alpha, const Tensor& x) = 0;      // y += alpha * x
  virtual double dot(const Tensor& a, const Tensor& b) = 0;             // sum(a * b), fp64 result
  virtual double sum_squares(const Tensor& x) = 0;                      // sum(x^2), fp64 result
  // sum over all tensors of sum(x^2) (the global gradient norm); a backend may do it in one go.
  virtual double sum_squares_total(const std::vector<Tensor>& tensors) {
    double total = 0.0;
    for (const Tensor& t : tensors) total += sum_squares(t);
    return total;
  }
  // The same sum into `total` (an F64 tensor of one element on this backend) without waiting
  // for it: AdamWStep::clip_sum_squares reads it where the update runs. This default computes
  // it on the host and copies it there.
  virtual void sum_squares_total_into(Tensor& total, const std::vector<Tensor>& tensors) {
    write_f64_scalar(total, sum_squares_total(tensors), "sum_squares_total_into");
  }
  // total (an F64 scalar tensor on this backend) = value, copied from the host.
  void write_f64_scalar(Tensor& total, double value, const char* op) {
    check_f64_scalar(total, op);
    Tensor host = Tensor::zeros({1}, DType::f64);
    host.data<double>()[0] = value;
    copy(total, host);
  }
  // total = alpha * sum(a * b) (dot_into) or total += alpha * sum(a * b) (dot_add), where
  // total is an F64 tensor of one element on this backend, without waiting for it (a training
  // step's loss summed over its micro-batches on the device). The sum is fp64 as dot()'s. These
  // defaults compute it on the host.
  virtual void dot_into(Tensor& total, double alpha, const Tensor& a, const Tensor& b) {
    write_f64_scalar(total, alpha * dot(a, b), "dot_into");
  }
  virtual void dot_add(Tensor& total, double alpha, const Tensor& a, const Tensor& b) {
    write_f64_scalar(total, read_f64_scalar(total) + alpha * dot(a, b), "dot_add");
  }
  // A reader of device values that does not wait for work queued after the read
  // (core/host_readback.h). This default copies at once.
  virtual std::unique_ptr<HostReadback> make_readback() {
    return std::make_unique<CopyingReadback>(*this);
  }
  // The value of an F64 scalar tensor on this backend (sum_squares_total_into's), read back to
  // the host: waits for the work that writes it.
  double read_f64_scalar(const Tensor& t) {
    check_f64_scalar(t, "read_f64_scalar");
    Tensor host = Tensor::zeros({1}, DType::f64);
    copy(host, t);
    return host.data<double>()[0];
  }
  // Waits until all queued work is done (asynchronous backends; timing).
  virtual void synchronize() {}
  // The bandwidth of the memory this backend's kernels read, measured now (benchmarks report
  // what a decode step achieves as a fraction of it); nullopt when the backend cannot say.
  virtual std::optional<MemoryBandwidth> measure_memory_bandwidth() { return std::nullopt; }

  // ---- matrix product -------------------------------------------------------------------------
  // out = alpha * op(a) @ op(b) + beta * out, with op(m) = m or m^T; a, b, out are 2-D.
  virtual void matmul(Tensor& out, const Tensor& a, bool transpose_a, const Tensor& b,
                      bool transpose_b, double alpha, double beta) = 0;
  // out = op(a) @ op(b) + addend (out overwritten; addend has out's shape and dtype): a residual
  // connection in one pass. The CUDA backend reads the addend inside the matrix product;
  // this default copies it first.
  virtual void matmul_add(Tensor& out, const Tensor& a, bool transpose_a, const Tensor& b,
                          bool transpose_b, const Tensor& addend) {
    copy(out, addend);
    matmul(out, a, transpose_a, b, transpose_b, 1.0, 1.0);
  }

  // G products of one shape in one go: out[g] = alpha * op(a[g]) @ op(b[g]) + beta * out[g] for
  // g < G, out [G, M, N]. a and b are [G, ., .], or 2-D: the same matrix for every g (the input
  // that q, k and v are all projected from). The q/k/v and SwiGLU input projections run this
  // way: G products of 768-wide outputs fill a GPU that one of them leaves partly idle. This
  // default runs them one by one.
  virtual void matmul_batched(Tensor& out, const Tensor& a, bool transpose_a, const Tensor& b,
                              bool transpose_b, double alpha, double beta) {
    check_batched_operands(out, a, b);
    for (int64_t g = 0; g < out.dim(0); ++g) {
      Tensor out_g = out.select(g);
      matmul(out_g, a.ndim() == 3 ? a.select(g) : a, transpose_a,
             b.ndim() == 3 ? b.select(g) : b, transpose_b, alpha, beta);
    }
  }

  // Linear layers on a few rows, several at once: for every task, out = x @ w^T, or
  // out += x @ w^T when `accumulate` (a residual added in place). The tasks are independent
  // (no task writes what another reads). A decode step issues the products of layer j of all
  // the stacks it runs together this way, so that a backend can spread the union of their
  // output features over all its cores in one parallel region (CPU) or one launch (GPU). This
  // default runs them one by one.
  virtual void linear_many(const std::vector<LinearTask>& tasks) {
    for (const LinearTask& t : materialize_inputs(tasks)) {
      Tensor out = t.out;
      matmul(out, t.x, false, t.w, true, 1.0, t.accumulate ? 1.0 : 0.0);
    }
  }

  // ---- layers (forward / backward) ------------------------------------------------------------
  // tokens: I32[rows]; table: [V, D]; out: [rows, D] (overwrites). Token ids must be in [0, V).
  virtual void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) = 0;
  virtual void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) = 0;

  // out = x / sqrt(mean(x^2) + eps) * weight; rstd[rows] keeps 1/sqrt(mean + eps) for backward.
  // out and rstd are overwritten; dx and dweight accumulate.
  virtual void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                               double eps) = 0;
  virtual void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                                const Tensor& weight, const Tensor& rstd) = 0;

  // Rotary embedding in place on x [B, T, H, head_dim] (head_dim even). Pairs (2m, 2m+1) of a
  // head at position p = position_offset + t rotate by p * theta^(-2m/head_dim).
  // rope_backward applies the inverse rotation to a gradient in place.
  virtual void rope_forward(Tensor& x, double theta, int64_t position_offset) = 0;
  virtual void rope_backward(Tensor& dx, double theta, int64_t position_offset) = 0;

  // Scaled dot-product attention with grouped heads.
  // q: [B, Tq, Hq, hd]; k, v: [B, Tk, Hkv, hd] with Hq % Hkv == 0 (query head h reads kv head
  // h / (Hq / Hkv)); query t has position t, key j position j. out: [B, Tq, Hq, hd] and
  // lse: F32/F64 [B, Hq, Tq] (log-sum-exp of the scaled scores, -inf where nothing is visible)
  // are overwritten. Scores are scaled by 1/sqrt(hd).
  virtual void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                                 const Tensor& v, AttentionMask mask) = 0;
  // dq, dk, dv are overwritten.
  virtual void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                  const Tensor& out, const Tensor& lse, const Tensor& q,
                                  const Tensor& k, const Tensor& v, AttentionMask mask) = 0;
  // attention_backward, then rope_backward(dq, theta, 0) when rope_q and rope_backward(dk,
  // theta, 0) when rope_k: the gradients w.r.t. the queries and keys before their rotation.
  // The CUDA backend folds the inverse rotation of dq into the conversion of its accumulator.
  virtual void attention_backward_rope(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                                       const Tensor& out, const Tensor& lse, const Tensor& q,
                                       const Tensor& k, const Tensor& v, AttentionMask mask,
                                       bool rope_q, bool rope_k, double theta) {
    attention_backward(dq, dk, dv, dout, out, lse, q, k, v, mask);
    if (rope_q) rope_backward(dq, theta, 0);
    if (rope_k) rope_backward(dk, theta, 0);
  }

  // out = silu(gate) * up, all [rows, F]; out overwritten; dgate and dup overwritten.
  virtual void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) = 0;
  virtual void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                               const Tensor& up) = 0;

  // logits [rows, V], targets I32[rows] (-1 = ignored). losses[rows] (overwritten) gets
  // -log softmax(logits)[target], 0 for ignored rows. Returns the number of counted rows.
  virtual int64_t cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                        const Tensor& targets) = 0;
  // dlogits (overwritten) = scale * (softmax(logits) - onehot(target)); zero on ignored rows.
  virtual void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                                      double scale) = 0;
  // Both at once, as training's forward wants them: losses (overwritten) and dlogits
  // (overwritten) = softmax(logits) - onehot(target), i.e. the backward with scale 1. Returns
  // nothing, so an asynchronous backend need not wait for it (the caller counts the targets).
  // The CUDA backend reads the logits once for the two; this default runs them in turn.
  virtual void cross_entropy_forward_backward(Tensor& losses, Tensor& dlogits,
                                              const Tensor& logits, const Tensor& targets) {
    cross_entropy_forward(losses, logits, targets);
    cross_entropy_backward(dlogits, logits, targets, 1.0);
  }

  // ---- incremental decoding (one new position per sequence) ------------------------------------
  // Rotary embedding in place on x [N, H, hd] where row n is at position positions[n] (I32[N]).
  virtual void rope_at(Tensor& x, const Tensor& positions, double theta) = 0;
  // Writes rows [B, W] into cache [B, C, W] at slot slots[b] (I32[B], 0 <= slot < C) of each
  // sequence b. (W = kv heads * head_dim; the cache is a [B, C, Hkv, hd] tensor viewed flat.)
  virtual void kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) = 0;
  // Writes rows [n, W] as the consecutive positions first .. first + n - 1 of sequence
  // `sequence` into cache [B, C, W]: position j into slot j % C. When n > C only the last C
  // positions are written (a ring of C slots keeps those). A prefill fills each cache of a
  // layer with one such call instead of one copy per position.
  virtual void kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                                    int64_t first_position) = 0;
  // Attention of one query per sequence over a key/value cache.
  // q, out: [B, Hq, hd]; k_cache, v_cache: [B, C, Hkv, hd]; key_begin, key_end: I32[B].
  // Sequence b attends to key positions j in [key_begin[b], key_end[b]); position j lives in
  // slot j % C (so a cache of C = w slots is a ring holding the last w positions; the range
  // must span at most C positions). An empty range gives an exactly zero output row.
  virtual void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                const Tensor& v_cache, const Tensor& key_begin,
                                const Tensor& key_end) = 0;

  // One decode step of attention for N rows: q [N, Hq, hd] rotated at rows.position (when
  // rope_q), the row's new key k [N, Hkv, hd] rotated at rows.key_position (when rope_k) and
  // written with v into slot rows.slot of k_cache / v_cache [N, C, Hkv, hd], then each row
  // attends to its cache keys [key_begin, key_end) (attention_decode's rules) into out
  // [N, Hq, hd]. q and k may be left rotated or not. Row r uses cache row rows.cache_row(r)
  // of k_cache, v_cache [R, C, Hkv, hd] (R = N unless rows come in blocks). This default runs
  // rope_at, kv_cache_write and attention_decode in turn, a block of rows at a time; a backend
  // may do it in one pass.
  virtual void attention_step(Tensor& out, Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache,
                              Tensor& v_cache, const AttentionStepRows& rows, bool rope_q,
                              bool rope_k, double theta) {
    if (rope_q) rope_at(q, rows.position, theta);
    if (rope_k) rope_at(k, rows.key_position, theta);
    const int64_t n = k.dim(0);
    const int64_t block = rows.block_rows == 0 ? n : rows.block_rows;
    for (int64_t first = 0; first < n; first += block) {
      const int64_t count = std::min(block, n - first);
      const auto here = [&](const Tensor& t) { return t.slice(0, first, count); };
      Tensor k_rows = k_cache.slice(0, rows.cache_row(first), count);
      Tensor v_rows = v_cache.slice(0, rows.cache_row(first), count);
      Tensor out_rows = here(out);
      kv_cache_write(k_rows, here(k).view({count, -1}), here(rows.slot));
      kv_cache_write(v_rows, here(v).view({count, -1}), here(rows.slot));
      attention_decode(out_rows, here(q), k_rows, v_rows, here(rows.key_begin), here(rows.key_end));
    }
  }

  // ---- optimizer -------------------------------------------------------------------------------
  // One AdamW step on a parameter (F32) with its gradient and moments (F32, same shape).
  virtual void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                            const AdamWStep& step) = 0;

  // ---- recording and replay (CUDA graphs) ------------------------------------------------------
  // A backend that can record a fixed sequence of operations and replay it with less launch
  // overhead says so with can_record(). Between begin_recording() and end_recording() the
  // operations are recorded, not run; replay(id) runs them (each time on whatever the same
  // buffers then hold) and returns false, running nothing, when the recording no longer fits
  // (the backend replaced a scratch buffer it uses): record again then. Nothing that reads
  // results back to the host may happen while recording. abort_recording() ends a recording
  // that failed; release_recording() frees one.
  virtual bool can_record() const { return false; }
  virtual void begin_recording() { fail("this backend cannot record operations"); }
  virtual int end_recording() { fail("this backend cannot record operations"); }
  virtual void abort_recording() {}
  virtual bool replay(int recording) { return false; }
  virtual void release_recording(int recording) {}

  // ---- many tensors at once -------------------------------------------------------------------
  // The per-parameter work of an optimizer step (zero the gradients, update, refresh the BF16
  // working copies) touches ~100 tensors of very different sizes; the CUDA backend does each of
  // these in one launch. The defaults loop over the one-tensor operations. The results are
  // those of the loops.
  virtual void fill_many(const std::vector<Tensor>& tensors, double value) {
    for (Tensor t : tensors) fill(t, value);
  }
  virtual void convert_many(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) {
    for (size_t i = 0; i < dst.size(); ++i) {
      Tensor d = dst[i];
      convert(d, src[i]);
    }
  }
  // step.weight_decay is ignored: each parameter brings its own. This loop (adamw_update, then
  // convert into the working copy where there is one) defines the result; the CPU reference
  // uses it as it is, the CUDA backend fuses both into one pass over the parameters.
  virtual void adamw_update_many(const std::vector<AdamWTensors>& params, const AdamWStep& step) {
    for (const AdamWTensors& p : params) adamw_check_working(p, "adamw_update_many");
    AdamWStep scaled = step;
    if (step.clip_sum_squares.defined()) {
      const double sum = read_f64_scalar(step.clip_sum_squares);
      if (!std::isfinite(sum)) return;  // non-finite gradients: nothing is updated
      scaled.grad_scale = clip_factor(std::sqrt(sum), step.max_norm);
      scaled.clip_sum_squares = Tensor();
    }
    for (const AdamWTensors& p : params) {
      AdamWStep s = scaled;
      s.weight_decay = p.weight_decay;
      Tensor param = p.param, m = p.m, v = p.v;
      adamw_update(param, p.grad, m, v, s);
      if (p.working.defined()) {
        Tensor working = p.working;
        convert(working, param);
      }
    }
  }

 protected:
  // matmul_batched's operand counts: out [G, M, N]; a and b each [G, ., .] or 2-D (shared).
  static void check_batched_operands(const Tensor& out, const Tensor& a, const Tensor& b) {
    SF_CHECK(out.ndim() == 3 && (a.ndim() == 2 || (a.ndim() == 3 && a.dim(0) == out.dim(0))) &&
                 (b.ndim() == 2 || (b.ndim() == 3 && b.dim(0) == out.dim(0))),
             "matmul_batched: out {} a {} b {}", out.describe(), a.describe(), b.describe());
  }
  // kv_cache_write_range's shapes (cache [B, C, ...], rows [n, W] of its width, a sequence of
  // the batch, a position >= 0), for every backend; returns W.
  static int64_t check_kv_cache_write_range(const Tensor& cache, const Tensor& rows,
                                            int64_t sequence, int64_t first_position) {
    SF_CHECK(cache.ndim() >= 2, "kv_cache_write_range: cache {} must be [B, C, ...]",
             cache.describe());
    const int64_t B = cache.dim(0), C = cache.dim(1);
    const int64_t W = cache.numel() / std::max<int64_t>(B * C, 1);
    SF_CHECK(rows.dtype() == cache.dtype() && rows.ndim() >= 1 && rows.numel() == rows.dim(0) * W,
             "kv_cache_write_range: rows {} are not rows of cache {}", rows.describe(),
             cache.describe());
    SF_CHECK(sequence >= 0 && sequence < B && first_position >= 0,
             "kv_cache_write_range: sequence {} of {}, first position {}", sequence, B,
             first_position);
    return W;
  }
  // The tasks with their input transforms applied: each distinct norm.out written once with
  // rmsnorm_forward, each distinct gate.out once with swiglu_forward, and the tasks reading
  // them (norm and gate cleared).
  std::vector<LinearTask> materialize_inputs(const std::vector<LinearTask>& tasks) {
    std::vector<LinearTask> plain = tasks;
    std::vector<const void*> done;
    auto first_time = [&](const Tensor& out) {
      if (std::find(done.begin(), done.end(), out.raw()) != done.end()) return false;
      done.push_back(out.raw());
      return true;
    };
    for (LinearTask& t : plain) {
      SF_CHECK(!t.norm.weight.defined() || !t.gate.gate.defined(),
               "linear_many: a norm and a gate on one input");
      if (t.norm.weight.defined()) {
        SF_CHECK(t.norm.out.defined() && t.norm.rstd.defined() && t.norm.out.shape() == t.x.shape(),
                 "linear_many: an input norm needs scratch rows like x {}", t.x.describe());
        if (first_time(t.norm.out)) rmsnorm_forward(t.norm.out, t.norm.rstd, t.x, t.norm.weight, t.norm.eps);
        t.x = t.norm.out;
        t.norm = InputNorm{};
      } else if (t.gate.gate.defined()) {
        SF_CHECK(t.gate.out.defined() && t.gate.out.shape() == t.x.shape() &&
                     t.gate.gate.shape() == t.x.shape(),
                 "linear_many: an input gate {} needs scratch rows like x {}",
                 t.gate.gate.describe(), t.x.describe());
        if (first_time(t.gate.out)) swiglu_forward(t.gate.out, t.gate.gate, t.x);
        t.x = t.gate.out;
        t.gate = InputGate{};
      }
    }
    return plain;
  }
  // A defined working output must be F32 or BF16 with the parameter's shape (checked for every
  // tensor before anything is updated, so a bad table changes nothing).
  static void adamw_check_working(const AdamWTensors& p, const char* op) {
    if (!p.working.defined()) return;
    SF_CHECK(p.working.dtype() == DType::f32 || p.working.dtype() == DType::bf16,
             "{}: working copy {} must be F32 or BF16", op, p.working.describe());
    SF_CHECK(p.working.shape() == p.param.shape(), "{}: working copy {} vs parameter {}", op,
             p.working.describe(), p.param.describe());
  }
};

}  // namespace sf
