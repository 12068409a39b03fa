// shell.cpp — a shell command's exit code, output and duration (popen).
#include "support/shell.h"

#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>

#include "core/error.h"

namespace sf::test {

ShellResult run_shell(const std::string& command) {
  const auto t0 = std::chrono::steady_clock::now();
  std::FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  SF_CHECK(pipe != nullptr, "popen failed for: {}", command);
  std::string output;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()};
}

}  // namespace sf::test
