// test_util.h — small helpers shared by the test suites: error messages, temp folders, thread
// counts.
#pragma once

#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

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

// Expects `action` to throw sf::Error whose message contains every fragment (gtest failures
// name the missing fragment and the message).
template <class Action>
void expect_error(Action action, const std::vector<std::string>& fragments) {
  try {
    action();
    ADD_FAILURE() << "no error; expected one containing '" << fragments.front() << "'";
  } catch (const Error& error) {
    const std::string message = error.what();
    for (const std::string& fragment : fragments)
      EXPECT_NE(message.find(fragment), std::string::npos)
          << "'" << fragment << "' not in: " << message;
  }
}

// Runs fn() with OpenMP regions of `threads` threads, then restores the previous count: the
// CPU kernels' results must not depend on it.
template <class Fn>
void with_threads(int threads, Fn&& fn) {
  const int before = omp_get_max_threads();
  omp_set_num_threads(threads);
  try {
    fn();
  } catch (...) {
    omp_set_num_threads(before);
    throw;
  }
  omp_set_num_threads(before);
}

// A fresh empty folder under the system temp dir, unique to this process and `name`.
std::string fresh_temp_dir(const std::string& name);

}  // namespace sf::test
