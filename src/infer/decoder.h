// decoder.h — incremental decoding of StagFormer models (spec §5): caches, prefill, decode
// steps, and the three schedules.
//
// State per sequence: a self-attention K/V cache per stack and layer (max_seq_len positions),
// and for stacks s >= 1 a cross-attention K/V cache per layer holding Wk·M_j and Wv·M_j of the
// memory positions produced so far (a ring of w slots when cross_window = w > 0, else
// max_seq_len slots). All caches are allocated once, for `batch` sequences, at construction.
//
// Schedules of one decode step (token x_i of every sequence, at its own position i):
//   staggered  — all p stacks process x_i AT THE SAME TIME, stack s on its own thread group
//                (StackWorkers); with shared weights, as ONE pass of p*B rows through the
//                shared blocks (each weight read once per step; cross-attention per stack). Stack s's cross-attention reads memory positions < i only,
//                which earlier steps produced. Then, again concurrently, each stack s >= 1 takes
//                the hand-off: stack s-1's output at i, normalised by s's memory norm, becomes
//                cross K/V at position i in s's caches. Logits from stack p (or the combination).
//   sequential — the same step with the stacks one after another on all threads: the reference
//                the staggered schedule is compared with (bit-identical logits: every kernel
//                used here computes each output element on one thread in a fixed order).
//   recurrent  — shared weights only (and combine = last): after the usual prefill, each step
//                runs ONE pass (the shared blocks with the last stack's cross-attention and
//                self-attention cache); its output at i is both the prediction and the memory
//                at position i. Cost per step ≈ an h-layer model; an approximation by design.
// Prefill runs the teacher-forced forward on the prompt and copies its keys/values into the
// caches; the first prediction comes from its last position.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "infer/stack_workers.h"
#include "model/block.h"
#include "model/model.h"

namespace sf {

enum class DecodeMode { staggered, sequential, recurrent };
DecodeMode decode_mode_from_string(const std::string& name);  // errors list the choices
std::string to_string(DecodeMode mode);

class Decoder {
 public:
  // The model's weights must not change while the decoder is in use (combine.alpha is read
  // once here). `threads`: CPU threads for the whole step (0: all cores); the staggered schedule gives
  // each stack threads / p of them (at least 1).
  Decoder(Model& model, int64_t batch, DecodeMode mode, int threads = 0);
  ~Decoder();

  int64_t batch() const { return batch_; }
  DecodeMode mode() const { return mode_; }
  int64_t length(int64_t sequence) const { return length_.at(sequence); }

  // Resets sequence b and runs its prompt (1 <= size <= max_seq_len). Afterwards logits() row b
  // predicts the token after the prompt.
  void prefill(int64_t sequence, std::span<const int32_t> prompt);
  // Feeds one token to every sequence (tokens.size() == batch), each at its own position; then
  // logits() row b predicts the next token of sequence b. Every sequence must have been
  // prefilled and have room left in the context.
  void step(std::span<const int32_t> tokens);
  // [batch, vocab] CPU tensor in the model's dtype, valid after prefill/step.
  const Tensor& logits() const { return logits_host_; }

 private:
  struct StackState {
    std::vector<DecodeCache> self, cross;  // per layer
    Tensor x_a, x_b, x_c;                  // residual stream [B, D] (three buffers rotate)
    Tensor output;                         // this step's output a^(s)_i [B, D]
    Tensor mem, mem_rstd;                  // hand-off scratch: normalised memory row
    DecodeScratch scratch;
    MlpActivations mlp;
  };

  void run_stack(int64_t s);            // the step's layers of stack s
  void run_stacks_batched();            // all stacks as one pass (shared weights)
  void take_handoff(int64_t s);         // stack s takes the output of `source` into its caches
  void compute_logits();
  void copy_prefill_caches(int64_t sequence, int64_t length);
  void set_positions();                 // positions, slots and key ranges for this step

  Model& model_;
  Backend& backend_;
  ModelConfig config_;
  int64_t batch_;
  DecodeMode mode_;
  int threads_;
  std::vector<int64_t> length_;         // positions already in the caches, per sequence
  std::vector<StackState> stacks_;
  StackState all_;                      // [p*B, ...] tensors whose row blocks are the stacks'
  bool batched_shared_ = false;         // staggered + shared weights: one batched pass
  Tensor all_positions_, all_slots_;    // I32 [p*B]
  Tensor tokens_, positions_, self_slots_, cross_slots_;  // I32 [B]
  Tensor self_begin_, self_end_, cross_begin_, cross_end_;
  Tensor embedded_, combined_, final_norm_out_, final_rstd_, logits_;
  Tensor logits_host_;
  std::vector<double> alpha_;           // combine.alpha (combine = linear)
  std::unique_ptr<StackWorkers> workers_;
};

}  // namespace sf
