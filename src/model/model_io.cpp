// model_io.cpp — saving and loading model weights and config.
#include "model/model_io.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/parameter_counts.h"

namespace sf {

namespace fs = std::filesystem;

ModelFiles model_files(const std::string& path) {
  ModelFiles files;
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    files.weights = (fs::path(path) / "model.safetensors").string();
    files.config = (fs::path(path) / "config.json").string();
  } else {
    SF_CHECK(fs::exists(path, ec), "{}: no such model file or folder", path);
    files.weights = path;
    files.config = (fs::path(path).parent_path() / "config.json").string();
  }
  SF_CHECK(fs::exists(files.weights, ec), "{}: model weights not found (expected {})", path,
           files.weights);
  SF_CHECK(fs::exists(files.config, ec), "{}: model config not found (expected {} beside the weights)",
           path, files.config);
  return files;
}

void model_save(Model& model, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  SF_CHECK(!ec, "{}: cannot create folder ({})", dir, ec.message());
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const Parameter& p : model.params().all()) {
    Tensor host = p.value;
    if (p.value.device() != Device::cpu) {
      host = Tensor::zeros(p.value.shape(), p.value.dtype());
      model.backend().copy(host, p.value);
    }
    tensors.emplace_back(p.name, host);
  }
  const std::map<std::string, std::string> metadata{
      {"format", "pt"}, {"stagformer_config", config_to_json(model.config()).dump()}};
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, metadata);
  config_save(model.config(), (fs::path(dir) / "config.json").string());
}

ModelConfig model_load_config(const std::string& path) { return config_load(model_files(path).config); }

void model_weights_check(const std::string& weights_path, const ModelConfig& config) {
  const SafetensorsHeader header = safetensors_read_header(weights_path);
  int64_t values = 0;  // exact: the sum of counts is at most the file's size in bytes
  for (const auto& [name, entry] : header.entries) values += shape_numel(entry.shape);
  const int64_t parameters = parameter_counts_for(config).at("total");
  SF_CHECK(values == parameters,
           "{}: the file holds {} values in {} tensors, but its config describes a model of {} "
           "parameters (d_model {}, {} x {} layers, vocab {}): the config does not belong to "
           "these weights",
           weights_path, values, header.entries.size(), parameters, config.d_model,
           config.n_stacks, config.layers_per_stack, config.vocab_size);
}

void model_load_weights(Model& model, const std::string& weights_path) {
  SafetensorsFile file(weights_path);
  for (const std::string& name : file.names())
    SF_CHECK(model.params().contains(name),
             "{}: tensor '{}' is not a parameter of this model (config mismatch?)", weights_path,
             name);
  // The masters change (even if a later tensor fails to load): the next forward must refresh
  // the mixed-precision working copies, whatever the last optimizer step wrote into them.
  model.params().invalidate_working_copies();
  for (Parameter& p : model.params().all()) {
    SF_CHECK(file.has(p.name), "{}: missing tensor '{}'", weights_path, p.name);
    if (p.value.device() == Device::cpu) {
      file.load_into(p.name, p.value);
    } else {
      Tensor host = Tensor::zeros(p.value.shape(), p.value.dtype());
      file.load_into(p.name, host);
      model.backend().copy(p.value, host);
    }
  }
}

}  // namespace sf
