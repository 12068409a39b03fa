// model.cpp — Model: parameter registration, staggered forward and backward over all stacks.
#include "model/model.h"

#include <cstdio>
#include <exception>

#include "model/recording.h"

namespace sf {

namespace {

// Every Weight of the structure, shared ones as often as they are referenced.
template <class Fn> void for_each_weight(ModelWeights& w, Fn&& fn) {
  fn(w.tok_embeddings);
  for (StackWeights& S : w.stacks) {
    for (LayerWeights& L : S.layers)
      for (Weight* x : {&L.attn_norm, &L.wq, &L.wk, &L.wv, &L.wo, &L.cross_norm, &L.cross_wq,
                        &L.cross_wk, &L.cross_wv, &L.cross_wo, &L.mlp_norm, &L.w1, &L.w3, &L.w2,
                        &L.qkv, &L.kv, &L.cross_kv, &L.w13})
        fn(*x);
    fn(S.mem_norm);
  }
  fn(w.combine_alpha);
  fn(w.final_norm);
  fn(w.lm_head);
}

}  // namespace

Model::Model(const ModelConfig& config, Backend& backend, DType dtype,
             std::optional<DType> compute_dtype)
    : config_(config),
      backend_(backend),
      dtype_(dtype),
      compute_dtype_(compute_dtype.value_or(dtype)),
      stat_dtype_(statistics_dtype(compute_dtype_)) {
  config_.validate("model config");
  SF_CHECK(dtype == DType::f32 || dtype == DType::f64, "model dtype must be F32 or F64, got {}",
           dtype_name(dtype));
  SF_CHECK(compute_dtype_ == dtype_ || (dtype_ == DType::f32 && compute_dtype_ == DType::bf16),
           "model compute dtype {} with parameter dtype {}: mixed precision is BF16 over F32",
           dtype_name(compute_dtype_), dtype_name(dtype_));
  weights_ = weights_register(config_, backend_, dtype_, params_);
  if (!mixed_precision()) return;
  // Working copies: kernels read these; gradients stay the F32 master gradients. The
  // ParameterSet holds them (one per allocation, a stacked group of parameters being one) with
  // each parameter's view, so that AdamW can refresh them in its update (parameters.h). A
  // weight -- a parameter, a view into a group, or a shared weight -- maps to the same place in
  // its allocation's copy (matched by buffer, same element offset), so grouped weights stay
  // adjacent in their copies.
  params_.add_working_copies(backend_, compute_dtype_);
  for_each_weight(weights_, [&](Weight& w) {
    if (w.value.defined()) w.value = params_.working_view(w.value);
  });
}

Model::~Model() { drop_recordings(); }

void Model::drop_recordings() {
  for (const StepRecording& r : recordings_) backend_.release_recording(r.id);
  recordings_.clear();
}

void Model::set_step_recording(bool on) {
  step_recording_ = on;
  if (!on) drop_recordings();
}

void Model::initialize() {
  weights_initialize(config_, backend_, params_);
  sync_compute_weights();  // which also clears the optimizer's "copies current" claim
}

void Model::sync_compute_weights() {
  // An explicit refresh supersedes the optimizer's: the next forward converts again, so an edit
  // made after this call without invalidate_working_copies() is still picked up.
  params_.invalidate_working_copies();
  if (!params_.has_working_copies()) return;
  backend_.convert_many(params_.working_storages(), params_.storages());
}

void Model::set_activation_recomputation(bool on) {
  if (on == recompute_) return;
  recompute_ = on;
  drop_recordings();
  act_ = Activations();  // planned again, with the other layout, at the next forward
}

LayerActivations& Model::layer_activations(int64_t s, int64_t l) {
  return act_.stacks[s].layers[recompute_ ? 0 : l];
}

void Model::plan(int64_t B, int64_t T) {
  if (act_.batch == B && act_.seq == T) return;
  drop_recordings();     // they use the buffers about to go
  act_ = Activations();  // the previous shape's buffers go first
  ActivationAllocator alloc(backend_);
  const ModelConfig& c = config_;
  const int64_t N = B * T, D = c.d_model;
  Activations a;
  a.batch = B;
  a.seq = T;
  a.tokens = alloc.zeros({B, T}, DType::i32);
  a.targets = alloc.zeros({B, T}, DType::i32);
  a.embedded = alloc.zeros({N, D}, compute_dtype_);
  a.stacks.resize(c.n_stacks);
  for (int64_t s = 0; s < c.n_stacks; ++s) {
    StackActivations& S = a.stacks[s];
    // Every stack starts from the token embeddings: residual[0] is `embedded` itself (layers
    // only read their input), so no stack copies it.
    S.residual.push_back(a.embedded);
    for (int64_t l = 1; l <= c.layers_per_stack; ++l)
      S.residual.push_back(alloc.zeros({N, D}, compute_dtype_));
    // Recomputation: one set of layer activations per stack, overwritten by every layer.
    S.layers.resize(recompute_ ? 1 : c.layers_per_stack);
    for (auto& L : S.layers)
      L = layer_activations_allocate(alloc, c, compute_dtype_, StackGroup{s, 1}, B, T, false);
    if (s >= 1) {
      S.mem = alloc.zeros({N, D}, compute_dtype_);
      S.mem_rstd = alloc.zeros({N}, stat_dtype_);
    }
    a.d_stack_output.push_back(alloc.zeros({N, D}, compute_dtype_));
    a.d_mem.push_back(s >= 1 ? alloc.zeros({N, D}, compute_dtype_) : Tensor());
  }
  a.combined = alloc.zeros({N, D}, compute_dtype_);
  a.final_norm_out = alloc.zeros({N, D}, compute_dtype_);
  a.final_rstd = alloc.zeros({N}, stat_dtype_);
  a.logits = alloc.zeros({B, T, c.vocab_size}, compute_dtype_);
  a.losses = alloc.zeros({N}, stat_dtype_);
  a.ones = alloc.zeros({N}, stat_dtype_);
  backend_.fill(a.ones, 1.0);
  a.d_combined = alloc.zeros({N, D}, compute_dtype_);
  a.d_final_norm_out = alloc.zeros({N, D}, compute_dtype_);
  a.d_logits = alloc.zeros({N, c.vocab_size}, compute_dtype_);
  a.d_embedded = alloc.zeros({N, D}, compute_dtype_);
  a.scratch = block_scratch_allocate(alloc, c, compute_dtype_, N);
  if (recompute_) a.recompute_out = alloc.zeros({N, D}, compute_dtype_);
  a.bytes = alloc.bytes();
  act_ = std::move(a);
}

void Model::check_tokens(const Tensor& t, const char* what, int32_t lowest) const {
  SF_CHECK(t.device() == Device::cpu && t.dtype() == DType::i32 && t.ndim() == 2 &&
               t.is_contiguous(),
           "{}: expected a contiguous CPU I32 [batch, seq] tensor, got {}", what, t.describe());
  const int32_t* p = t.data<int32_t>();
  const int64_t T = t.dim(1);
  for (int64_t i = 0; i < t.numel(); ++i)
    SF_CHECK(p[i] >= lowest && p[i] < config_.vocab_size,
             "{}: token id {} at batch {}, position {} is outside the vocabulary [0, {})", what,
             p[i], i / T, i % T, config_.vocab_size);
}

std::vector<double> Model::combine_alpha() const {
  if (config_.combine != CombineMode::linear) return {};
  Tensor host = Tensor::zeros({config_.n_stacks}, dtype_);
  backend_.copy(host, params_.get("combine.alpha").value);  // the master value
  std::vector<double> alpha(config_.n_stacks);
  for (int64_t k = 0; k < config_.n_stacks; ++k)
    alpha[k] = dtype_ == DType::f64 ? host.data<double>()[k] : host.data<float>()[k];
  return alpha;
}

void Model::stack_forward(int64_t s) {
  StackActivations& S = act_.stacks[s];
  // Memory for this stack: its own RMSNorm of the previous stack's output (decision, spec §3).
  if (s >= 1) memory_norm(backend_, config_, weights_, s, act_.stacks[s - 1].residual.back(), S.mem, S.mem_rstd);
  stack_pass(stack_pass_of(s), S.residual, &S.mem,
             [&](int64_t l) -> LayerActivations& { return layer_activations(s, l); });
}

StackPass Model::stack_pass_of(int64_t s) const {
  return StackPass{backend_, config_, weights_, StackGroup{s, 1}, PassCaches{}};
}

void Model::layer_forward(int64_t s, int64_t l, Tensor& x_out) {
  StackActivations& S = act_.stacks[s];
  layer_pass(stack_pass_of(s), l, S.residual[l], &S.mem, layer_activations(s, l), x_out);
}

double Model::forward(const Tensor& tokens, const Tensor& targets, const ForwardHooks* hooks) {
  forward_async(tokens, targets, hooks);
  return loss();
}

double Model::loss() {
  if (!have_targets_ || counted_targets_ == 0) return 0.0;
  return backend_.dot(act_.losses, act_.ones) / static_cast<double>(counted_targets_);
}

// Each counted target's weight in scale * mean loss (the losses of ignored targets are 0).
double Model::loss_weight(double scale, const char* op) const {
  SF_CHECK(have_targets_, "{}: the last forward had no targets", op);
  return counted_targets_ > 0 ? scale / static_cast<double>(counted_targets_) : 0.0;
}

void Model::write_loss_into(Tensor& total, double scale) {
  backend_.dot_into(total, loss_weight(scale, "write_loss_into"), act_.losses, act_.ones);
}

void Model::add_loss_into(Tensor& total, double scale) {
  backend_.dot_add(total, loss_weight(scale, "add_loss_into"), act_.losses, act_.ones);
}

void Model::forward_async(const Tensor& tokens, const Tensor& targets, const ForwardHooks* hooks) {
  prepare_forward(tokens, targets);
  run_forward(hooks);
}

void Model::prepare_forward(const Tensor& tokens, const Tensor& targets) {
  check_tokens(tokens, "tokens", 0);
  const int64_t B = tokens.dim(0), T = tokens.dim(1);
  SF_CHECK(B > 0 && T > 0, "forward: empty batch {}", tokens.describe());
  SF_CHECK(T <= config_.max_seq_len, "forward: sequence of {} tokens exceeds max_seq_len {}", T,
           config_.max_seq_len);
  have_targets_ = targets.defined();
  if (have_targets_) {
    check_tokens(targets, "targets", -1);  // -1 marks an ignored position
    SF_CHECK(targets.shape() == tokens.shape(), "forward: targets {} vs tokens {}",
             targets.describe(), tokens.describe());
  }
  plan(B, T);
  // Mixed precision: skip the conversion pass over all masters when the optimizer's step has
  // just written the working copies itself (and nothing has written a master since); the flag
  // is consumed here, so every later forward converts as before (parameters.h).
  if (!params_.consume_working_current()) sync_compute_weights();
  backend_.copy(act_.tokens, tokens);
  counted_targets_ = 0;
  if (!have_targets_) return;
  backend_.copy(act_.targets, targets);
  // Counted here, from the host's copy: reading a device count back would make the host wait.
  for (int64_t i = 0; i < targets.numel(); ++i) counted_targets_ += targets.data<int32_t>()[i] >= 0;
}

void Model::run_forward(const ForwardHooks* hooks) {
  Backend& be = backend_;
  const int64_t N = act_.batch * act_.seq;
  be.embedding_forward(act_.embedded, act_.tokens.view({N}), weights_.tok_embeddings.value);
  for (int64_t s = 0; s < config_.n_stacks; ++s) {
    stack_forward(s);
    if (hooks && hooks->after_stack) hooks->after_stack(s, act_.stacks[s].residual.back());
  }
  std::vector<const Tensor*> outputs;
  for (const StackActivations& S : act_.stacks) outputs.push_back(&S.residual.back());
  Tensor logits2d = act_.logits.view({N, config_.vocab_size});
  output_head_forward(be, config_, weights_, outputs, combine_alpha(), act_.combined,
                      act_.final_norm_out, act_.final_rstd, logits2d);
  if (!have_targets_) return;
  // The gradient of the logits comes with the loss (softmax - onehot, unscaled; backward()
  // scales it inside the LM head's products): one pass over the [B*T, V] logits, not two.
  be.cross_entropy_forward_backward(act_.losses, act_.d_logits, logits2d, act_.targets.view({N}));
}

void Model::forward_backward_async(const Tensor& tokens, const Tensor& targets, double loss_scale,
                                   GradientStart start) {
  SF_CHECK(targets.defined(), "forward_backward_async: a training micro-batch needs targets");
  prepare_forward(tokens, targets);
  auto run_directly = [&] {
    run_forward(nullptr);
    backward(loss_scale, start);
  };
  const bool recordable = step_recording_ && backend_.can_record() &&
                          config_.combine != CombineMode::linear;
  // A kind of micro-batch is recorded only once it ran directly on these buffers with the
  // backward's gradient writes already known (GradientWrites): an overwriting pass after the
  // first backward runs other products (beta = 0) than the first one did, and a product's plan
  // is tuned by timing it, which cannot happen inside a recording.
  bool& warm = start == GradientStart::overwrite ? act_.warm_overwrite : act_.warm_accumulate;
  if (!recordable || !warm) {
    const bool settled = grad_writes_.observed();
    run_directly();
    warm = settled;
    return;
  }
  for (const StepRecording& r : recordings_)
    if (r.loss_scale == loss_scale && r.counted_targets == counted_targets_ && r.start == start) {
      if (backend_.replay(r.id)) {
        ++replayed_steps_;
        return;
      }
      drop_recordings();  // the backend replaced a buffer they use: record again
      break;
    }
  const int id = record_or_run(backend_, "training step", run_directly);
  if (id < 0) {  // it ran directly, and will from now on
    step_recording_ = false;
    return;
  }
  recordings_.push_back({loss_scale, counted_targets_, start, id});
  SF_CHECK(backend_.replay(id), "forward_backward_async: a fresh recording cannot be replayed");
  ++replayed_steps_;
}

void Model::stack_backward(int64_t s) {
  Backend& be = backend_;
  StackActivations& S = act_.stacks[s];
  const StackWeights& W = weights_.stacks[s];
  Tensor& dx = act_.d_stack_output[s];  // holds d a^(s); becomes d residual[l] going down
  for (int64_t l = config_.layers_per_stack - 1; l >= 0; --l) {
    const LayerWeights& LW = W.layers[l];
    // Recomputation: this layer's activations again, from its kept input (the output goes to a
    // scratch tensor: residual[l + 1] may be another stack's memory source and stays untouched).
    if (recompute_) layer_forward(s, l, act_.recompute_out);
    LayerActivations& L = layer_activations(s, l);
    const Tensor& mlp_in = s >= 1 ? L.x_after_cross : L.x_after_attn;
    mlp_block_backward(be, config_, LW, mlp_in, L.mlp, dx, act_.scratch, grad_writes_);
    if (s >= 1)
      attention_block_backward(be, config_, cross_attention_weights(LW), cross_spec(), L.x_after_attn,
                               &S.mem, L.cross, dx, &act_.d_mem[s], act_.scratch, grad_writes_);
    attention_block_backward(be, config_, self_attention_weights(LW), self_spec(), S.residual[l], nullptr,
                             L.self, dx, nullptr, act_.scratch, grad_writes_);
  }
  be.axpy(act_.d_embedded, 1.0, dx);  // this stack's share of d E[tokens]
  if (s >= 1) {
    // Memory gradient flows into the previous stack's output through this stack's mem norm.
    Tensor dmem_w = W.mem_norm.grad;
    grad_writes_.addition(dmem_w);
    be.rmsnorm_backward(act_.d_stack_output[s - 1], dmem_w, act_.d_mem[s],
                        act_.stacks[s - 1].residual.back(), W.mem_norm.value, S.mem_rstd);
  }
}

void Model::backward(double loss_scale, GradientStart start) {
  SF_CHECK(act_.batch > 0 && have_targets_, "backward() needs a forward() with targets first");
  Backend& be = backend_;
  const std::vector<Tensor> to_zero = grad_writes_.begin(params_.gradients(), start);
  if (!to_zero.empty()) be.fill_many(to_zero, 0.0);
  const int64_t N = act_.batch * act_.seq;
  const double scale = counted_targets_ > 0 ? loss_scale / static_cast<double>(counted_targets_) : 0.0;

  // LM head and final norm; act_.d_logits holds softmax - onehot from forward(), and
  // d loss / d logits = scale * that.
  Tensor d_head = weights_.lm_head.grad;
  be.matmul(d_head, act_.d_logits, true, act_.final_norm_out, false, scale,
            grad_writes_.product_beta(d_head));
  be.matmul(act_.d_final_norm_out, act_.d_logits, false, weights_.lm_head.value, false, scale, 0.0);
  be.fill(act_.d_combined, 0.0);
  Tensor d_final_w = weights_.final_norm.grad;
  grad_writes_.addition(d_final_w);
  be.rmsnorm_backward(act_.d_combined, d_final_w, act_.d_final_norm_out, act_.combined,
                      weights_.final_norm.value, act_.final_rstd);

  // Combination -> gradients of the stack outputs (and of alpha).
  for (int64_t s = 0; s < config_.n_stacks; ++s) be.fill(act_.d_stack_output[s], 0.0);
  if (config_.combine == CombineMode::linear) {
    const auto alpha = combine_alpha();
    Tensor d_alpha_host = Tensor::zeros({config_.n_stacks}, dtype_);
    grad_writes_.addition(weights_.combine_alpha.grad);
    backend_.copy(d_alpha_host, weights_.combine_alpha.grad);
    for (int64_t s = 0; s < config_.n_stacks; ++s) {
      be.axpy(act_.d_stack_output[s], alpha[s], act_.d_combined);
      const double g = be.dot(act_.d_combined, act_.stacks[s].residual.back());
      if (dtype_ == DType::f64) d_alpha_host.data<double>()[s] += g;
      else d_alpha_host.data<float>()[s] += static_cast<float>(g);
    }
    Tensor d_alpha = weights_.combine_alpha.grad;
    backend_.copy(d_alpha, d_alpha_host);
  } else {
    be.copy(act_.d_stack_output.back(), act_.d_combined);
  }

  // Stacks in reverse: stack s's backward adds to d a^(s-1) through the memory, so stack s-1
  // has its full output gradient by the time it runs.
  be.fill(act_.d_embedded, 0.0);
  for (int64_t s = 1; s < config_.n_stacks; ++s) be.fill(act_.d_mem[s], 0.0);
  for (int64_t s = config_.n_stacks - 1; s >= 0; --s) stack_backward(s);
  Tensor d_embed = weights_.tok_embeddings.grad;
  grad_writes_.addition(d_embed);
  be.embedding_backward(d_embed, act_.d_embedded, act_.tokens.view({N}));
  grad_writes_.finish();
}

const Tensor& Model::logits() const {
  SF_CHECK(act_.batch > 0, "logits() before any forward()");
  return act_.logits;
}

const AttentionActivations& Model::self_attention(int64_t s, int64_t l) const {
  (void)stack_output(s);  // checks that a forward ran and s is in range
  SF_CHECK(!recompute_, "per-layer attention activations are not kept with activation "
                        "recomputation on (set_activation_recomputation(false) first)");
  SF_CHECK(l >= 0 && l < config_.layers_per_stack, "layer {} out of range", l);
  return act_.stacks[s].layers[l].self;
}

const AttentionActivations& Model::cross_attention(int64_t s, int64_t l) const {
  SF_CHECK(s >= 1, "stack {} has no cross-attention", s);
  (void)self_attention(s, l);
  return act_.stacks[s].layers[l].cross;
}

const Tensor& Model::stack_output(int64_t s) const {
  SF_CHECK(act_.batch > 0, "stack_output() before any forward()");
  SF_CHECK(s >= 0 && s < config_.n_stacks, "stack_output({}): model has {} stacks", s,
           config_.n_stacks);
  return act_.stacks[s].residual.back();
}

}  // namespace sf
