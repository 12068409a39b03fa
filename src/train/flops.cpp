// flops.cpp — training FLOPs per token (see flops.h for the convention).
#include "train/flops.h"

#include "model/parameter_counts.h"

namespace sf {

TrainingFlops training_flops(const ModelConfig& config, int64_t seq) {
  // Parameters as executed: shared self-attention/MLP weights run in every stack, so they are
  // counted as the separate-weights model counts them (parameter_counts_for's formulas).
  ModelConfig executed = config;
  executed.weights = WeightSharing::separate;
  const auto counts = parameter_counts_for(executed);
  TrainingFlops f;
  f.matmul_parameters = counts.at("total") - counts.at("embedding");
  if (config.tie_embeddings) f.matmul_parameters += config.vocab_size * config.d_model;  // the head
  f.attention_blocks = config.n_stacks * config.layers_per_stack +
                       (config.n_stacks - 1) * config.layers_per_stack;
  f.per_token = 6.0 * static_cast<double>(f.matmul_parameters) +
                12.0 * static_cast<double>(f.attention_blocks) *
                    static_cast<double>(config.n_heads * config.head_dim()) *
                    static_cast<double>(seq);
  return f;
}

}  // namespace sf
