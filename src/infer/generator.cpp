// generator.cpp — full-recompute generation loop and model loading for inference.
#include "infer/generator.h"

#include <chrono>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "infer/decoder.h"
#include "data/tokenizer_files.h"

namespace sf {

namespace fs = std::filesystem;

std::string to_string(StopReason reason) {
  switch (reason) {
    case StopReason::length: return "length";
    case StopReason::end_of_text: return "end-of-text";
    case StopReason::context_full: return "context full";
  }
  return "unknown";
}

Generator::Generator(Model& model, const Tokenizer& tokenizer)
    : model_(model), tokenizer_(tokenizer) {
  SF_CHECK(tokenizer.vocab_size() <= model.config().vocab_size,
           "the tokenizer '{}' has {} ids but the model's vocab_size is {}: they do not belong "
           "together",
           tokenizer.name(), tokenizer.vocab_size(), model.config().vocab_size);
  host_row_ = Tensor::zeros({model.config().vocab_size}, model.dtype());
}

void Generator::check_prompt(const std::vector<int32_t>& prompt) const {
  SF_CHECK(!prompt.empty(),
           "the prompt is empty: give at least one token (an empty prompt text starts from "
           "end-of-text)");
  const int64_t context = model_.config().max_seq_len;
  SF_CHECK(static_cast<int64_t>(prompt.size()) <= context,
           "the prompt has {} tokens but the model's context is {}", prompt.size(), context);
  const int64_t model_vocab = model_.config().vocab_size;
  const int32_t tokenizer_vocab = tokenizer_.vocab_size();
  for (size_t i = 0; i < prompt.size(); ++i) {
    const int32_t id = prompt[i];
    SF_CHECK(id >= 0 && id < model_vocab,
             "prompt token {} (position {}) is outside the model's vocabulary [0, {})", id, i,
             model_vocab);
    SF_CHECK(id < tokenizer_vocab,
             "prompt token {} (position {}) is a padding id with no text: the tokenizer '{}' has "
             "{} ids, the model {}",
             id, i, tokenizer_.name(), tokenizer_vocab, model_vocab);
  }
}

namespace {

// Masks the ids that must never be drawn: padding ids beyond the tokenizer, and end-of-text
// when it is ignored.
template <class T>
void mask_logits(T* row, int64_t model_vocab, int32_t tokenizer_vocab, int32_t eot,
                 bool ignore_eos) {
  const T minus_inf = -std::numeric_limits<T>::infinity();
  for (int64_t i = tokenizer_vocab; i < model_vocab; ++i) row[i] = minus_inf;
  if (ignore_eos) row[eot] = minus_inf;
}

}  // namespace

GenerationResult Generator::generate(const std::vector<int32_t>& prompt,
                                     const GenerationOptions& options, Sampler& sampler,
                                     const std::function<void(int32_t)>& on_token) {
  check_prompt(prompt);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const int64_t context_limit = model_.config().max_seq_len;
  const int64_t vocab = model_.config().vocab_size;
  const int32_t eot = tokenizer_.eot_id();
  const int64_t limit = options.max_new_tokens < 0 ? std::numeric_limits<int64_t>::max()
                                                   : options.max_new_tokens;

  GenerationResult result;
  std::vector<int32_t> context = prompt;
  // The next-token logits: recomputed over the whole context ("full"), or from the incremental
  // decoder: prefill of the prompt first, then one decode step per generated token.
  std::unique_ptr<Decoder> decoder;
  if (options.decode) decoder = std::make_unique<Decoder>(model_, 1, *options.decode);
  while (true) {
    if (static_cast<int64_t>(result.tokens.size()) >= limit) {
      result.stop = StopReason::length;
      break;
    }
    // The token sampled last need not be fed while no further token is wanted, so the context
    // may reach max_seq_len + 1 ids; feeding them would exceed the model's context.
    const int64_t T = static_cast<int64_t>(context.size());
    if (T > context_limit) {
      result.stop = StopReason::context_full;
      break;
    }
    if (decoder) {
      if (result.tokens.empty()) decoder->prefill(0, context);
      else decoder->step(std::span(&context.back(), 1));
      model_.backend().copy(host_row_, decoder->logits().view({vocab}));
    } else {
      Tensor tokens = Tensor::zeros({1, T}, DType::i32);
      std::copy(context.begin(), context.end(), tokens.data<int32_t>());
      model_.forward(tokens);
      const Tensor last = model_.logits().view({T, vocab}).select(T - 1);
      model_.backend().copy(host_row_, last);
    }

    int32_t next;
    if (host_row_.dtype() == DType::f64) {
      double* row = host_row_.data<double>();
      mask_logits(row, vocab, tokenizer_.vocab_size(), eot, options.ignore_eos);
      next = sampler.sample(row, vocab);
    } else {
      float* row = host_row_.data<float>();
      mask_logits(row, vocab, tokenizer_.vocab_size(), eot, options.ignore_eos);
      next = sampler.sample(row, vocab);
    }
    if (result.tokens.empty())
      result.first_token_seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (next == eot && !options.ignore_eos) {
      result.stop = StopReason::end_of_text;
      break;
    }
    result.tokens.push_back(next);
    context.push_back(next);
    if (on_token) on_token(next);
  }
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return result;
}

std::vector<int32_t> prompt_encode(const Tokenizer& tokenizer, std::string_view text) {
  if (text.empty()) return {tokenizer.eot_id()};
  return tokenizer.encode_with_special(text);
}

std::string model_tokenizer_path(const std::string& model_path) {
  std::error_code ec;
  const fs::path p(model_path);
  const fs::path folder = fs::is_directory(p, ec) ? p : p.parent_path();
  return (folder / "tokenizer.json").string();
}

LoadedModel load_model_for_inference(const std::string& path, Backend& backend,
                                     const std::string& tokenizer, const std::string& ranks_path,
                                     std::optional<DType> compute_dtype) {
  LoadedModel loaded;
  loaded.files = model_files(path);
  loaded.config = config_load(loaded.files.config);

  if (tokenizer == "byte" || tokenizer == "gpt2") {
    const std::string ranks =
        tokenizer == "gpt2" ? (ranks_path.empty() ? default_ranks_path() : ranks_path) : "";
    loaded.tokenizer = make_tokenizer(tokenizer, ranks);
  } else {
    loaded.tokenizer_file = tokenizer.empty() ? model_tokenizer_path(path) : tokenizer;
    std::error_code ec;
    SF_CHECK(fs::exists(loaded.tokenizer_file, ec),
             "{}: no tokenizer description {} (a run folder of `stagformer train` has one); pass "
             "--tokenizer byte|gpt2|TOKENIZER_JSON to say which tokenizer the model uses",
             path, loaded.tokenizer_file);
    loaded.tokenizer = tokenizer_from_spec(tokenizer_spec_load(loaded.tokenizer_file), ranks_path);
  }
  SF_CHECK(loaded.tokenizer->vocab_size() <= loaded.config.vocab_size,
           "{}: the tokenizer '{}' has {} ids but the model's vocab_size is {} ({}): the model "
           "cannot have been trained with it",
           path, loaded.tokenizer->name(), loaded.tokenizer->vocab_size(),
           loaded.config.vocab_size, loaded.files.config);

  model_weights_check(loaded.files.weights, loaded.config);  // before anything is allocated
  loaded.model = std::make_unique<Model>(loaded.config, backend, DType::f32, compute_dtype);
  model_load_weights(*loaded.model, loaded.files.weights);
  return loaded;
}

}  // namespace sf
