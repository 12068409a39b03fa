// test_util.h — small helpers shared by the test suites: error messages and temp folders.
#pragma once

#include <string>

#include "core/error.h"

namespace sf::test {

// The message of the sf::Error that fn() throws, or "" when it throws none.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A fresh empty folder under the system temp dir, unique to this process and `name`.
std::string fresh_temp_dir(const std::string& name);

}  // namespace sf::test
