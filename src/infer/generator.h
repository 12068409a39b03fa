// generator.h — text generation for one prompt, and loading a MODEL for inference.
//
// Generator runs the sampling loop over the incremental decoder (infer/decoder.h: a prefill of
// the prompt, then one decode step per token, in the schedule GenerationOptions::decode names),
// or, with decode = std::nullopt ("full"), by recomputing Model::forward over the whole context
// for every token: O(T) forward work per token, but exactly the teacher-forced function, the
// reference the incremental decoder is checked against.
//
// Decisions (documented for users in `stagformer generate --help`):
//   * Empty prompt text: generation starts from the end-of-text token alone. Training data
//     separates documents with end-of-text, so "after end-of-text" is "the start of a new
//     document" — the role llama.cpp gives to BOS. Generator itself rejects an empty id list.
//   * Prompt text may contain "<|endoftext|>", which becomes the end-of-text id (the user's own
//     prompt is trusted, unlike training text).
//   * The context limit: a prompt longer than max_seq_len is an error. Generation stops, with
//     StopReason::context_full, once the context holds max_seq_len tokens and the token predicted
//     from that full context has been produced: at most max_seq_len - prompt + 1 new tokens.
//     The model never sees more than max_seq_len tokens at once (no sliding window: the model
//     was not trained for one, and silently shifting positions would change what it computes).
//   * End-of-text stops generation (it is not passed to the callback). With ignore_eos, the
//     end-of-text logit is set to -inf, so it is never drawn and exactly n_new tokens come out
//     (llama.cpp's --ignore-eos).
//   * Ids in [tokenizer vocab, model vocab) are the padding rows of a vocabulary rounded up
//     (50257 -> 50304): they have no text, so their logits are masked and they are never drawn.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/backend.h"
#include "data/tokenizer.h"
#include "infer/decode_schedule.h"
#include "infer/sampler.h"
#include "model/config.h"
#include "model/model.h"
#include "model/model_io.h"

namespace sf {

enum class StopReason {
  length,        // n_new tokens were generated
  end_of_text,   // the model produced end-of-text
  context_full,  // the context reached max_seq_len
};
std::string to_string(StopReason reason);

struct GenerationOptions {
  int64_t max_new_tokens = 128;  // < 0: no limit (until end-of-text or the context is full)
  bool ignore_eos = false;
  // The incremental decoder's schedule (infer/decode_schedule.h); std::nullopt: recompute the
  // whole context for every token instead ("full", the exact reference, O(T^2) work).
  std::optional<DecodeMode> decode = DecodeMode::staggered;
};

struct GenerationResult {
  std::vector<int32_t> tokens;         // generated ids (end-of-text excluded)
  StopReason stop = StopReason::length;
  double seconds = 0.0;                // whole loop, first forward included
  double first_token_seconds = 0.0;    // prompt forward + first sample (time to first token)
};

class Generator {
 public:
  // Keeps references: `model` and `tokenizer` must outlive the generator. The tokenizer must not
  // have more ids than the model (checked).
  Generator(Model& model, const Tokenizer& tokenizer);

  // Generates after `prompt` (ids, non-empty, each in the model's and the tokenizer's vocabulary,
  // at most max_seq_len of them). `on_token` is called with every generated id as soon as it is
  // sampled (end-of-text excluded).
  GenerationResult generate(const std::vector<int32_t>& prompt, const GenerationOptions& options,
                            Sampler& sampler,
                            const std::function<void(int32_t)>& on_token = nullptr);

  // Throws sf::Error for an empty prompt, an id outside the vocabulary (naming the position) or
  // a prompt longer than the context.
  void check_prompt(const std::vector<int32_t>& prompt) const;

 private:
  Model& model_;
  const Tokenizer& tokenizer_;
  Tensor host_row_;  // last-position logits copied to the host, [vocab] in the model's dtype
};

// Prompt text -> ids: "<|endoftext|>" becomes the end-of-text id; empty text gives
// {end-of-text} (see the decisions above).
std::vector<int32_t> prompt_encode(const Tokenizer& tokenizer, std::string_view text);

// A MODEL ready to run: config, model with its weights, and the tokenizer it was trained with.
struct LoadedModel {
  ModelFiles files;
  std::string tokenizer_file;  // the tokenizer.json used ("" when given by kind)
  ModelConfig config;
  std::unique_ptr<Model> model;
  std::unique_ptr<Tokenizer> tokenizer;
};

// Where tokenizer.json of a MODEL argument is: in the folder, or beside the .safetensors file.
std::string model_tokenizer_path(const std::string& model_path);

// Loads config, weights (F32) and tokenizer of a MODEL argument (folder or .safetensors file).
// `tokenizer` overrides the tokenizer.json beside the model: a path to a tokenizer.json, or a
// kind ("byte", "gpt2"); `ranks_path` is the GPT-2 ranks file ("" = the default search).
// Errors: missing files (naming them; a missing tokenizer.json suggests --tokenizer), and a
// tokenizer with more ids than the model's vocab_size.
// `compute_dtype`: the dtype the kernels read (BF16 working copies over F32 masters), as
// Model's constructor takes it; nullopt: F32.
LoadedModel load_model_for_inference(const std::string& path, Backend& backend,
                                     const std::string& tokenizer = "",
                                     const std::string& ranks_path = "",
                                     std::optional<DType> compute_dtype = std::nullopt);

}  // namespace sf
