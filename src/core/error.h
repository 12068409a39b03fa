// error.h — the one exception type of stagformer and the check macro that raises it.
//
// Every failure a user can cause (bad file, bad config, bad argument) is reported as an
// sf::Error whose message names the problem and, where there is one, the file. Internal
// invariant violations use the same type so that the CLI prints one clear line either way.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sf {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

[[noreturn]] inline void fail(const std::string& message) { throw Error(message); }

}  // namespace sf

// SF_CHECK(condition, "format {}", args...): throws sf::Error with the formatted message.
#define SF_CHECK(condition, ...)                          \
  do {                                                    \
    if (!(condition)) ::sf::fail(fmt::format(__VA_ARGS__)); \
  } while (0)
