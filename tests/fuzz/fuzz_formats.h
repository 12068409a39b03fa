// fuzz_formats.h — input layouts shared by the harnesses and make_seeds.cpp, so that the seeds
// written by our own writers are exactly what the harnesses read.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "model/config.h"
#include "../support/tiny_config.h"

namespace sf::fuzz {

// The model of fuzz_checkpoint: the smallest config that still has every kind of parameter
// (two stacks, so cross-attention; linear combination, so combine.alpha).
inline ModelConfig checkpoint_model_config() {
  ModelConfig c = test::tiny_config();
  c.n_stacks = 2;
  c.layers_per_stack = 1;
  c.combine = CombineMode::linear;
  c.validate("fuzz checkpoint config");
  return c;
}

// fuzz_checkpoint's input holds the files of a run folder's checkpoint, in this order: every
// file but the last as libFuzzer's FuzzedDataProvider::ConsumeRandomLengthString reads it
// (a backslash doubles a backslash; a backslash followed by any other byte ends the file), the
// last one as the remaining bytes.
inline constexpr std::array<std::string_view, 5> kCheckpointFiles = {
    "checkpoints/latest.json", "checkpoints/step_00000001/config.json",
    "checkpoints/step_00000001/state.json", "checkpoints/step_00000001/model.safetensors",
    "checkpoints/step_00000001/optimizer.safetensors"};

// The container of kCheckpointFiles from the files' contents (in that order).
inline std::string checkpoint_container(const std::vector<std::string>& contents) {
  std::string out;
  for (size_t i = 0; i < contents.size(); ++i) {
    if (i + 1 == contents.size()) {
      out += contents[i];
      break;
    }
    for (char c : contents[i]) {
      out += c;
      if (c == '\\') out += '\\';
    }
    out += "\\\n";  // end of this file
  }
  return out;
}

// fuzz_prepare: the first input byte picks the options, the rest is the text file. Shard sizes
// are small enough for several shards per input, large enough that writing them (each an atomic
// file with fsyncs) does not dominate.
struct PrepareVariant {
  const char* tokenizer;     // "byte" or "gpt2" (the small ranks file of the harness)
  const char* doc_boundary;  // "" = one document per file
  double val_fraction;
  int64_t shard_tokens;
};
inline constexpr std::array<PrepareVariant, 8> kPrepareVariants = {{
    {"byte", "", 0.0, 1000},
    {"byte", "^CHAPTER ", 0.5, 1000},
    {"byte", "^$", 0.3, 300},
    {"byte", "^", 0.0, 97},
    {"gpt2", "", 0.0, 1000},
    {"gpt2", "^CHAPTER ", 0.5, 1000},
    {"gpt2", "^\\s*$", 0.2, 200},
    {"gpt2", "^[A-Z]", 0.9, 61},
}};

// The small GPT-2 ranks file fuzz_prepare uses: the first lines of r50k_base.tiktoken (its
// ranks are in file order, and ranks 0..255 are the single bytes), so loading it per input is
// cheap while encoding still merges.
inline constexpr size_t kPrepareRanksLines = 2000;

}  // namespace sf::fuzz
