// chat_template.h — how /v1/chat/completions turns messages into one prompt for a base model
// (docs/serving.md, "The chat template"). The models this project trains are base models with
// no chat tokens, so the template is plain text a base model continues naturally:
//
//   <system content>\n\n          (each system message, in place)
//   User: <content>\n
//   Assistant: <content>\n
//   ...
//   Assistant:
//
// The prompt ends with "Assistant:" (no space: with byte-pair tokenizers the reply's first word
// carries its own leading space, which the server drops from the reply), and "\nUser:" is added
// to the request's stop strings so that the model stops before writing the next user turn.
#pragma once

#include <string>
#include <vector>

#include "serve/openai_request.h"

namespace sf::serve {

std::string chat_prompt(const std::vector<ChatMessage>& messages);

// The stop strings the template adds to a chat request's own.
std::vector<std::string> chat_template_stops();

}  // namespace sf::serve
