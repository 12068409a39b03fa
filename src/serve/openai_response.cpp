// openai_response.cpp — response and stream-chunk bodies (openai_response.h).
#include "serve/openai_response.h"

namespace sf::serve {

using nlohmann::json;

namespace {

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json head(const ResponseHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

}  // namespace

json completion_body(Endpoint endpoint, const ResponseHeader& header, const std::string& text,
                     const std::string& finish_reason, const Usage& usage) {
  json body = head(header, endpoint == Endpoint::chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}, {"finish_reason", finish_reason}};
  if (endpoint == Endpoint::chat) {
    choice["message"] = {{"role", "assistant"}, {"content", text}};
    choice["logprobs"] = nullptr;
  } else {
    choice["text"] = text;
    choice["logprobs"] = nullptr;
  }
  body["choices"] = json::array({choice});
  body["usage"] = usage_json(usage);
  return body;
}

json completion_chunk(Endpoint endpoint, const ResponseHeader& header, const std::string& text,
                      const std::optional<std::string>& finish_reason, bool role_chunk) {
  json body = head(header, endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}, {"logprobs", nullptr}};
  choice["finish_reason"] = finish_reason ? json(*finish_reason) : json(nullptr);
  if (endpoint == Endpoint::chat) {
    json delta = json::object();
    if (role_chunk) delta["role"] = "assistant";
    if (!text.empty() || !role_chunk) delta["content"] = text;
    if (finish_reason && text.empty()) delta = json::object();
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  body["choices"] = json::array({choice});
  return body;
}

json usage_chunk(Endpoint endpoint, const ResponseHeader& header, const Usage& usage) {
  json body = head(header, endpoint == Endpoint::chat ? "chat.completion.chunk" : "text_completion");
  body["choices"] = json::array();
  body["usage"] = usage_json(usage);
  return body;
}

std::string to_json_text(const json& body) {
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_event(const json& chunk) { return "data: " + to_json_text(chunk) + "\n\n"; }

}  // namespace sf::serve
