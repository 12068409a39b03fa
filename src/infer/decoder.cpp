// decoder.cpp — prefill, decode steps and the staggered / sequential / recurrent schedules.
#include "infer/decoder.h"

#include <omp.h>

#include <algorithm>
#include <cstring>

namespace sf {

namespace {

int32_t* i32(Tensor& t) { return t.data<int32_t>(); }

}  // namespace

DecodeMode decode_mode_from_string(const std::string& name) {
  if (name == "staggered") return DecodeMode::staggered;
  if (name == "sequential") return DecodeMode::sequential;
  if (name == "recurrent") return DecodeMode::recurrent;
  fail(fmt::format("unknown decode mode '{}' (expected staggered, sequential or recurrent)", name));
}

std::string to_string(DecodeMode mode) {
  switch (mode) {
    case DecodeMode::staggered: return "staggered";
    case DecodeMode::sequential: return "sequential";
    case DecodeMode::recurrent: return "recurrent";
  }
  return "?";
}

Decoder::Decoder(Model& model, int64_t batch, DecodeMode mode, int threads)
    : model_(model), backend_(model.backend()), config_(model.config()), batch_(batch), mode_(mode),
      threads_(threads > 0 ? threads : omp_get_max_threads()) {
  const ModelConfig& c = config_;
  SF_CHECK(batch >= 1, "decoder batch must be >= 1, got {}", batch);
  SF_CHECK(model.dtype() == DType::f32 || model.dtype() == DType::f64,
           "decoder: unsupported model dtype {}", dtype_name(model.dtype()));
  // The decoder writes its per-step index tensors (positions, slots, key ranges) in place on
  // the host; GPU decoding needs them staged and is not built yet.
  SF_CHECK(model.backend().device() == Device::cpu,
           "incremental decoding runs on the CPU backend only (GPU decoding is not implemented "
           "yet); use --device cpu for generate and bench");
  if (mode == DecodeMode::recurrent) {
    SF_CHECK(c.n_stacks >= 2 && c.weights == WeightSharing::shared,
             "recurrent decoding needs a shared-weights model with n_stacks >= 2 (this one: "
             "n_stacks {}, weights {})",
             c.n_stacks, to_string(c.weights));
    SF_CHECK(c.combine == CombineMode::last,
             "recurrent decoding runs one pass per step, so it needs combine = last (the linear "
             "combination needs every stack's output)");
  }
  Backend& be = backend_;
  ActivationAllocator alloc(be);  // the MLP work buffers (block.h)
  const DType dt = model.dtype();
  const int64_t B = batch, D = c.d_model, hd = c.head_dim();
  const int64_t self_capacity = c.max_seq_len;
  const int64_t cross_capacity = c.cross_window > 0 ? std::min(c.cross_window, c.max_seq_len) : c.max_seq_len;
  length_.assign(B, 0);
  alpha_ = model.combine_alpha();  // fixed while decoding: read once, not every step
  tokens_ = be.zeros({B}, DType::i32);
  positions_ = be.zeros({B}, DType::i32);
  self_slots_ = be.zeros({B}, DType::i32);
  cross_slots_ = be.zeros({B}, DType::i32);
  self_begin_ = be.zeros({B}, DType::i32);
  self_end_ = be.zeros({B}, DType::i32);
  cross_begin_ = be.zeros({B}, DType::i32);
  cross_end_ = be.zeros({B}, DType::i32);
  embedded_ = be.zeros({B, D}, dt);
  combined_ = be.zeros({B, D}, dt);
  final_norm_out_ = be.zeros({B, D}, dt);
  final_rstd_ = be.zeros({B}, dt);
  logits_ = be.zeros({B, c.vocab_size}, dt);
  logits_host_ = Tensor::zeros({B, c.vocab_size}, dt);
  // Per-stack state. Self-attention caches and the residual buffers of all stacks are rows of
  // one [p*B, ...] tensor per layer, each stack holding its row block as a view: the batched
  // shared-weights pass works on all of them at once, the per-stack paths on their views.
  const int64_t p = c.n_stacks, PB = p * B;
  std::vector<Tensor> self_k_all, self_v_all;
  for (int64_t l = 0; l < c.layers_per_stack; ++l) {
    self_k_all.push_back(be.zeros({PB, self_capacity, c.n_kv_heads, hd}, dt));
    self_v_all.push_back(be.zeros({PB, self_capacity, c.n_kv_heads, hd}, dt));
  }
  all_.x_a = be.zeros({PB, D}, dt);
  all_.x_b = be.zeros({PB, D}, dt);
  all_.x_c = be.zeros({PB, D}, dt);
  all_.output = be.zeros({PB, D}, dt);
  stacks_.resize(p);
  for (int64_t s = 0; s < p; ++s) {
    StackState& S = stacks_[s];
    for (int64_t l = 0; l < c.layers_per_stack; ++l) {
      S.self.push_back({self_k_all[l].slice(0, s * B, B), self_v_all[l].slice(0, s * B, B),
                        self_begin_, self_end_});
      if (s >= 1)
        S.cross.push_back({be.zeros({B, cross_capacity, c.n_kv_heads, hd}, dt),
                           be.zeros({B, cross_capacity, c.n_kv_heads, hd}, dt), cross_begin_,
                           cross_end_});
    }
    S.x_a = all_.x_a.slice(0, s * B, B);
    S.x_b = all_.x_b.slice(0, s * B, B);
    S.x_c = all_.x_c.slice(0, s * B, B);
    S.output = all_.output.slice(0, s * B, B);
    S.mem = be.zeros({B, D}, dt);
    S.mem_rstd = be.zeros({B}, dt);
    S.scratch = decode_scratch_allocate(be, c, dt, B);
    S.mlp = mlp_activations_allocate(alloc, c, dt, B);
  }
  const bool staggered = mode == DecodeMode::staggered && p > 1;
  if (staggered && c.weights == WeightSharing::shared) {
    // Shared weights on one device (spec §5): the p passes of a step are ONE pass of p*B rows
    // through the shared blocks, so each weight is read once per step, not p times.
    batched_shared_ = true;
    for (int64_t l = 0; l < c.layers_per_stack; ++l)
      all_.self.push_back({self_k_all[l], self_v_all[l], be.zeros({PB}, DType::i32),
                           be.zeros({PB}, DType::i32)});
    all_positions_ = be.zeros({PB}, DType::i32);
    all_slots_ = be.zeros({PB}, DType::i32);
    all_.scratch = decode_scratch_allocate(be, c, dt, PB);
    all_.mlp = mlp_activations_allocate(alloc, c, dt, PB);
  } else if (staggered) {
    const int per_stack = std::max<int>(1, threads_ / static_cast<int>(p));
    workers_ = std::make_unique<StackWorkers>(p, per_stack);
  }
}

Decoder::~Decoder() = default;

void Decoder::prefill(int64_t b, std::span<const int32_t> prompt) {
  SF_CHECK(b >= 0 && b < batch_, "prefill: sequence {} outside the batch of {}", b, batch_);
  const int64_t n = static_cast<int64_t>(prompt.size());
  SF_CHECK(n >= 1, "prefill: empty prompt");
  SF_CHECK(n <= config_.max_seq_len, "the prompt has {} tokens but the model's context is {}", n,
           config_.max_seq_len);
  Tensor tokens = Tensor::zeros({1, n}, DType::i32);
  std::copy(prompt.begin(), prompt.end(), tokens.data<int32_t>());
  omp_set_num_threads(threads_);
  model_.forward(tokens);  // validates ids; the training forward, stack by stack
  copy_prefill_caches(b, n);
  length_[b] = n;
  // Logits of the last prompt position -> row b.
  const Tensor& all = model_.logits();  // [1, n, V]
  Tensor row = logits_host_.slice(0, b, 1);
  backend_.copy(row, all.view({n, config_.vocab_size}).slice(0, n - 1, 1));
}

void Decoder::copy_prefill_caches(int64_t b, int64_t n) {
  // Keys were rotated at their positions by the forward; copy position j into slot j % C.
  auto copy_positions = [&](Tensor& cache, const Tensor& source, int64_t first) {
    const int64_t C = cache.dim(1);
    Tensor dst_seq = cache.select(b);        // [C, Hkv, hd]
    Tensor src_seq = source.select(0);       // [n, Hkv, hd]
    for (int64_t j = first; j < n; ++j) {
      Tensor dst = dst_seq.slice(0, j % C, 1);
      backend_.copy(dst, src_seq.slice(0, j, 1));
    }
  };
  for (int64_t s = 0; s < config_.n_stacks; ++s) {
    for (int64_t l = 0; l < config_.layers_per_stack; ++l) {
      const AttentionActivations& self = model_.self_attention(s, l);
      copy_positions(stacks_[s].self[l].k, self.k, 0);
      copy_positions(stacks_[s].self[l].v, self.v, 0);
      if (s >= 1) {
        const AttentionActivations& cross = model_.cross_attention(s, l);
        const int64_t first = std::max<int64_t>(0, n - stacks_[s].cross[l].k.dim(1));
        copy_positions(stacks_[s].cross[l].k, cross.k, first);
        copy_positions(stacks_[s].cross[l].v, cross.v, first);
      }
    }
  }
}

void Decoder::set_positions() {
  const int64_t self_capacity = stacks_[0].self[0].k.dim(1);
  const int64_t cross_capacity = config_.n_stacks > 1 ? stacks_[1].cross[0].k.dim(1) : 1;
  const int64_t w = config_.cross_window;
  for (int64_t b = 0; b < batch_; ++b) {
    const int64_t pos = length_[b];
    i32(positions_)[b] = static_cast<int32_t>(pos);
    i32(self_slots_)[b] = static_cast<int32_t>(pos % self_capacity);
    i32(cross_slots_)[b] = static_cast<int32_t>(pos % cross_capacity);
    i32(self_begin_)[b] = 0;
    i32(self_end_)[b] = static_cast<int32_t>(pos + 1);  // causal: up to and including i
    // The staggering: memory positions i-w .. i-1 (all j < i when w = 0).
    i32(cross_begin_)[b] = static_cast<int32_t>(w > 0 ? std::max<int64_t>(0, pos - w) : 0);
    i32(cross_end_)[b] = static_cast<int32_t>(pos);
  }
}

void Decoder::run_stack(int64_t s) {
  Backend& be = backend_;
  StackState& S = stacks_[s];
  const StackWeights& W = model_.weights().stacks[s];
  // Every stack starts from the token embeddings (spec §3); three buffers rotate so that each
  // sub-block reads one and writes another.
  be.copy(S.x_a, embedded_);
  for (int64_t l = 0; l < config_.layers_per_stack; ++l) {
    const LayerWeights& LW = W.layers[l];
    attention_block_decode(be, config_, self_attention_weights(LW), model_.self_spec(), S.x_a, positions_,
                           &self_slots_, S.self[l], S.x_b, S.scratch);
    Tensor* mlp_in = &S.x_b;
    if (s >= 1) {
      attention_block_decode(be, config_, cross_attention_weights(LW), model_.cross_spec(), S.x_b,
                             positions_, nullptr, S.cross[l], S.x_c, S.scratch);
      mlp_in = &S.x_c;
    }
    Tensor& out = l + 1 == config_.layers_per_stack ? S.output : S.x_a;
    mlp_block_forward(be, config_, LW, *mlp_in, out, S.mlp);
  }
}

void Decoder::run_stacks_batched() {
  // All p stacks' rows in one pass through the shared blocks. Row block s of every [p*B, ...]
  // tensor is stack s; cross-attention (separate weights per stack) runs per row block.
  Backend& be = backend_;
  const int64_t B = batch_, p = config_.n_stacks;
  for (int64_t s = 0; s < p; ++s) {
    be.copy(stacks_[s].x_a, embedded_);
    for (int64_t b = 0; b < B; ++b) {
      i32(all_positions_)[s * B + b] = i32(positions_)[b];
      i32(all_slots_)[s * B + b] = i32(self_slots_)[b];
    }
  }
  for (int64_t l = 0; l < config_.layers_per_stack; ++l) {
    DecodeCache& self = all_.self[l];
    for (int64_t s = 0; s < p; ++s)
      for (int64_t b = 0; b < B; ++b) {
        i32(self.key_begin)[s * B + b] = i32(self_begin_)[b];
        i32(self.key_end)[s * B + b] = i32(self_end_)[b];
      }
    const LayerWeights& shared = model_.weights().stacks[0].layers[l];
    attention_block_decode(be, config_, self_attention_weights(shared), model_.self_spec(), all_.x_a,
                           all_positions_, &all_slots_, self, all_.x_b, all_.scratch);
    be.copy(stacks_[0].x_c, stacks_[0].x_b);  // stack 0 has no cross-attention
    for (int64_t s = 1; s < p; ++s)
      attention_block_decode(be, config_, cross_attention_weights(model_.weights().stacks[s].layers[l]),
                             model_.cross_spec(), stacks_[s].x_b, positions_, nullptr,
                             stacks_[s].cross[l], stacks_[s].x_c, stacks_[s].scratch);
    Tensor& out = l + 1 == config_.layers_per_stack ? all_.output : all_.x_a;
    mlp_block_forward(be, config_, shared, all_.x_c, out, all_.mlp);
  }
}

void Decoder::take_handoff(int64_t s) {
  // Stack s's memory at position i: its own RMSNorm of the source stack's output at i. In the
  // staggered schedules the source is stack s-1; in recurrent decoding the last stack feeds
  // itself.
  Backend& be = backend_;
  StackState& S = stacks_[s];
  const int64_t source = mode_ == DecodeMode::recurrent ? s : s - 1;
  const StackWeights& W = model_.weights().stacks[s];
  be.rmsnorm_forward(S.mem, S.mem_rstd, stacks_[source].output, W.mem_norm.value, config_.norm_eps);
  for (int64_t l = 0; l < config_.layers_per_stack; ++l)
    cross_cache_append(be, config_, cross_attention_weights(W.layers[l]), model_.cross_spec(), S.mem,
                       positions_, cross_slots_, S.cross[l], S.scratch);
}

void Decoder::compute_logits() {
  std::vector<const Tensor*> outputs;
  for (const StackState& S : stacks_) outputs.push_back(&S.output);
  output_head_forward(backend_, config_, model_.weights(), outputs, alpha_, combined_,
                      final_norm_out_, final_rstd_, logits_);
  backend_.copy(logits_host_, logits_);
}

void Decoder::step(std::span<const int32_t> tokens) {
  SF_CHECK(static_cast<int64_t>(tokens.size()) == batch_, "step: {} tokens for a batch of {}",
           tokens.size(), batch_);
  for (int64_t b = 0; b < batch_; ++b) {
    SF_CHECK(length_[b] >= 1, "step: sequence {} has not been prefilled", b);
    SF_CHECK(length_[b] < config_.max_seq_len,
             "step: sequence {} is full (its context of {} positions is used up)", b,
             config_.max_seq_len);
    SF_CHECK(tokens[b] >= 0 && tokens[b] < config_.vocab_size,
             "step: token id {} of sequence {} is outside the vocabulary [0, {})", tokens[b], b,
             config_.vocab_size);
    i32(tokens_)[b] = tokens[b];
  }
  set_positions();
  backend_.embedding_forward(embedded_, tokens_, model_.weights().tok_embeddings.value);
  const int64_t p = config_.n_stacks;
  omp_set_num_threads(threads_);
  if (mode_ == DecodeMode::recurrent) {
    run_stack(p - 1);
    take_handoff(p - 1);
  } else if (batched_shared_) {
    run_stacks_batched();
    for (int64_t s = 1; s < p; ++s) take_handoff(s);
  } else if (workers_) {
    // Staggered: phase A, all stacks on token i at once; phase B, at once again, the hand-offs
    // (stacks >= 1) and the logits (on stack 0's thread group, which takes no hand-off). The
    // calling thread runs no OpenMP region during the step: its idle team would otherwise spin
    // on the cores the stacks' teams are using.
    workers_->run([this](int64_t s) { run_stack(s); });
    workers_->run([this](int64_t s) {
      if (s == 0) compute_logits();
      else take_handoff(s);
    });
  } else {
    for (int64_t s = 0; s < p; ++s) run_stack(s);
    for (int64_t s = 1; s < p; ++s) take_handoff(s);
  }
  if (!workers_) compute_logits();
  for (int64_t b = 0; b < batch_; ++b) ++length_[b];
}

}  // namespace sf
