// fuzz_checkpoint.cpp — fuzzes the training-checkpoint restore (checkpoint_load,
// train/checkpoint.h) with every file of a checkpoint from the input: latest.json, config.json,
// state.json, model.safetensors and optimizer.safetensors, split out of the input as
// fuzz_formats.h describes and written into one scratch run folder per process. They are loaded
// into a tiny CPU model and its AdamW, built once.
//
// fuzz-dict: json safetensors config checkpoint   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <fuzzer/FuzzedDataProvider.h>

#include <memory>

#include "cpu/cpu_backend.h"
#include "fuzz_formats.h"
#include "fuzz_util.h"
#include "train/adamw.h"
#include "train/checkpoint.h"

namespace {

struct Target {
  sf::CpuBackend backend;
  sf::Model model{sf::fuzz::checkpoint_model_config(), backend};
  sf::AdamW optimizer{backend, model.params()};
};
Target* target = nullptr;
std::string run_dir;
std::vector<std::string> file_paths;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  target = new Target;
  run_dir = sf::fuzz::scratch_path("run/.keep");
  run_dir = std::filesystem::path(run_dir).parent_path().string();
  for (std::string_view f : sf::fuzz::kCheckpointFiles)
    file_paths.push_back(sf::fuzz::scratch_path("run/" + std::string(f)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider input(data, size);
  for (size_t i = 0; i < file_paths.size(); ++i) {
    const std::string contents = i + 1 < file_paths.size() ? input.ConsumeRandomLengthString()
                                                           : input.ConsumeRemainingBytesAsString();
    sf::fuzz::write_bytes(file_paths[i], contents);
  }
  sf::fuzz::run_loader("checkpoint_load", [&] {
    const sf::TrainingState state = sf::checkpoint_load(run_dir, target->model, target->optimizer);
    sf::fuzz::require(target->optimizer.step_count() >= 0, "the restored AdamW step is >= 0");
    (void)state;
  });
  return 0;
}
