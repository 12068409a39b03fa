// decode_schedule.h — the decode schedules a user chooses from (spec §5), each as the plan a
// DecodingState steps by (model/decoding.h) and the bytes one of its steps reads.
//
//   staggered   every stack works on token x_i at the same time: ONE group of all p stacks, so
//               each operation of layer j is issued once for all of them (their products in one
//               Backend::linear_many: the union of their output rows split over every core, or
//               one launch). With shared weights the products of the stacks read the same
//               weight and merge into one product over p*B rows ("shared-batched"): each shared
//               weight is read once per step.
//   sequential  the stacks one after another (groups of one stack): the reference the
//               staggered schedule is compared with, bit for bit.
//   recurrent   shared weights and combine = last: only the last stack runs, its output at i
//               also the memory at i. About an h-layer model's cost; an approximation.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"
#include "model/decoding.h"

namespace sf {

enum class DecodeMode { staggered, sequential, recurrent };
DecodeMode decode_mode_from_string(const std::string& name);  // errors list the choices
std::string to_string(DecodeMode mode);

// What one decode step reads, in bytes. Weights as the schedule reads them (a weight read by
// two groups counts twice), and with every distinct tensor once; the B rows of the token
// embedding; the KV-cache keys and values the attention of every running stack sees (the mean
// over the steps of a run). Writes and activations are not counted.
struct DecodeStepBytes {
  double weights = 0.0;
  double weights_distinct = 0.0;
  double embedding_rows = 0.0;
  double kv_cache = 0.0;
  double total() const { return weights + embedding_rows + kv_cache; }
};

class DecodeSchedule {
 public:
  // Errors: recurrent on a model that cannot run it (separate weights, one stack, combine
  // linear), naming what it has.
  DecodeSchedule(const ModelConfig& config, DecodeMode mode);
  // Why `config` cannot run `mode` ("needs ...; this model has ..."), or "" when it can.
  static std::string unsupported(const ModelConfig& config, DecodeMode mode);

  DecodeMode mode() const { return mode_; }
  const StepPlan& plan() const { return plan_; }

  // Weight values one step reads (the embedding table's rows excluded, the LM head or the tied
  // table in full): each group reads the blocks of its stacks, a weight shared by the stacks of
  // a group once; then memory norms and cross-attention of its stacks >= 1, and the head once.
  // `distinct`: every tensor once, however many groups read it.
  int64_t weight_values_per_step(bool distinct) const;
  // KV-cache values one sequence's step reads with its new token at `position`: every running
  // stack's self-attention keys and values that the causal mask shows, and every running
  // cross-attention's that the staggered mask shows (core/attention_mask.h).
  int64_t kv_values_read(int64_t position) const;
  // Bytes per step of `batch` sequences stepping at positions first .. first + steps - 1.
  DecodeStepBytes step_bytes(int64_t batch, int64_t first_position, int64_t steps,
                             int64_t element_bytes) const;

 private:
  ModelConfig config_;
  DecodeMode mode_;
  StepPlan plan_;
};

}  // namespace sf
