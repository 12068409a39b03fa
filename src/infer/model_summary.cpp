// model_summary.cpp — cache sizes, decode depth, safetensors header summary.
#include "infer/model_summary.h"

#include <filesystem>
#include <limits>

#include "core/dtype.h"
#include "core/error.h"
#include "io/json_input.h"
#include "io/safetensors.h"

namespace sf {

namespace fs = std::filesystem;

KvCacheSize kv_cache_size(const ModelConfig& c) {
  KvCacheSize size;
  size.self_values_per_token = c.n_stacks * c.layers_per_stack * 2 * c.kv_dim();
  size.cross_values_per_position = (c.n_stacks - 1) * c.layers_per_stack * 2 * c.kv_dim();
  size.cross_window = c.cross_window;
  return size;
}

DecodeDepth decode_depth(const ModelConfig& c) {
  return DecodeDepth{c.total_layers(), c.total_layers(), c.layers_per_stack};
}

SafetensorsHeaderSummary safetensors_header_read(const std::string& path) {
  const SafetensorsHeader header = safetensors_read_header(path);
  SafetensorsHeaderSummary summary;
  summary.file_bytes = header.file_bytes;
  summary.metadata = header.metadata;
  for (const auto& [name, entry] : header.entries) {
    summary.tensors += 1;
    // Each count is below 2^63 (the reader checked numel * element size); the sum of counts
    // is at most the file's size in bytes.
    summary.elements_by_dtype[std::string(dtype_name(entry.dtype))] += shape_numel(entry.shape);
  }
  return summary;
}

int64_t run_latest_checkpoint_step(const std::string& run_dir) {
  const fs::path latest = fs::path(run_dir) / "checkpoints" / "latest.json";
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec) || !fs::exists(latest, ec)) return -1;
  // (The format is train/checkpoint.h's; `info` reads only the step, with the same checks.)
  const nlohmann::json j = json_read_file(latest.string(), kJsonSmallFileBytes);
  return json_int(json_member(j, "step", latest.string()),
                  fmt::format("{}: field 'step'", latest.string()), 0,
                  std::numeric_limits<int64_t>::max());
}

}  // namespace sf
