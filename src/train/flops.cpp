// flops.cpp — training FLOPs per token (see flops.h for the convention).
#include "train/flops.h"

#include "cpu/cpu_backend.h"
#include "model/model.h"

namespace sf {

TrainingFlops training_flops(const ModelConfig& config, int64_t seq) {
  // Count the registered parameters (the single source of truth for shapes and sharing) of a
  // model built with no memory behind it other than its parameters on the CPU.
  CpuBackend cpu;
  const Model model(config, cpu);
  TrainingFlops f;
  for (const Parameter& p : model.params().all()) {
    if (p.name == "tok_embeddings.weight") continue;
    // Shared self-attention/MLP weights are stored once (under stacks.0) but run in every stack.
    const bool shared_layer = config.weights == WeightSharing::shared &&
                              p.name.rfind("stacks.0.layers.", 0) == 0;
    f.matmul_parameters += p.value.numel() * (shared_layer ? config.n_stacks : 1);
  }
  if (config.tie_embeddings) f.matmul_parameters += config.vocab_size * config.d_model;
  f.attention_blocks = config.n_stacks * config.layers_per_stack +
                       (config.n_stacks - 1) * config.layers_per_stack;
  f.per_token = 6.0 * static_cast<double>(f.matmul_parameters) +
                12.0 * static_cast<double>(f.attention_blocks) *
                    static_cast<double>(config.n_heads * config.head_dim()) *
                    static_cast<double>(seq);
  return f;
}

}  // namespace sf
