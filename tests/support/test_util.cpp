// test_util.cpp — temp folders for tests.
#include "support/test_util.h"

#include <unistd.h>

#include <filesystem>

namespace sf::test {

namespace fs = std::filesystem;

std::string fresh_temp_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("sf_test_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

}  // namespace sf::test
