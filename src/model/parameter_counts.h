// parameter_counts.h — parameter counts by part from a model config alone, without allocating
// the model: a Model holds a value and a gradient for every parameter (8 bytes per fp32
// parameter), so asking about a 1.5B-parameter config that way would need 12 GB. Used by
// `stagformer info` above a size limit and by the training FLOP count (train/flops.h);
// tests/model_summary_test.cpp checks the formulas against parameter_counts() of a built model.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model/config.h"

namespace sf {

// The same parts and keys as parameter_counts() of model/weights.h: "embedding",
// "self_attention", "cross_attention", "mlp", "norms", "combine", "lm_head", "total".
// `config` must be validated (n_kv_heads resolved).
std::map<std::string, int64_t> parameter_counts_for(const ModelConfig& config);

}  // namespace sf
