// config.h — ModelConfig: every field of the StagFormer family (spec §2–§4), JSON I/O, validation.
//
// A config is read from config.json (the file that sits beside model.safetensors) and may be
// modified by `--set key=value` overrides. Validation reports every bad field by name; unknown
// fields are rejected too, so that a typo ("n_stack") is not silently ignored.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace sf {

enum class WeightSharing { separate, shared };

// The largest config accepted (validate() names the field above its limit). The reasons, in
// full in docs/reliability.md: each limit is far above any model this engine can hold in
// memory, and together they keep every size computed from a config (parameter counts, tensor
// elements and bytes) exact in 64-bit arithmetic, so a hostile config.json is refused with a
// message instead of building a model on wrapped-around sizes.
struct ModelConfigLimits {
  static constexpr int64_t vocab_size = 2147483647;      // token ids are 32-bit
  static constexpr int64_t d_model = 65536;              // also the limit of n_heads
  static constexpr int64_t ffn_hidden = 1048576;
  static constexpr int64_t max_seq_len = 1048576;        // positions are 32-bit on the device
  static constexpr int64_t n_stacks = 16;
  static constexpr int64_t layers_per_stack = 1024;
  static constexpr int64_t parameters = int64_t{1} << 40;  // 1.1e12: 4.4 TB of F32 values
};

// A config.json is a few hundred bytes; anything past this is not one.
inline constexpr uint64_t kConfigMaxFileBytes = 1 << 20;
enum class CombineMode { last, linear };

struct ModelConfig {
  int64_t vocab_size = 50304;
  int64_t d_model = 768;
  int64_t n_heads = 12;
  int64_t n_kv_heads = 0;  // 0 in JSON/defaults means "= n_heads"; resolved by validate()
  int64_t ffn_hidden = 2048;
  int64_t max_seq_len = 1024;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  int64_t n_stacks = 2;          // p; 1 is the ordinary Transformer
  int64_t layers_per_stack = 6;  // h
  WeightSharing weights = WeightSharing::separate;
  int64_t cross_window = 0;      // w; 0 = unbounded (every earlier position)
  bool cross_rope = true;
  CombineMode combine = CombineMode::last;
  double init_std = 0.02;
  uint64_t seed = 1234;

  int64_t head_dim() const { return d_model / n_heads; }
  int64_t kv_dim() const { return n_kv_heads * head_dim(); }
  int64_t total_layers() const { return n_stacks * layers_per_stack; }

  // Checks every field; throws sf::Error listing each bad field (prefixed by `source`, e.g. the
  // file name). Resolves n_kv_heads = 0 to n_heads.
  void validate(const std::string& source = "config");
};

// JSON <-> config. from_json rejects unknown keys and wrong types, naming the field and `source`.
nlohmann::json config_to_json(const ModelConfig& config);
ModelConfig config_from_json(const nlohmann::json& json, const std::string& source);
ModelConfig config_load(const std::string& path);  // reads, parses and validates
// Reads a config file, applies "key=value" overrides (config_apply_override), then validates;
// errors name the file and the field.
ModelConfig config_load(const std::string& path, const std::vector<std::string>& overrides);
void config_save(const ModelConfig& config, const std::string& path);  // atomic write

// Applies "key=value" to a JSON object: the value is parsed as JSON when it is valid JSON
// (numbers, true/false), else taken as a string ("weights=shared").
void config_apply_override(nlohmann::json& json, const std::string& assignment);

std::string to_string(WeightSharing w);
std::string to_string(CombineMode c);

}  // namespace sf
