// cmd_info.cpp — `stagformer info`: what a model or a config is: every config field, parameter
// counts by part, depth and per-token critical path, KV-cache sizes, and for a MODEL its files,
// tokenizer and training step. `--json` prints the same as one JSON object.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "cpu/cpu_backend.h"
#include "data/tokenizer_files.h"
#include "infer/generator.h"
#include "infer/model_summary.h"
#include "model/model.h"
#include "model/model_io.h"
#include "model/weights.h"

namespace sf::cli {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Above this, parameters are counted by formula instead of on a built Model: building one
// allocates and zeroes a value and a gradient per parameter (8 bytes each in fp32): 12 GB for a
// 1.5B config, and already seconds and 1.4 GB for GPT-2 small, more than a question about sizes
// deserves. The formulas are tested equal to the registered tensors (model_summary_test).
constexpr int64_t kMaxModelBytesToBuild = int64_t{256} << 20;

// Config fields in the order of the spec (nlohmann::json sorts keys); fields added later that
// are not listed here are printed after these.
const char* const kConfigFieldOrder[] = {
    "vocab_size", "d_model",  "n_heads",  "n_kv_heads", "ffn_hidden",   "max_seq_len",
    "rope_theta", "norm_eps", "tie_embeddings", "n_stacks", "layers_per_stack", "weights",
    "cross_window", "cross_rope", "combine", "init_std", "seed"};

struct InfoArgs {
  std::string model_path, config_path;
  std::vector<std::string> overrides;
  bool json = false;
};

std::string count_short(int64_t n) {
  const double v = static_cast<double>(n);
  if (n >= 1'000'000'000) return fmt::format("{:.2f}B", v / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f}M", v / 1e6);
  if (n >= 1'000) return fmt::format("{:.1f}K", v / 1e3);
  return std::to_string(n);
}

std::string bytes_short(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.2f} {}", bytes, units[u]);
}

// Thousands separators, for exact counts next to the short form.
std::string count_exact(int64_t n) {
  std::string digits = std::to_string(n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

json build_summary(const InfoArgs& a) {
  json out;
  ModelConfig config;
  if (!a.config_path.empty()) {
    config = config_load(a.config_path, a.overrides);
    out["source"] = {{"config", a.config_path}};
    if (!a.overrides.empty()) out["source"]["overrides"] = a.overrides;
  } else {
    SF_CHECK(a.overrides.empty(),
             "--set applies to --config only: a MODEL's config must describe its weights");
    const ModelFiles files = model_files(a.model_path);
    config = config_load(files.config);
    out["source"] = {{"model", a.model_path}, {"weights", files.weights}, {"config", files.config}};
    const SafetensorsHeaderSummary header = safetensors_header_read(files.weights);
    out["file"] = {{"path", files.weights},
                   {"bytes", header.file_bytes},
                   {"tensors", header.tensors},
                   {"values_by_dtype", header.elements_by_dtype}};
    const std::string tokenizer_path = model_tokenizer_path(a.model_path);
    std::error_code ec;
    if (fs::exists(tokenizer_path, ec)) {
      const TokenizerSpec spec = tokenizer_spec_load(tokenizer_path);
      out["tokenizer"] = {{"file", tokenizer_path}, {"kind", spec.kind},
                          {"vocab_size", spec.vocab_size}, {"eot_id", spec.eot_id}};
    }
    fs::path folder = fs::path(files.weights).parent_path();
    if (folder.empty()) folder = ".";
    const int64_t step = run_latest_checkpoint_step(folder.string());
    if (step >= 0) out["training"] = {{"latest_checkpoint_step", step}};
  }
  out["config"] = config_to_json(config);

  // Parameter counts: on a built model when it is small enough, else by formula (see above).
  std::map<std::string, int64_t> counts = parameter_counts_for(config);
  std::string counted_from = "formulas";
  if (counts.at("total") * 8 < kMaxModelBytesToBuild) {
    CpuBackend cpu;
    const Model model(config, cpu, DType::f32);
    counts = parameter_counts(model.params());
    counted_from = "model";
  }
  json params(counts);
  params["non_embedding"] = counts.at("total") - counts.at("embedding") - counts.at("lm_head");
  params["counted_from"] = counted_from;
  params["bytes_f32"] = counts.at("total") * 4;
  params["bytes_bf16"] = counts.at("total") * 2;
  out["parameters"] = params;
  if (out.contains("file")) {
    int64_t stored = 0;
    for (const auto& [dtype, n] : out["file"]["values_by_dtype"].items()) stored += n.get<int64_t>();
    out["file"]["matches_config"] = stored == counts.at("total");
  }

  const DecodeDepth depth = decode_depth(config);
  out["depth"] = {{"n_stacks", config.n_stacks},
                  {"layers_per_stack", config.layers_per_stack},
                  {"total_layers", depth.total_layers},
                  {"critical_path_layers_sequential", depth.critical_path_sequential},
                  {"critical_path_layers_staggered", depth.critical_path_staggered},
                  {"head_dim", config.head_dim()},
                  {"kv_dim", config.kv_dim()}};

  const KvCacheSize kv = kv_cache_size(config);
  const int64_t full = kv.values_for_context(config.max_seq_len);
  out["kv_cache"] = {
      {"self_values_per_token", kv.self_values_per_token},
      {"cross_values_per_position", kv.cross_values_per_position},
      {"cross_window", kv.cross_window},
      {"bytes_per_token_f32", (kv.self_values_per_token + kv.cross_values_per_position) * 4},
      {"bytes_per_token_bf16", (kv.self_values_per_token + kv.cross_values_per_position) * 2},
      {"context", config.max_seq_len},
      {"bytes_at_context_f32", full * 4},
      {"bytes_at_context_bf16", full * 2}};
  return out;
}

void print_text(const json& s) {
  const json& c = s["config"];
  if (s["source"].contains("model")) {
    const json& f = s["file"];
    std::string dtypes;
    for (const auto& [dtype, n] : f["values_by_dtype"].items())
      dtypes += (dtypes.empty() ? "" : ", ") + dtype;
    fmt::print("model        {}\n", s["source"]["model"].get<std::string>());
    fmt::print("  weights    {} ({}, {} tensors, {}{})\n", f["path"].get<std::string>(),
               bytes_short(f["bytes"].get<double>()), f["tensors"].get<int64_t>(),
               dtypes.empty() ? "no tensors" : dtypes,
               f["matches_config"].get<bool>() ? "" : "; WARNING: value count differs from the config");
    fmt::print("  config     {}\n", s["source"]["config"].get<std::string>());
    if (s.contains("tokenizer"))
      fmt::print("  tokenizer  {} ({} ids, end-of-text {})\n",
                 s["tokenizer"]["kind"].get<std::string>(),
                 s["tokenizer"]["vocab_size"].get<int64_t>(), s["tokenizer"]["eot_id"].get<int64_t>());
    else
      fmt::print("  tokenizer  unknown (no tokenizer.json beside the model)\n");
    if (s.contains("training"))
      fmt::print("  training   latest checkpoint at step {}\n",
                 s["training"]["latest_checkpoint_step"].get<int64_t>());
  } else {
    fmt::print("config       {}\n", s["source"]["config"].get<std::string>());
    if (s["source"].contains("overrides"))
      for (const auto& o : s["source"]["overrides"]) fmt::print("  --set      {}\n", o.get<std::string>());
  }

  fmt::print("\nconfig fields\n");
  auto print_field = [](const std::string& key, const json& value) {
    fmt::print("  {:<18} {}\n", key, value.is_string() ? value.get<std::string>() : value.dump());
  };
  for (const char* key : kConfigFieldOrder)
    if (c.contains(key)) print_field(key, c[key]);
  for (const auto& [key, value] : c.items())
    if (std::find(std::begin(kConfigFieldOrder), std::end(kConfigFieldOrder), key) ==
        std::end(kConfigFieldOrder))
      print_field(key, value);

  const json& d = s["depth"];
  fmt::print("\ndepth\n");
  fmt::print("  layers             {} stacks x {} layers = {}\n", d["n_stacks"].get<int64_t>(),
             d["layers_per_stack"].get<int64_t>(), d["total_layers"].get<int64_t>());
  if (d["n_stacks"].get<int64_t>() > 1)
    fmt::print("  critical path      {} layers per token with the stacks decoded in parallel "
               "(staggered), {} with the stacks one after the other\n",
               d["critical_path_layers_staggered"].get<int64_t>(),
               d["critical_path_layers_sequential"].get<int64_t>());
  else
    fmt::print("  critical path      {} layers per token (one stack)\n",
               d["critical_path_layers_sequential"].get<int64_t>());
  fmt::print("  head_dim, kv_dim   {}, {}\n", d["head_dim"].get<int64_t>(), d["kv_dim"].get<int64_t>());

  const json& p = s["parameters"];
  fmt::print("\nparameters ({})\n", p["counted_from"].get<std::string>() == "model"
                                        ? "counted on the built model"
                                        : "from the formulas of docs/model.md; too large to "
                                          "build just for counting");
  for (const char* part : {"embedding", "self_attention", "cross_attention", "mlp", "norms",
                           "combine", "lm_head", "non_embedding", "total"}) {
    const int64_t n = p[part].get<int64_t>();
    fmt::print("  {:<18} {:>9} {:>16}\n", part, count_short(n), count_exact(n));
  }
  fmt::print("  {:<18} {} fp32, {} bf16\n", "weight bytes", bytes_short(p["bytes_f32"].get<double>()),
             bytes_short(p["bytes_bf16"].get<double>()));

  const json& kv = s["kv_cache"];
  const int64_t window = kv["cross_window"].get<int64_t>();
  fmt::print("\nKV cache\n");
  fmt::print("  self               {} values per token (p*h*2*kv_dim)\n",
             count_exact(kv["self_values_per_token"].get<int64_t>()));
  fmt::print("  cross              {} values per memory position ((p-1)*h*2*kv_dim){}\n",
             count_exact(kv["cross_values_per_position"].get<int64_t>()),
             window > 0 ? fmt::format(", at most {} positions (cross_window)", window) : "");
  fmt::print("  per token          {} fp32, {} bf16 (self + cross{})\n",
             bytes_short(kv["bytes_per_token_f32"].get<double>()),
             bytes_short(kv["bytes_per_token_bf16"].get<double>()),
             window > 0 ? fmt::format("; cross stops growing after {} tokens", window) : "");
  fmt::print("  {:<18} {} fp32, {} bf16 (one sequence)\n",
             fmt::format("at {} tokens", kv["context"].get<int64_t>()),
             bytes_short(kv["bytes_at_context_f32"].get<double>()),
             bytes_short(kv["bytes_at_context_bf16"].get<double>()));
}

void run(const InfoArgs& a) {
  SF_CHECK(a.model_path.empty() != a.config_path.empty(), "give exactly one of -m MODEL or --config FILE");
  const json summary = build_summary(a);
  if (a.json) std::printf("%s\n", summary.dump(2).c_str());
  else print_text(summary);
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto a = std::make_shared<InfoArgs>();
  CLI::App* cmd = app.add_subcommand(
      "info",
      "Describe a model or a config: every config field, parameter counts by part, depth and "
      "per-token critical path, KV-cache sizes; for a MODEL also its files, tokenizer and "
      "training step. Builds no weights beyond a small model (large configs use the formulas "
      "of docs/model.md).");
  CLI::Option* model = cmd->add_option("-m,--model", a->model_path,
                                       "MODEL: a run or model folder, or a .safetensors file "
                                       "with config.json beside it");
  CLI::Option* config = cmd->add_option("--config", a->config_path, "a model config JSON file");
  model->excludes(config);
  cmd->add_option("--set", a->overrides, "override a config field: key=value (repeatable; with --config)")
      ->needs(config);
  cmd->add_flag("--json", a->json, "print one JSON object instead of text");
  cmd->callback([a] { run(*a); });
}

}  // namespace sf::cli
