// decoder.h — incremental decoding of StagFormer models (spec §5) for a batch of sequences:
// prompts are prefilled one sequence at a time, then every step feeds one token to each
// sequence at its own position. The work runs on the model's backend through the model's own
// wiring (model/decoding.h over model/stack_pass.h); the decode mode chooses the schedule
// (infer/decode_schedule.h). Nothing here depends on the backend: the decoder checks the
// user's input, keeps each sequence's length, fills the step's indices on the host (uploaded in
// one copy) and reads the logits back.
//
// State: a self-attention K/V cache per stack and layer (the decoder's context: max_seq_len
// positions unless a shorter one is asked) and, for stacks
// s >= 1, a cross-attention K/V cache per layer holding Wk·M_j, Wv·M_j of the memory positions
// produced so far (a ring of w slots when cross_window = w > 0), allocated once, for `batch`
// sequences, at construction; plus the prefill's activations for the longest prompt.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "infer/decode_schedule.h"
#include "model/decoding.h"
#include "model/model.h"

namespace sf {

class Decoder {
 public:
  // The model's weights must not change while the decoder is in use. `context`: the positions
  // each sequence may hold (prompt and generated tokens), 0 for the model's max_seq_len; the
  // caches are allocated for it. Errors: batch < 1, a context outside [1, max_seq_len], a mode
  // the model cannot run, memory that is not available.
  Decoder(Model& model, int64_t batch, DecodeMode mode, int64_t context = 0);

  int64_t batch() const { return state_.batch(); }
  DecodeMode mode() const { return schedule_.mode(); }
  const DecodeSchedule& schedule() const { return schedule_; }
  const DecodingState& state() const { return state_; }
  // Record the step once and replay it (the default where the backend can), or not.
  void set_step_recording(bool on) { state_.set_step_recording(on); }
  int64_t length(int64_t sequence) const { return length_.at(static_cast<size_t>(sequence)); }
  int64_t context() const { return state_.context(); }

  // Resets sequence b and runs its prompt (1 <= size <= context(), ids in the vocabulary).
  // Afterwards logits() row b predicts the token after the prompt.
  void prefill(int64_t sequence, std::span<const int32_t> prompt);
  // Feeds one token to every sequence (tokens.size() == batch), each at its own position; then
  // logits() row b predicts the next token of sequence b. Every sequence fed a token must have
  // been prefilled and have room left in the context.
  // kIdle instead of a token leaves a sequence out (a server's free slot, continuous batching):
  // the sequence counts as not prefilled (its length becomes 0) until the next prefill, and its
  // logits row means nothing. The step runs only the sequences up to the last one fed (where
  // steps are recorded, rounded up to a power of two: one recording per width,
  // DecodingState::set_width); an idle row
  // within the width still runs, at position 1, writing only caches no other sequence reads.
  // So a server whose requests sit in its first slots pays for those rows only. Idling a
  // sequence mid-way and resuming it would be wrong for StagFormer (the step overwrites the
  // rows the next step's hand-off reads), so the decoder refuses that.
  static constexpr int32_t kIdle = -1;
  void step(std::span<const int32_t> tokens);
  // [batch, vocab] CPU tensor (F64 for an F64 model, else F32), valid after prefill/step: the
  // rows prefill or step computed (a step: the rows of the sequences it fed).
  const Tensor& logits() const { return logits_host_; }

 private:
  void read_logits(int64_t first_row, int64_t rows);

  Model& model_;
  DecodeSchedule schedule_;
  DecodingState state_;
  std::vector<int64_t> length_;  // positions already in the caches, per sequence
  Tensor logits_device_;         // F32 copy of BF16 logits (mixed precision); else unused
  Tensor logits_host_;
};

}  // namespace sf
