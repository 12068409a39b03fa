// model_run_options.h — what the commands that run a trained model (generate, serve) share: its
// options (-m, --device, --precision, -t, --tokenizer, --vocab) and loading it with them.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "cli_common.h"
#include "core/backend.h"
#include "infer/generator.h"

namespace sf::cli {

struct ModelRunArgs {
  std::string model_path, device = "cpu", precision, tokenizer, vocab;
  int threads = 0;
};

// Adds the options above to `cmd` (-m required), writing into `args`.
void add_model_run_options(CLI::App* cmd, ModelRunArgs& args);

// The threads chosen (set_threads), the backend and the model loaded on it for inference in the
// compute dtype of --device and --precision. The backend outlives the model (member order).
struct ModelToRun {
  ThreadChoice threads;
  std::unique_ptr<Backend> backend;
  LoadedModel loaded;
};
ModelToRun load_model_to_run(const ModelRunArgs& args);

}  // namespace sf::cli
