// openai_request.h — the bodies of OpenAI's POST /v1/completions and /v1/chat/completions,
// parsed and checked into typed requests for `stagformer serve` (docs/serving.md).
//
// Decisions (docs/serving.md, "Requests"):
//   * Unknown fields are refused (400 naming the field), so a misspelt option is never silently
//     ignored. Fields of OpenAI's API this server does not implement are accepted only at their
//     neutral value (n = 1, best_of = 1, echo = false, logprobs null, suffix null, presence and
//     frequency penalties 0, logit_bias empty), and `user` is accepted and ignored.
//   * Sampling defaults are OpenAI's (temperature 1, top_p 1; top_k, an extension llama.cpp's
//     server also takes, off), not the CLI's llama.cpp defaults: clients written for OpenAI
//     expect them. temperature 0 is greedy.
//   * max_tokens: OpenAI's defaults, 16 for a completion, none for a chat (until end-of-text, a
//     stop string or the context is full); null means none. Whether it fits the context is
//     checked once the prompt is tokenised (check_fits_context).
//   * One prompt per request: a prompt array holds one string or one list of token ids.
// Every error is an ApiError (400) naming the field and what was expected.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/api_error.h"

namespace sf::serve {

struct RequestSampling {
  double temperature = 1.0;  // [0, 2]; 0 = greedy
  int top_k = 0;             // >= 0; 0 = off
  double top_p = 1.0;        // (0, 1]; 1 = off
  std::optional<uint64_t> seed;  // none: the server draws one
};

// What both endpoints share.
struct GenerationRequest {
  std::string model;                 // as the client named it ("" when absent)
  std::optional<int64_t> max_tokens;  // none: until end-of-text, a stop string or a full context
  RequestSampling sampling;
  std::vector<std::string> stop;     // up to 4 non-empty strings
  bool stream = false;
  bool include_usage = false;        // stream_options.include_usage: a last chunk with the usage
};

struct CompletionRequest {
  GenerationRequest generation;
  // The prompt: text, or token ids when prompt_is_ids.
  bool prompt_is_ids = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
};

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

struct ChatRequest {
  GenerationRequest generation;
  std::vector<ChatMessage> messages;  // at least one
};

// A request body as a JSON object; ApiError (400) when it is not valid JSON (naming the byte) or
// not an object. Every endpoint that takes a JSON body reads it through this.
nlohmann::json parse_json_object(std::string_view body);

// Throw ApiError (400) for a body that is not a JSON object, an unknown field, a field of the
// wrong type or out of range, naming it.
CompletionRequest parse_completion_request(std::string_view body);
ChatRequest parse_chat_request(std::string_view body);

// The prompt's tokens and max_tokens against the model's context: a prompt longer than the
// context (param "prompt" or "messages"), or max_tokens more than the context has left after it
// (param "max_tokens"), is a 400 that says both numbers.
void check_fits_context(int64_t prompt_tokens, const std::optional<int64_t>& max_tokens,
                        int64_t context, const std::string& prompt_param);

}  // namespace sf::serve
