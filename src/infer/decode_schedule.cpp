// decode_schedule.cpp — the plan of each decode mode and the bytes its steps read.
#include "infer/decode_schedule.h"

#include <algorithm>

#include "core/attention_mask.h"
#include "core/error.h"

namespace sf {

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

DecodeSchedule::DecodeSchedule(const ModelConfig& c, DecodeMode mode) : config_(c), mode_(mode) {
  const int64_t p = c.n_stacks;
  switch (mode) {
    case DecodeMode::staggered: plan_.groups = {StackGroup{0, p}}; break;
    case DecodeMode::sequential:
      for (int64_t s = 0; s < p; ++s) plan_.groups.push_back(StackGroup{s, 1});
      break;
    case DecodeMode::recurrent:
      if (const std::string why = unsupported(c, mode); !why.empty())
        fail("recurrent decoding " + why);
      plan_.groups = {StackGroup{p - 1, 1}};
      plan_.recurrent = true;
      break;
  }
}

std::string DecodeSchedule::unsupported(const ModelConfig& c, DecodeMode mode) {
  return mode == DecodeMode::recurrent ? recurrent_unsupported(c) : "";
}

int64_t DecodeSchedule::weight_values_per_step(bool distinct) const {
  const ModelConfig& c = config_;
  const int64_t D = c.d_model, Q = c.n_heads * c.head_dim(), K = c.kv_dim(), F = c.ffn_hidden;
  const int64_t h = c.layers_per_stack;
  const int64_t block = h * ((D + Q * D + 2 * K * D + D * Q) +  // attn_norm, wq, wk, wv, wo
                             (D + 3 * D * F));                  // mlp_norm, w1, w3, w2
  // A stack >= 1: per layer cross_norm, wq, wo (the queries) and wk, wv (its memory row), and
  // its memory norm.
  const int64_t cross = h * (D + 2 * Q * D + 2 * K * D) + D;
  int64_t head = D + c.vocab_size * D;  // final_norm, the LM head (all V rows)
  if (c.combine == CombineMode::linear) head += c.n_stacks;  // combine.alpha
  const bool shared = c.weights == WeightSharing::shared;
  // The stacks' block sets a group reads: one when they share them (one product over all their
  // rows), else one per stack.
  auto blocks_of = [&](int64_t stacks) { return (shared ? 1 : stacks) * block; };
  const StackGroup running{plan_.groups.front().first, c.n_stacks - plan_.groups.front().first};
  if (distinct) return blocks_of(running.count) + running.cross_count() * cross + head;
  int64_t values = head;
  for (const StackGroup& g : plan_.groups) values += blocks_of(g.count) + g.cross_count() * cross;
  return values;
}

int64_t DecodeSchedule::kv_values_read(int64_t position) const {
  SF_CHECK(position >= 0, "kv_values_read: negative position {}", position);
  const ModelConfig& c = config_;
  const int64_t first = plan_.groups.front().first;
  const StackGroup running{first, c.n_stacks - first};
  const int64_t row = 2 * c.kv_dim();  // one position's K and V in one layer
  const int64_t self_keys = AttentionMask::causal().keys_visible(position).count();
  const int64_t cross_keys = AttentionMask::staggered(c.cross_window).keys_visible(position).count();
  return c.layers_per_stack * row *
         (running.count * self_keys + running.cross_count() * cross_keys);
}

DecodeStepBytes DecodeSchedule::step_bytes(int64_t batch, int64_t first_position, int64_t steps,
                                           int64_t element_bytes) const {
  SF_CHECK(steps >= 1, "step_bytes: steps must be >= 1, got {}", steps);
  const double eb = static_cast<double>(element_bytes);
  DecodeStepBytes bytes;
  bytes.weights = eb * static_cast<double>(weight_values_per_step(false));
  bytes.weights_distinct = eb * static_cast<double>(weight_values_per_step(true));
  bytes.embedding_rows = eb * static_cast<double>(batch * config_.d_model);
  double kv_values = 0.0;
  for (int64_t i = first_position; i < first_position + steps; ++i)
    kv_values += static_cast<double>(kv_values_read(i));
  bytes.kv_cache = eb * static_cast<double>(batch) * kv_values / static_cast<double>(steps);
  return bytes;
}

}  // namespace sf
