// stop_strings.h — finding a request's stop strings in generated text as it streams.
//
// Text arrives in pieces (the bytes of each new token); a stop string may span pieces. The
// matcher holds back the shortest tail that could still be the start of a stop string, releases
// everything before it, and on a match releases the text before the match and nothing after
// (OpenAI's rule: the stop string itself is not returned). So the streamed pieces always
// concatenate to the non-streamed text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sf::serve {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds generated text; returns the text that is now safe to emit. After a match, stopped() is
  // true and later calls return nothing.
  std::string feed(std::string_view text);
  // The text still held back (at the end of generation, when no stop string matched: emit it).
  std::string flush();
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;
  bool stopped_ = false;
};

}  // namespace sf::serve
