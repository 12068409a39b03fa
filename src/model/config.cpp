// config.cpp — ModelConfig JSON parsing with per-field errors, validation, overrides.
#include "model/config.h"

#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_input.h"
#include "model/parameter_counts.h"

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

// Each reader records a problem instead of throwing, so that one error lists every bad field.
// The checks themselves are json_input.h's: no value read from the file is converted unchecked.
template <class Read>
void read_field(const json& j, const char* key, Problems& p, Read read) {
  const auto it = j.find(key);
  if (it == j.end()) return;
  try {
    read(*it, fmt::format("field '{}'", key));
  } catch (const Error& e) {
    p.add(e.what());
  }
}

void read_int(const json& j, const char* key, int64_t& out, Problems& p) {
  read_field(j, key, p, [&](const json& v, const std::string& where) {
    out = json_int(v, where, std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
  });
}

void read_double(const json& j, const char* key, double& out, Problems& p) {
  read_field(j, key, p, [&](const json& v, const std::string& where) { out = json_finite(v, where); });
}

void read_bool(const json& j, const char* key, bool& out, Problems& p) {
  read_field(j, key, p, [&](const json& v, const std::string& where) { out = json_bool(v, where); });
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
  p.add(fmt::format("field '{}': expected one of {}, got {}", key, names, json_excerpt(v)));
}

const char* const kKnownKeys[] = {
    "vocab_size", "d_model",        "n_heads",  "n_kv_heads",       "ffn_hidden",
    "max_seq_len", "rope_theta",    "norm_eps", "tie_embeddings",   "n_stacks",
    "layers_per_stack", "weights",  "cross_window", "cross_rope",   "combine",
    "init_std",   "seed"};

// Appends a problem for every field of `c` out of range; resolves n_kv_heads = 0.
void check_fields(ModelConfig& c, Problems& p) {
  using L = ModelConfigLimits;
  auto in_range = [&](const char* name, int64_t v, int64_t max, const char* why) {
    if (v <= 0) p.add(fmt::format("field '{}': must be a positive integer, got {}", name, v));
    else if (v > max) p.add(fmt::format("field '{}': {} is above the limit {} ({})", name, v, max, why));
  };
  in_range("vocab_size", c.vocab_size, L::vocab_size, "token ids are 32-bit");
  in_range("d_model", c.d_model, L::d_model, "see docs/reliability.md");
  in_range("n_heads", c.n_heads, L::d_model, "at most d_model");
  in_range("ffn_hidden", c.ffn_hidden, L::ffn_hidden, "see docs/reliability.md");
  in_range("max_seq_len", c.max_seq_len, L::max_seq_len, "positions are 32-bit on the device");
  in_range("n_stacks", c.n_stacks, L::n_stacks, "see docs/reliability.md");
  in_range("layers_per_stack", c.layers_per_stack, L::layers_per_stack, "see docs/reliability.md");
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
  if (c.n_kv_heads < 0) p.add(fmt::format("field 'n_kv_heads': must be positive, got {}", c.n_kv_heads));
  const bool heads_valid = c.n_heads > 0 && c.n_heads <= L::d_model && c.d_model > 0 &&
                           c.d_model <= L::d_model;
  if (heads_valid) {
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
  if (!(c.rope_theta > 0) || !std::isfinite(c.rope_theta))
    p.add(fmt::format("field 'rope_theta': must be a finite number > 0, got {}", c.rope_theta));
  if (!(c.norm_eps > 0 && c.norm_eps <= 1))
    p.add(fmt::format("field 'norm_eps': must be in (0, 1], got {}", c.norm_eps));
  if (!(c.init_std > 0 && c.init_std <= 1))
    p.add(fmt::format("field 'init_std': must be in (0, 1], got {}", c.init_std));
  if (c.cross_window < 0)
    p.add(fmt::format("field 'cross_window': must be >= 0 (0 = unbounded), got {}", c.cross_window));
  else if (c.max_seq_len > 0 && c.cross_window > c.max_seq_len)
    p.add(fmt::format("field 'cross_window': {} is larger than max_seq_len {} (0 means unbounded)",
                      c.cross_window, c.max_seq_len));
  if (c.seed > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    p.add(fmt::format("field 'seed': must be at most {}, got {}",
                      std::numeric_limits<int64_t>::max(), c.seed));
  if (c.n_stacks == 1 && c.weights == WeightSharing::shared)
    p.add("field 'weights': 'shared' needs n_stacks >= 2 (a single stack has nothing to share)");
  if (c.n_stacks == 1 && c.combine == CombineMode::linear)
    p.add("field 'combine': 'linear' needs n_stacks >= 2");
  // The total, once every field is within its limit (which keeps each product exact in 64 bits).
  if (p.items.empty()) {
    const int64_t parameters = parameter_counts_for(c).at("total");
    if (parameters > L::parameters)
      p.add(fmt::format("the model would have {} parameters, above the limit {} (see "
                        "docs/reliability.md)", parameters, L::parameters));
  }
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
  const size_t problems_before_reading = p.items.size();
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
  read_field(j, "seed", p, [&](const json& v, const std::string& where) {
    c.seed = static_cast<uint64_t>(json_int(v, where, 0, std::numeric_limits<int64_t>::max()));
  });
  // The checks between fields only once every field was read: a field that failed keeps its
  // default, and a check against that default would report a problem the file does not have.
  if (p.items.size() == problems_before_reading) check_fields(c, p);
  p.raise_if_any(source);
  return c;
}

ModelConfig config_load(const std::string& path) { return config_load(path, {}); }

ModelConfig config_load(const std::string& path, const std::vector<std::string>& overrides) {
  json j = json_read_file(path, kConfigMaxFileBytes);
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
  SF_CHECK(j.is_object(), "--set '{}': the config is not a JSON object", assignment);
  json parsed;
  try {
    parsed = json_parse(value, fmt::format("--set {}", key));
  } catch (const Error&) {
    parsed = json(value);  // not JSON: the text itself ("weights=shared")
  }
  j[key] = std::move(parsed);
}

}  // namespace sf
