// model_summary.h — what a model config implies, computed without allocating the model: depth
// and critical path, KV-cache sizes (parameter counts: model/parameter_counts.h);
// and a header-only look at a safetensors file (tensor count, dtypes) that does not read the
// weights. `stagformer info` builds the Model (the authoritative count) only below a size limit
// and uses the formulas (docs/model.md, "Parameter counts") above it.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "core/attention_mask.h"
#include "model/config.h"
#include "model/parameter_counts.h"  // parameter_counts_for

namespace sf {

// Per-token decoding state (spec §5), in values (multiply by the element size for bytes).
struct KvCacheSize {
  // Self-attention K and V of every stack and layer: p * h * 2 * kv_dim per token. Each stack
  // has its own cache even with shared weights (the stacks' inputs differ).
  int64_t self_values_per_token = 0;
  // Cross-attention K and V (W_k M_j, W_v M_j) of stacks 2..p: (p-1) * h * 2 * kv_dim per memory
  // position. With cross_window w > 0 only the last w positions are kept (a ring).
  int64_t cross_values_per_position = 0;
  int64_t cross_window = 0;  // 0 = unbounded

  // Memory positions the cross caches hold when the context has `tokens` tokens: what the
  // staggering mask lets a query see, at most (core/attention_mask.h).
  int64_t cross_positions(int64_t tokens) const {
    return AttentionMask::staggered(cross_window).cached_positions(tokens);
  }
  // Values of all caches for a context of `tokens` tokens.
  int64_t values_for_context(int64_t tokens) const {
    return self_values_per_token * tokens + cross_values_per_position * cross_positions(tokens);
  }
};
KvCacheSize kv_cache_size(const ModelConfig& config);

// Layers a token passes one after the other when decoding: p * h for a plain (sequential) pass,
// h when the p stacks of a StagFormer run the same token concurrently (staggered decoding).
struct DecodeDepth {
  int64_t total_layers = 0;               // p * h
  int64_t critical_path_sequential = 0;   // p * h
  int64_t critical_path_staggered = 0;    // h
};
DecodeDepth decode_depth(const ModelConfig& config);

// The header of a safetensors file, read and checked without reading the tensor data.
struct SafetensorsHeaderSummary {
  uint64_t file_bytes = 0;
  int64_t tensors = 0;
  std::map<std::string, int64_t> elements_by_dtype;  // "F32" -> number of values
  std::map<std::string, std::string> metadata;
};
// Built on io/safetensors.h's header reader (safetensors_read_header): every check of the
// weights loader, without reading the data. Errors name the file.
SafetensorsHeaderSummary safetensors_header_read(const std::string& path);

// The step of the latest checkpoint of a run folder (run/checkpoints/latest.json, written by
// `stagformer train`), or -1 when the folder has none. A latest.json that exists but is not
// valid is an error naming the file.
int64_t run_latest_checkpoint_step(const std::string& run_dir);

}  // namespace sf
