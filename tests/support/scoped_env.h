// scoped_env.h — an environment variable set for one scope of a test and restored after (the
// A/B switches the engine reads at each use, e.g. SF_STEP_PROJECTION).
#pragma once

#include <cstdlib>
#include <optional>
#include <string>

namespace sf::test {

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (old_) setenv(name_.c_str(), old_->c_str(), 1);
    else unsetenv(name_.c_str());
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

}  // namespace sf::test
