// openai_response.h — the JSON bodies `stagformer serve` answers with, in OpenAI's formats:
// a whole completion (object "text_completion") or chat completion ("chat.completion"), the
// chunks of a streamed one ("text_completion" / "chat.completion.chunk") sent as server-sent
// events, the usage chunk (include_usage) and the closing "data: [DONE]".
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace sf::serve {

enum class Endpoint { completions, chat };

struct ResponseHeader {
  std::string id;       // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;  // Unix seconds
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

// "stop" (end-of-text or a stop string) or "length" (max_tokens, or the context is full).
nlohmann::json completion_body(Endpoint endpoint, const ResponseHeader& header, const std::string& text,
                               const std::string& finish_reason, const Usage& usage);

// One streamed chunk: `text` (may be empty) and, on the last one, the finish reason. A chat
// stream's first chunk carries the role (role_chunk = true).
nlohmann::json completion_chunk(Endpoint endpoint, const ResponseHeader& header, const std::string& text,
                                const std::optional<std::string>& finish_reason, bool role_chunk = false);

// The last chunk of a stream that asked for usage: no choices, the usage.
nlohmann::json usage_chunk(Endpoint endpoint, const ResponseHeader& header, const Usage& usage);

// A body as JSON text. Generated text need not be valid UTF-8 (a byte-level model can produce
// any byte; a character can be cut by max_tokens): bytes that are not valid UTF-8 become U+FFFD,
// as JSON requires. The same bytes give the same text streamed or whole (the stream releases
// text only at character boundaries, or bytes that can never complete a character).
std::string to_json_text(const nlohmann::json& body);

// "data: <json>\n\n", and the stream's end "data: [DONE]\n\n".
std::string sse_event(const nlohmann::json& chunk);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace sf::serve
