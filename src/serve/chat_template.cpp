// chat_template.cpp — the plain chat template for base models (chat_template.h).
#include "serve/chat_template.h"

namespace sf::serve {

std::string chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string prompt;
  for (const ChatMessage& m : messages) {
    if (m.role == "system") prompt += m.content + "\n\n";
    else if (m.role == "user") prompt += "User: " + m.content + "\n";
    else prompt += "Assistant: " + m.content + "\n";
  }
  return prompt + "Assistant:";
}

std::vector<std::string> chat_template_stops() { return {"\nUser:"}; }

}  // namespace sf::serve
