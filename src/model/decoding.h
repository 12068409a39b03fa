// decoding.h — the model's incremental forward (spec §5): a prefill per sequence and a decode
// step for all sequences, over a DecodingState that holds everything they write on the device
// (the KvCache, the step's StepIndices, the residual rows of every stack, the memory rows, the
// activations, the logits). Both run the layers through model/stack_pass.h, the one wiring of a
// stack shared with training; nothing here depends on the backend.
//
// The hand-off between stacks (spec §5): the decode step for position i of stack s >= 1 reads
// memory positions < i only. At the start of the step, stack s normalises its memory source's
// output at i - 1 (stack s-1's, kept in the residual rows from the previous step or the
// prefill) with its own memory norm; each of its layers then appends that row's cross key and
// value at position i - 1 to its cache before attending to i - w .. i - 1. So a step reads only
// what earlier steps produced, every stack of it can run at the same time, and a prefill of n
// tokens writes the cross caches up to position n - 2 (position n - 1 is appended by the first
// step). Recurrent decoding runs the last stack alone and makes its own output at i the memory
// source of position i (copied into stack p-2's rows, where the step reads the source).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "model/kv_cache.h"
#include "model/model.h"
#include "model/stack_pass.h"

namespace sf {

// How a decode step runs the stacks: the groups one after another, the stacks of a group
// together (one backend call per operation for all of them: their products in one
// Backend::linear_many, or one product over all their rows where they share a weight). The
// groups cover the stacks the step runs, in order, all of one size.
struct StepPlan {
  std::vector<StackGroup> groups;
  // Only the last stack runs; its output is also its own next memory (spec §5, recurrent
  // decoding: shared weights, combine = last).
  bool recurrent = false;
};

// Why `config` cannot decode recurrently ("needs ...; this model has ..."), or "" when it can.
std::string recurrent_unsupported(const ModelConfig& config);

class DecodingState {
 public:
  // State for `batch` sequences of up to `context` positions (0: the model's max_seq_len; at
  // most that), to be stepped by `plan`: the caches and the prefill's buffers are sized for
  // `context`, so a server that needs less than the model's context holds less memory. The
  // model's weights must not change while it is in use (combine.alpha is read once).
  // Errors: a context outside [1, max_seq_len], a plan that does not fit the model, memory that
  // is not available (naming the bytes).
  DecodingState(Model& model, int64_t batch, StepPlan plan, int64_t context = 0);
  ~DecodingState();
  DecodingState(const DecodingState&) = delete;
  DecodingState& operator=(const DecodingState&) = delete;

  int64_t batch() const { return batch_; }
  // Positions each sequence may hold (prompt and generated tokens).
  int64_t context() const { return context_; }
  const StepPlan& plan() const { return plan_; }
  const KvCache& cache() const { return cache_; }
  StepIndices& indices() { return indices_; }

  // Sequence b's prompt (CPU I32 [n], 1 <= n <= context(), ids already checked): runs it
  // through every stack like the training forward, without gradient buffers (activations
  // planned once for the longest prompt), filling b's caches with one bulk write per cache.
  // Afterwards logits() row b predicts the token after the prompt.
  void prefill(int64_t sequence, const Tensor& prompt);
  // One decode step of the first width() sequences, at the tokens and positions of indices()
  // (set for each of them and uploaded). Afterwards logits() row b < width() predicts sequence
  // b's next token.
  // Where the backend can record (CUDA graphs), the step's device work is recorded once per
  // width, at the second step of that width (the first runs directly: lazy allocations and
  // tuning happen outside a recording), and replayed from then on: the step reads its tokens
  // and positions from the uploaded indices, so one recording serves every step of its width.
  // The results are those of running it.
  void step();
  // The sequences a step runs: the first n (1 <= n <= batch(); batch() at first). A step's
  // cost grows with its rows, so a server whose requests use only its first slots steps only
  // those. Sequences kept (b < n and b < the width before) keep their state; those beyond n are
  // dropped (they must be prefilled again before they are stepped). Sets indices()'s width.
  void set_width(int64_t n);
  int64_t width() const { return indices_.width(); }
  // Recording on (the default, unless the environment sets SF_DECODE_GRAPHS=0) or off: every
  // step runs its operations directly (for comparisons).
  void set_step_recording(bool on);
  // Steps that replayed the recording (tests and diagnostics).
  int64_t replayed_steps() const { return replayed_steps_; }
  // [batch, vocab] on the backend, in the model's compute dtype.
  const Tensor& logits() const { return logits_; }
  // Device bytes of the state (caches, buffers, activations).
  int64_t bytes() const { return bytes_; }

 private:
  struct PrefillViews;
  PrefillViews prefill_plan(ActivationAllocator& alloc, int64_t n) const;
  PrefillViews prefill_views(int64_t n);
  void run_step();  // the step's device work
  LayerActivations& step_activations(const StackGroup& group);
  void output_head(int64_t first_row, int64_t rows);

  Model& model_;
  Backend& backend_;
  const ModelConfig& config_;
  DType dtype_;
  int64_t batch_;
  int64_t context_;  // before cache_: it sizes the caches
  StepPlan plan_;
  KvCache cache_;
  StepIndices indices_;
  std::vector<double> alpha_;  // combine.alpha (combine = linear), read once
  // Residual rows of every stack [p*B, D] (stack s, sequence b at row s*n + b for the width n,
  // which indices_ holds): a step's input and, after it, each stack's output (the next step's
  // memory source); memory rows [p*B, D] (the same layout).
  Tensor x_, memory_, memory_rstd_;
  // A step's activations per group shape (stacks, cross stacks): buffers for the whole batch,
  // and views of them per width.
  std::map<std::pair<int64_t, int64_t>, std::vector<Tensor>> step_buffers_;
  std::map<std::tuple<int64_t, int64_t, int64_t>, LayerActivations> step_activations_;
  Tensor combined_, final_norm_out_, final_rstd_, logits_;  // [B, ...]
  // Prefill: device token ids [context], and the activations for context positions that every
  // shorter prompt reuses (ActivationAllocator).
  Tensor prefill_tokens_;
  std::vector<Tensor> prefill_buffers_;
  int64_t bytes_ = 0;
  bool step_recording_ = true;
  std::map<int64_t, int64_t> direct_steps_;  // per width: steps run directly (the first warms up)
  std::map<int64_t, int> recordings_;         // per width: the backend's recording of a step
  int64_t replayed_steps_ = 0;
};

}  // namespace sf
