// openai_request.cpp — parsing and checking the completion and chat request bodies.
#include "serve/openai_request.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace sf::serve {

using nlohmann::json;

json error_body(const ApiError& error) {
  json e = {{"message", error.what()}, {"type", error.type()}};
  e["param"] = error.param().empty() ? json(nullptr) : json(error.param());
  e["code"] = error.code().empty() ? json(nullptr) : json(error.code());
  return json{{"error", e}};
}

namespace {

// The JSON type of a value, as an error names it.
std::string type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer() || v.is_number_unsigned()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "an array";
  return "an object";
}

}  // namespace

json parse_json_object(std::string_view body) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    throw ApiError(400, fmt::format("the request body is not valid JSON (at byte {}): {}", e.byte,
                                    e.what()));
  }
  if (!j.is_object())
    throw ApiError(400, fmt::format("the request body must be a JSON object, got {}", type_name(j)));
  return j;
}

namespace {

void check_known(const json& body, const std::set<std::string>& known) {
  for (const auto& [key, value] : body.items())
    if (!known.count(key)) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      throw bad_field(key, fmt::format("unknown field '{}' (this server takes: {})", key, list));
    }
}

double number_in(const json& v, const std::string& name, double lo, double hi, bool lo_open) {
  if (!v.is_number())
    throw bad_field(name, fmt::format("'{}' must be a number, got {}", name, type_name(v)));
  const double x = v.get<double>();
  if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
    throw bad_field(name, fmt::format("'{}' must be in {}{}, {}], got {}", name, lo_open ? "(" : "[",
                                      lo, hi, x));
  return x;
}

int64_t integer_at_least(const json& v, const std::string& name, int64_t lo) {
  if (!v.is_number_integer() && !v.is_number_unsigned())
    throw bad_field(name, fmt::format("'{}' must be an integer, got {}", name, type_name(v)));
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    throw bad_field(name, fmt::format("'{}' is too large", name));
  const int64_t x = v.get<int64_t>();
  if (x < lo) throw bad_field(name, fmt::format("'{}' must be >= {}, got {}", name, lo, x));
  return x;
}

bool boolean(const json& v, const std::string& name) {
  if (!v.is_boolean())
    throw bad_field(name, fmt::format("'{}' must be true or false, got {}", name, type_name(v)));
  return v.get<bool>();
}

// An OpenAI field this server does not implement: accepted at its neutral value only.
void neutral_only(const json& body, const std::string& name, const std::function<bool(const json&)>& neutral,
                  const std::string& what) {
  auto it = body.find(name);
  if (it != body.end() && !neutral(*it))
    throw bad_field(name, fmt::format("'{}' is not supported: only {} (got {})", name, what, it->dump()));
}

const std::set<std::string> kShared = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "stream",
    "stream_options", "n", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
    "user"};

GenerationRequest parse_generation(const json& body, std::optional<int64_t> default_max_tokens,
                                   const char* max_tokens_name) {
  GenerationRequest g;
  g.max_tokens = default_max_tokens;
  if (auto it = body.find("model"); it != body.end()) {
    if (!it->is_string()) throw bad_field("model", fmt::format("'model' must be a string, got {}", type_name(*it)));
    g.model = it->get<std::string>();
  }
  if (auto it = body.find(max_tokens_name); it != body.end())
    g.max_tokens = it->is_null() ? std::nullopt : std::optional<int64_t>(integer_at_least(*it, max_tokens_name, 1));
  if (auto it = body.find("temperature"); it != body.end() && !it->is_null())
    g.sampling.temperature = number_in(*it, "temperature", 0.0, 2.0, false);
  if (auto it = body.find("top_p"); it != body.end() && !it->is_null())
    g.sampling.top_p = number_in(*it, "top_p", 0.0, 1.0, true);
  if (auto it = body.find("top_k"); it != body.end() && !it->is_null()) {
    const int64_t k = integer_at_least(*it, "top_k", 0);
    g.sampling.top_k = static_cast<int>(std::min<int64_t>(k, std::numeric_limits<int>::max()));
  }
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    if (!it->is_number_integer() && !it->is_number_unsigned())
      throw bad_field("seed", fmt::format("'seed' must be an integer, got {}", type_name(*it)));
    g.sampling.seed = it->is_number_unsigned() ? it->get<uint64_t>() : static_cast<uint64_t>(it->get<int64_t>());
  }
  if (auto it = body.find("stop"); it != body.end() && !it->is_null()) {
    const json stops = it->is_string() ? json::array({*it}) : *it;
    if (!stops.is_array())
      throw bad_field("stop", fmt::format("'stop' must be a string or an array of strings, got {}", type_name(*it)));
    if (stops.size() > 4) throw bad_field("stop", fmt::format("'stop' holds at most 4 strings, got {}", stops.size()));
    for (const json& s : stops) {
      if (!s.is_string() || s.get<std::string>().empty())
        throw bad_field("stop", fmt::format("every 'stop' entry must be a non-empty string, got {}", s.dump()));
      g.stop.push_back(s.get<std::string>());
    }
  }
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) g.stream = boolean(*it, "stream");
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object())
      throw bad_field("stream_options", fmt::format("'stream_options' must be an object, got {}", type_name(*it)));
    for (const auto& [key, value] : it->items()) {
      if (key != "include_usage")
        throw bad_field("stream_options." + key, fmt::format("unknown field 'stream_options.{}' (this server takes: include_usage)", key));
      g.include_usage = boolean(value, "stream_options.include_usage");
    }
    if (!g.stream) throw bad_field("stream_options", "'stream_options' is only allowed with \"stream\": true");
  }
  auto is_one = [](const json& v) { return v.is_null() || (v.is_number_integer() && v.get<int64_t>() == 1); };
  auto is_zero = [](const json& v) { return v.is_null() || (v.is_number() && v.get<double>() == 0.0); };
  auto is_empty = [](const json& v) { return v.is_null() || (v.is_object() && v.empty()); };
  neutral_only(body, "n", is_one, "n = 1");
  neutral_only(body, "presence_penalty", is_zero, "0");
  neutral_only(body, "frequency_penalty", is_zero, "0");
  neutral_only(body, "logit_bias", is_empty, "an empty object");
  if (auto it = body.find("user"); it != body.end() && !it->is_string() && !it->is_null())
    throw bad_field("user", fmt::format("'user' must be a string, got {}", type_name(*it)));
  return g;
}

// Token ids of a prompt: each an integer in [0, 2^31); the vocabulary is checked later.
std::vector<int32_t> token_ids(const json& a) {
  std::vector<int32_t> ids;
  for (size_t i = 0; i < a.size(); ++i) {
    const json& v = a[i];
    if (!(v.is_number_integer() || v.is_number_unsigned()) ||
        (v.is_number_integer() && (v.get<int64_t>() < 0 || v.get<int64_t>() > std::numeric_limits<int32_t>::max())) ||
        (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())))
      throw bad_field("prompt", fmt::format("token id {} of 'prompt' must be an integer in [0, 2^31), got {}", i, v.dump()));
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

}  // namespace

CompletionRequest parse_completion_request(std::string_view body_text) {
  const json body = parse_json_object(body_text);
  std::set<std::string> known = kShared;
  known.insert({"prompt", "best_of", "echo", "suffix"});
  check_known(body, known);
  CompletionRequest r;
  r.generation = parse_generation(body, 16, "max_tokens");
  neutral_only(body, "best_of", [](const json& v) { return v.is_null() || (v.is_number_integer() && v.get<int64_t>() == 1); }, "best_of = 1");
  neutral_only(body, "echo", [](const json& v) { return v.is_null() || (v.is_boolean() && !v.get<bool>()); }, "false");
  neutral_only(body, "suffix", [](const json& v) { return v.is_null(); }, "null");
  neutral_only(body, "logprobs", [](const json& v) { return v.is_null() || (v.is_number_integer() && v.get<int64_t>() == 0); }, "null or 0");
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null()) throw bad_field("prompt", "'prompt' is required (text or token ids)");
  json prompt = *it;
  // [text] and [[ids]]: one prompt only.
  if (prompt.is_array() && !prompt.empty() && (prompt[0].is_string() || prompt[0].is_array())) {
    if (prompt.size() != 1)
      throw bad_field("prompt", fmt::format("one prompt per request: 'prompt' holds {} prompts", prompt.size()));
    prompt = json(prompt[0]);
  }
  if (prompt.is_string()) {
    r.prompt_text = prompt.get<std::string>();
  } else if (prompt.is_array()) {
    if (prompt.empty()) throw bad_field("prompt", "'prompt' is an empty list of token ids");
    r.prompt_is_ids = true;
    r.prompt_ids = token_ids(prompt);
  } else {
    throw bad_field("prompt", fmt::format("'prompt' must be a string or an array of token ids, got {}", type_name(prompt)));
  }
  return r;
}

ChatRequest parse_chat_request(std::string_view body_text) {
  const json body = parse_json_object(body_text);
  std::set<std::string> known = kShared;
  known.insert({"messages", "max_completion_tokens", "top_logprobs"});
  check_known(body, known);
  if (body.contains("max_tokens") && body.contains("max_completion_tokens"))
    throw bad_field("max_completion_tokens", "give 'max_tokens' or 'max_completion_tokens', not both");
  ChatRequest r;
  r.generation = parse_generation(body, std::nullopt,
                                  body.contains("max_completion_tokens") ? "max_completion_tokens" : "max_tokens");
  neutral_only(body, "logprobs", [](const json& v) { return v.is_null() || (v.is_boolean() && !v.get<bool>()); }, "false");
  neutral_only(body, "top_logprobs", [](const json& v) { return v.is_null(); }, "null");
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array() || it->empty())
    throw bad_field("messages", "'messages' is required: a non-empty array of {role, content} objects");
  for (size_t i = 0; i < it->size(); ++i) {
    const json& m = (*it)[i];
    const std::string where = fmt::format("messages[{}]", i);
    if (!m.is_object()) throw bad_field(where, fmt::format("'{}' must be an object, got {}", where, type_name(m)));
    for (const auto& [key, value] : m.items())
      if (key != "role" && key != "content" && key != "name")
        throw bad_field(where + "." + key, fmt::format("unknown field '{}.{}' (a message takes: role, content, name)", where, key));
    ChatMessage message;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string() ||
        (*role != "system" && *role != "user" && *role != "assistant"))
      throw bad_field(where + ".role", fmt::format("'{}.role' must be \"system\", \"user\" or \"assistant\"", where));
    message.role = role->get<std::string>();
    auto content = m.find("content");
    if (content == m.end() || content->is_null())
      throw bad_field(where + ".content", fmt::format("'{}.content' is required", where));
    if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array()) {  // text parts: [{"type": "text", "text": ...}]
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
          throw bad_field(where + ".content", fmt::format("'{}.content' parts must be {{\"type\": \"text\", \"text\": ...}} (this server takes text only)", where));
        message.content += part["text"].get<std::string>();
      }
    } else {
      throw bad_field(where + ".content", fmt::format("'{}.content' must be a string or an array of text parts, got {}", where, type_name(*content)));
    }
    if (auto name = m.find("name"); name != m.end() && !name->is_string())
      throw bad_field(where + ".name", fmt::format("'{}.name' must be a string", where));
    r.messages.push_back(std::move(message));
  }
  return r;
}

void check_fits_context(int64_t prompt_tokens, const std::optional<int64_t>& max_tokens,
                        int64_t context, const std::string& prompt_param) {
  if (prompt_tokens > context)
    throw bad_field(prompt_param, fmt::format("the prompt has {} tokens but the server's context is {}",
                                              prompt_tokens, context));
  // The last token is predicted from a full context (infer/generator.h).
  const int64_t room = context - prompt_tokens + 1;
  if (max_tokens && *max_tokens > room)
    throw bad_field("max_tokens", fmt::format("max_tokens {} does not fit: the prompt has {} tokens and "
                                              "the context {}, which leaves room for {}",
                                              *max_tokens, prompt_tokens, context, room));
}

}  // namespace sf::serve
