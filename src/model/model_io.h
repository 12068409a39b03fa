// model_io.h — model files on disk: weights (model.safetensors) and config.json beside them.
//
// A MODEL argument is either a folder (a run folder or an exported model) holding
// model.safetensors + config.json, or a path to a .safetensors file with config.json in the same
// folder. Weights are stored in the model's dtype (F32 for every trained model) under the names
// of model/weights.h, so PyTorch users can open them with the `safetensors` package alone; the
// config is also embedded in the safetensors metadata ("stagformer_config") for self-contained
// files. Both files are written atomically.
#pragma once

#include <string>

#include "model/config.h"
#include "model/model.h"

namespace sf {

struct ModelFiles {
  std::string weights;  // .../model.safetensors
  std::string config;   // .../config.json
};

// Resolves a MODEL argument (folder or .safetensors file); errors name the path when the
// expected files are missing.
ModelFiles model_files(const std::string& path);

// Writes `<dir>/model.safetensors` and `<dir>/config.json` (creating `dir` if needed).
void model_save(Model& model, const std::string& dir);

// Reads the config of a MODEL argument.
ModelConfig model_load_config(const std::string& path);

// Checks, from the file's header alone, that the weights file holds exactly as many values as
// the config's model has parameters. Called before the model is built: a config that does not
// belong to the weights (or a hostile one) is refused before its model is allocated, so the
// memory a model load takes is bounded by the size of the weights file.
void model_weights_check(const std::string& weights_path, const ModelConfig& config);

// Loads weights into an already constructed model: every parameter must be present with its
// exact shape and dtype and no unknown tensor may be in the file (errors name the file and the
// tensor).
void model_load_weights(Model& model, const std::string& weights_path);

}  // namespace sf
