// flops.h — the floating-point work of a training step, for tokens/s -> MFU.
//
// Convention (decision, documented in docs/training-gpu.md; the PyTorch twin's bench uses the
// same formula, python/stagformer_twin/flops.py): the PaLM / nanoGPT count
//     training FLOPs per token = 6 * N + 12 * A * H * hd * T
// N: parameters that take part in matrix products, as executed: every parameter except the
//    token embedding table (a lookup); the LM head counts once, tied or not (V * D); with
//    shared weights the shared self-attention and MLP count once per stack (they run p times);
// A: attention sub-blocks whose scores are computed: self-attention in every layer of every
//    stack plus cross-attention in every layer of stacks >= 1;
// 12 * H * hd * T per token and sub-block: QK^T and PV, forward (2 * 2) and backward (2 * 4),
//    without halving for the causal mask (the PaLM convention, so numbers compare across
//    implementations). Norms, activations and the optimizer are not counted.
#pragma once

#include <cstdint>

#include "model/config.h"

namespace sf {

struct TrainingFlops {
  int64_t matmul_parameters = 0;   // N
  int64_t attention_blocks = 0;    // A
  double per_token = 0.0;          // 6N + 12*A*H*hd*T
};

TrainingFlops training_flops(const ModelConfig& config, int64_t seq);

}  // namespace sf
