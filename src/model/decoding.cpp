// decoding.cpp — DecodingState: buffers, the prefill (stack by stack over a prompt) and the
// decode step (hand-off, embeddings, the plan's groups, the output head).
#include "model/decoding.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "model/recording.h"

namespace sf {

namespace {

void check_plan(const StepPlan& plan, const ModelConfig& c) {
  SF_CHECK(!plan.groups.empty(), "decode plan: no stack groups");
  const int64_t first = plan.recurrent ? c.n_stacks - 1 : 0;
  int64_t next = first;
  for (const StackGroup& g : plan.groups) {
    SF_CHECK(g.first == next && g.count >= 1 && g.count == plan.groups.front().count,
             "decode plan: groups must cover stacks {}..{} in order, in equal sizes", first,
             c.n_stacks - 1);
    next = g.first + g.count;
  }
  SF_CHECK(next == c.n_stacks, "decode plan: groups must cover stacks {}..{}", first, c.n_stacks - 1);
  if (plan.recurrent)
    if (const std::string why = recurrent_unsupported(c); !why.empty()) fail("recurrent decoding " + why);
}

// The positions a DecodingState holds per sequence: `asked`, or the model's context for 0.
int64_t context_of(const ModelConfig& c, int64_t asked) {
  SF_CHECK(asked >= 0 && asked <= c.max_seq_len,
           "decoding context {} is outside [1, {}] (the model's max_seq_len; 0 takes it)", asked,
           c.max_seq_len);
  return asked == 0 ? c.max_seq_len : asked;
}

// The structure whose buffers every prefill reuses: a stack with cross-attention when the model
// has one, so that the views serve every stack.
StackGroup prefill_group(const ModelConfig& c) { return StackGroup{c.n_stacks > 1 ? 1 : 0, 1}; }

}  // namespace

std::string recurrent_unsupported(const ModelConfig& c) {
  if (c.n_stacks >= 2 && c.weights == WeightSharing::shared && c.combine == CombineMode::last)
    return "";
  return fmt::format("needs a model with shared weights, n_stacks >= 2 and combine = last (it "
                     "runs one pass of the shared blocks per step); this model has weights {}, "
                     "n_stacks {}, combine {}",
                     to_string(c.weights), c.n_stacks, to_string(c.combine));
}

// Views of the prefill's activations for a prompt of n tokens (ActivationAllocator reuse).
struct DecodingState::PrefillViews {
  Tensor tokens, embedded, x, memory, memory_rstd;
  LayerActivations layer;
};

// The prefill's activations for a prompt of n tokens, from `alloc`: allocated once for the
// longest prompt, then views of those buffers for each prompt (the same requests in order).
DecodingState::PrefillViews DecodingState::prefill_plan(ActivationAllocator& alloc, int64_t n) const {
  PrefillViews v;
  const int64_t D = config_.d_model;
  v.embedded = alloc.zeros({n, D}, dtype_);
  v.x = alloc.zeros({n, D}, dtype_);
  v.memory = alloc.zeros({n, D}, dtype_);
  v.memory_rstd = alloc.zeros({n}, statistics_dtype(dtype_));
  v.layer = layer_activations_allocate(alloc, config_, dtype_, prefill_group(config_), 1, n, false);
  return v;
}

DecodingState::PrefillViews DecodingState::prefill_views(int64_t n) {
  ActivationAllocator alloc(prefill_buffers_);
  PrefillViews v = prefill_plan(alloc, n);
  v.tokens = prefill_tokens_.slice(0, 0, n);
  return v;
}

DecodingState::DecodingState(Model& model, int64_t batch, StepPlan plan, int64_t context)
    : model_(model),
      backend_(model.backend()),
      config_(model.config()),
      dtype_(model.compute_dtype()),
      batch_(batch),
      context_(context_of(model.config(), context)),
      plan_(std::move(plan)),
      cache_(model.backend(), model.config(), model.compute_dtype(), batch, context_),
      indices_(model.backend(), cache_) {
  const ModelConfig& c = config_;
  SF_CHECK(batch >= 1, "decoder batch must be >= 1, got {}", batch);
  check_plan(plan_, c);
  alpha_ = model.combine_alpha();
  if (const char* graphs = std::getenv("SF_DECODE_GRAPHS"); graphs && std::strcmp(graphs, "0") == 0)
    step_recording_ = false;
  const int64_t p = c.n_stacks, B = batch, D = c.d_model, T = context_;
  const DType stat = statistics_dtype(dtype_);
  try {
    ActivationAllocator alloc(backend_);
    x_ = alloc.zeros({p * B, D}, dtype_);
    memory_ = alloc.zeros({p * B, D}, dtype_);
    memory_rstd_ = alloc.zeros({p * B}, stat);
    combined_ = alloc.zeros({B, D}, dtype_);
    final_norm_out_ = alloc.zeros({B, D}, dtype_);
    final_rstd_ = alloc.zeros({B}, stat);
    logits_ = alloc.zeros({B, c.vocab_size}, dtype_);
    prefill_tokens_ = alloc.zeros({T}, DType::i32);
    // The prefill's activations, for the longest prompt; shorter ones take views of them.
    ActivationAllocator prefill(backend_);
    (void)prefill_plan(prefill, T);
    prefill_buffers_ = prefill.allocated();
    bytes_ = cache_.bytes() + alloc.bytes() + prefill.bytes();
    for (const StackGroup& g : plan_.groups) (void)step_activations(g);  // adds its bytes
  } catch (const std::bad_alloc&) {
    fail(fmt::format("decoding {} sequences of up to {} positions: not enough {} memory for the "
                     "activations",
                     B, T, device_name(backend_.device())));
  } catch (const Error& e) {
    fail(fmt::format("decoding {} sequences of up to {} positions: {} memory for the activations "
                     "is not available: {}",
                     B, T, device_name(backend_.device()), e.what()));
  }
}

LayerActivations& DecodingState::step_activations(const StackGroup& group) {
  const std::pair<int64_t, int64_t> shape{group.count, group.cross_count()};
  const std::tuple<int64_t, int64_t, int64_t> key{group.count, group.cross_count(), width()};
  if (auto it = step_activations_.find(key); it != step_activations_.end()) return it->second;
  auto buffers = step_buffers_.find(shape);
  if (buffers == step_buffers_.end()) {  // allocated for the whole batch, once per shape
    ActivationAllocator alloc(backend_);
    (void)layer_activations_allocate(alloc, config_, dtype_, group, batch_, 1, true);
    bytes_ += alloc.bytes();
    buffers = step_buffers_.emplace(shape, alloc.allocated()).first;
  }
  ActivationAllocator views(buffers->second);  // (the same requests, fewer rows: views)
  LayerActivations act = layer_activations_allocate(views, config_, dtype_, group, width(), 1, true);
  return step_activations_.emplace(key, std::move(act)).first->second;
}

void DecodingState::set_width(int64_t n) {
  SF_CHECK(n >= 1 && n <= batch_, "decoding: a step of {} sequences; the decoder holds {}", n, batch_);
  if (n == width()) return;
  // The rows of the sequences kept move from s * before + b to s * n + b. Through memory_ (a
  // step's scratch, rewritten by the next step before it is read), as the two layouts overlap.
  const int64_t before = width(), kept = std::min(n, before);
  for (int64_t s = 0; s < config_.n_stacks; ++s) {
    Tensor scratch = memory_.slice(0, s * kept, kept);
    backend_.copy(scratch, x_.slice(0, s * before, kept));
  }
  for (int64_t s = 0; s < config_.n_stacks; ++s) {
    Tensor rows = x_.slice(0, s * n, kept);
    backend_.copy(rows, memory_.slice(0, s * kept, kept));
  }
  indices_.set_width(n);
}

void DecodingState::output_head(int64_t first_row, int64_t rows) {
  const int64_t B = width();
  std::vector<Tensor> outputs;  // each stack's output rows
  for (int64_t s = 0; s < config_.n_stacks; ++s) outputs.push_back(x_.slice(0, s * B + first_row, rows));
  std::vector<const Tensor*> pointers;
  for (const Tensor& t : outputs) pointers.push_back(&t);
  Tensor combined = combined_.slice(0, first_row, rows), norm = final_norm_out_.slice(0, first_row, rows),
         rstd = final_rstd_.slice(0, first_row, rows), logits = logits_.slice(0, first_row, rows);
  output_head_forward(backend_, config_, model_.weights(), pointers, alpha_, combined, norm, rstd,
                      logits, true);
}

void DecodingState::prefill(int64_t b, const Tensor& prompt) {
  const ModelConfig& c = config_;
  SF_CHECK(b >= 0 && b < width(), "prefill: sequence {} outside the step's {} sequences (of {})", b,
           width(), batch_);
  SF_CHECK(prompt.device() == Device::cpu && prompt.dtype() == DType::i32 && prompt.ndim() == 1,
           "prefill: expected a CPU I32 [n] tensor of token ids, got {}", prompt.describe());
  const int64_t n = prompt.numel();
  SF_CHECK(n >= 1 && n <= context_, "prefill: {} tokens for a context of {}", n, context_);
  PrefillViews v = prefill_views(n);
  backend_.copy(v.tokens, prompt);
  const ModelWeights& w = model_.weights();
  backend_.embedding_forward(v.embedded, v.tokens, w.tok_embeddings.value);
  // Every stack starts from the token embeddings (spec §3); x runs in place after layer 0.
  std::vector<Tensor> residual(static_cast<size_t>(c.layers_per_stack + 1), v.x);
  residual[0] = v.embedded;
  for (int64_t s = 0; s < c.n_stacks; ++s) {
    if (s >= 1) memory_norm(backend_, c, w, s, v.x, v.memory, v.memory_rstd);
    const StackPass pass{backend_, c, w, StackGroup{s, 1}, PassCaches{&cache_, b, nullptr}};
    stack_pass(pass, residual, &v.memory, [&](int64_t) -> LayerActivations& { return v.layer; });
    // The last position's output: the next step's memory source, and the head's input.
    Tensor row = x_.slice(0, s * width() + b, 1);
    backend_.copy(row, v.x.slice(0, n - 1, 1));
  }
  output_head(b, 1);
}

DecodingState::~DecodingState() {
  for (const auto& [width, recording] : recordings_) backend_.release_recording(recording);
}

void DecodingState::set_step_recording(bool on) {
  step_recording_ = on;
  if (!on) {
    for (const auto& [width, recording] : recordings_) backend_.release_recording(recording);
    recordings_.clear();
  }
}

void DecodingState::step() {
  int64_t& direct = direct_steps_[width()];
  if (!step_recording_ || !backend_.can_record() || direct == 0) {
    run_step();
    ++direct;
    return;
  }
  if (auto it = recordings_.find(width()); it != recordings_.end()) {
    if (backend_.replay(it->second)) {
      ++replayed_steps_;
      return;
    }
    backend_.release_recording(it->second);  // the backend replaced a buffer it uses
    recordings_.erase(it);
  }
  const int recording = record_or_run(backend_, "decode step", [&] { run_step(); });
  if (recording < 0) {  // it ran directly, and will from now on
    set_step_recording(false);
    ++direct;
    return;
  }
  recordings_[width()] = recording;
  SF_CHECK(backend_.replay(recording), "decode step: a fresh recording cannot be replayed");
  ++replayed_steps_;
}

void DecodingState::run_step() {
  const ModelConfig& c = config_;
  const ModelWeights& w = model_.weights();
  const int64_t B = width(), p = c.n_stacks;
  const int64_t first = plan_.groups.front().first, running = p - first;
  // The hand-off: each running stack s >= 1 normalises its memory source's output at i - 1
  // before any stack overwrites its rows.
  for (int64_t s = std::max<int64_t>(first, 1); s < p; ++s) {
    Tensor memory = memory_.slice(0, s * B, B), rstd = memory_rstd_.slice(0, s * B, B);
    memory_norm(backend_, c, w, s, x_.slice(0, (s - 1) * B, B), memory, rstd);
  }
  // Every running stack starts from the token embeddings: one lookup for all their rows.
  Tensor x_running = x_.slice(0, first * B, running * B);
  backend_.embedding_forward(x_running, indices_.rows(StepIndices::token, first, running),
                             w.tok_embeddings.value);
  for (const StackGroup& g : plan_.groups) {
    const StackPass pass{backend_, c, w, g, PassCaches{&cache_, 0, &indices_}};
    const Tensor x = x_.slice(0, g.first * B, g.count * B);
    const Tensor memory = g.cross_count() > 0 ? memory_.slice(0, g.cross_first() * B, g.cross_count() * B)
                                              : Tensor();
    LayerActivations& act = step_activations(g);
    stack_pass(pass, std::vector<Tensor>(static_cast<size_t>(c.layers_per_stack + 1), x),
               memory.defined() ? &memory : nullptr, [&](int64_t) -> LayerActivations& { return act; });
  }
  if (plan_.recurrent) {
    // The last stack's output at i is the memory source of position i (spec §5).
    Tensor source = x_.slice(0, (p - 2) * B, B);
    backend_.copy(source, x_.slice(0, (p - 1) * B, B));
  }
  output_head(0, B);
}

}  // namespace sf
