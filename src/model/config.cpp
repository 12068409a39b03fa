// config.cpp — ModelConfig JSON parsing with per-field errors, validation, overrides.
#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sf {

using json = nlohmann::json;

std::string to_string(WeightSharing w) { return w == WeightSharing::shared ? "shared" : "separate"; }
std::string to_string(CombineMode c) { return c == CombineMode::linear ? "linear" : "last"; }

namespace {

// Collects problems so that one error lists every bad field, not just the first.
struct Problems {
  std::vector<std::string> items;
  void add(std::string s) { items.push_back(std::move(s)); }
  void raise_if_any(const std::string& source) const {
    if (items.empty()) return;
    std::string msg = fmt::format("{}: invalid model config:", source);
    for (const auto& s : items) msg += "\n  - " + s;
    fail(msg);
  }
};

void read_int(const json& j, const char* key, int64_t& out, Problems& p) {
  if (!j.contains(key)) return;
  const json& v = j.at(key);
  if (v.is_number_integer()) {
    out = v.get<int64_t>();
  } else if (v.is_number_float() && v.get<double>() == static_cast<double>(static_cast<int64_t>(v.get<double>()))) {
    out = static_cast<int64_t>(v.get<double>());
  } else {
    p.add(fmt::format("field '{}': expected an integer, got {}", key, v.dump()));
  }
}

void read_double(const json& j, const char* key, double& out, Problems& p) {
  if (!j.contains(key)) return;
  const json& v = j.at(key);
  if (v.is_number()) out = v.get<double>();
  else p.add(fmt::format("field '{}': expected a number, got {}", key, v.dump()));
}

void read_bool(const json& j, const char* key, bool& out, Problems& p) {
  if (!j.contains(key)) return;
  const json& v = j.at(key);
  if (v.is_boolean()) out = v.get<bool>();
  else p.add(fmt::format("field '{}': expected true or false, got {}", key, v.dump()));
}

template <class Enum>
void read_enum(const json& j, const char* key, Enum& out,
               const std::vector<std::pair<const char*, Enum>>& choices, Problems& p) {
  if (!j.contains(key)) return;
  const json& v = j.at(key);
  std::string names;
  for (const auto& [name, value] : choices) {
    names += (names.empty() ? "" : "|") + std::string(name);
    if (v.is_string() && v.get<std::string>() == name) {
      out = value;
      return;
    }
  }
  p.add(fmt::format("field '{}': expected one of {}, got {}", key, names, v.dump()));
}

const char* const kKnownKeys[] = {
    "vocab_size", "d_model",        "n_heads",  "n_kv_heads",       "ffn_hidden",
    "max_seq_len", "rope_theta",    "norm_eps", "tie_embeddings",   "n_stacks",
    "layers_per_stack", "weights",  "cross_window", "cross_rope",   "combine",
    "init_std",   "seed"};

// Appends a problem for every field of `c` out of range; resolves n_kv_heads = 0.
void check_fields(ModelConfig& c, Problems& p) {
  auto positive = [&](const char* name, int64_t v) {
    if (v <= 0) p.add(fmt::format("field '{}': must be a positive integer, got {}", name, v));
  };
  positive("vocab_size", c.vocab_size);
  positive("d_model", c.d_model);
  positive("n_heads", c.n_heads);
  positive("ffn_hidden", c.ffn_hidden);
  positive("max_seq_len", c.max_seq_len);
  positive("n_stacks", c.n_stacks);
  positive("layers_per_stack", c.layers_per_stack);
  if (c.vocab_size > INT32_MAX)
    p.add(fmt::format("field 'vocab_size': {} does not fit 32-bit token ids", c.vocab_size));
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
  if (c.n_kv_heads < 0) p.add(fmt::format("field 'n_kv_heads': must be positive, got {}", c.n_kv_heads));
  if (c.n_heads > 0 && c.d_model > 0) {
    if (c.d_model % c.n_heads != 0)
      p.add(fmt::format("field 'n_heads': d_model {} is not divisible by n_heads {}", c.d_model,
                        c.n_heads));
    else if (c.head_dim() % 2 != 0)
      p.add(fmt::format("field 'n_heads': head_dim = d_model / n_heads = {} must be even for RoPE",
                        c.head_dim()));
    if (c.n_kv_heads > 0 && c.n_heads % c.n_kv_heads != 0)
      p.add(fmt::format("field 'n_kv_heads': n_heads {} is not a multiple of n_kv_heads {}",
                        c.n_heads, c.n_kv_heads));
  }
  if (!(c.rope_theta > 0)) p.add(fmt::format("field 'rope_theta': must be > 0, got {}", c.rope_theta));
  if (!(c.norm_eps > 0)) p.add(fmt::format("field 'norm_eps': must be > 0, got {}", c.norm_eps));
  if (!(c.init_std > 0)) p.add(fmt::format("field 'init_std': must be > 0, got {}", c.init_std));
  if (c.cross_window < 0)
    p.add(fmt::format("field 'cross_window': must be >= 0 (0 = unbounded), got {}", c.cross_window));
  if (c.n_stacks == 1 && c.weights == WeightSharing::shared)
    p.add("field 'weights': 'shared' needs n_stacks >= 2 (a single stack has nothing to share)");
  if (c.n_stacks == 1 && c.combine == CombineMode::linear)
    p.add("field 'combine': 'linear' needs n_stacks >= 2");
}

}  // namespace

void ModelConfig::validate(const std::string& source) {
  Problems p;
  check_fields(*this, p);
  p.raise_if_any(source);
}

json config_to_json(const ModelConfig& c) {
  return json{{"vocab_size", c.vocab_size},
              {"d_model", c.d_model},
              {"n_heads", c.n_heads},
              {"n_kv_heads", c.n_kv_heads},
              {"ffn_hidden", c.ffn_hidden},
              {"max_seq_len", c.max_seq_len},
              {"rope_theta", c.rope_theta},
              {"norm_eps", c.norm_eps},
              {"tie_embeddings", c.tie_embeddings},
              {"n_stacks", c.n_stacks},
              {"layers_per_stack", c.layers_per_stack},
              {"weights", to_string(c.weights)},
              {"cross_window", c.cross_window},
              {"cross_rope", c.cross_rope},
              {"combine", to_string(c.combine)},
              {"init_std", c.init_std},
              {"seed", c.seed}};
}

ModelConfig config_from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail(fmt::format("{}: a model config must be a JSON object", source));
  Problems p;
  for (const auto& item : j.items()) {
    bool known = false;
    for (const char* k : kKnownKeys) known = known || item.key() == k;
    if (!known) p.add(fmt::format("field '{}': unknown field", item.key()));
  }
  ModelConfig c;
  read_int(j, "vocab_size", c.vocab_size, p);
  read_int(j, "d_model", c.d_model, p);
  read_int(j, "n_heads", c.n_heads, p);
  read_int(j, "n_kv_heads", c.n_kv_heads, p);
  read_int(j, "ffn_hidden", c.ffn_hidden, p);
  read_int(j, "max_seq_len", c.max_seq_len, p);
  read_double(j, "rope_theta", c.rope_theta, p);
  read_double(j, "norm_eps", c.norm_eps, p);
  read_bool(j, "tie_embeddings", c.tie_embeddings, p);
  read_int(j, "n_stacks", c.n_stacks, p);
  read_int(j, "layers_per_stack", c.layers_per_stack, p);
  read_enum(j, "weights", c.weights,
            {{"separate", WeightSharing::separate}, {"shared", WeightSharing::shared}}, p);
  read_int(j, "cross_window", c.cross_window, p);
  read_bool(j, "cross_rope", c.cross_rope, p);
  read_enum(j, "combine", c.combine, {{"last", CombineMode::last}, {"linear", CombineMode::linear}},
            p);
  read_double(j, "init_std", c.init_std, p);
  int64_t seed = static_cast<int64_t>(c.seed);
  read_int(j, "seed", seed, p);
  if (seed < 0) p.add(fmt::format("field 'seed': must be >= 0, got {}", seed));
  c.seed = static_cast<uint64_t>(seed);
  check_fields(c, p);
  p.raise_if_any(source);
  return c;
}

ModelConfig config_load(const std::string& path) { return config_load(path, {}); }

ModelConfig config_load(const std::string& path, const std::vector<std::string>& overrides) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(fmt::format("{}: cannot open model config", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  json j;
  try {
    j = json::parse(buffer.str());
  } catch (const json::parse_error& e) {
    fail(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
  for (const std::string& assignment : overrides) config_apply_override(j, assignment);
  return config_from_json(j, path);
}

void config_save(const ModelConfig& config, const std::string& path) {
  const std::string text = config_to_json(config).dump(2) + "\n";
  write_file_atomic(path, text);
}

void config_apply_override(json& j, const std::string& assignment) {
  const auto eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0)
    fail(fmt::format("--set '{}': expected key=value", assignment));
  const std::string key = assignment.substr(0, eq);
  const std::string value = assignment.substr(eq + 1);
  json parsed = json::parse(value, nullptr, /*allow_exceptions=*/false);
  j[key] = parsed.is_discarded() ? json(value) : parsed;
}

}  // namespace sf
