// python_twin.cpp — the interpreter, torch detection and script runs of python_twin.h.
#include "support/python_twin.h"

#include <cstdlib>
#include <vector>

namespace sf::test {

namespace {

std::string shell_quote(const std::string& s) {
  std::string quoted = "'";
  for (char c : s) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

}  // namespace

bool imports_torch(const std::string& python) {
  return run_shell(python + " -c 'import torch'").exit_code == 0;
}

std::string python_interpreter() {
  static const std::string python = [] {
    const char* chosen = std::getenv("SF_PYTHON");
    if (chosen && *chosen) return std::string(chosen);
    // Debian's python3-torch (scripts/setup.sh --twin) is visible to /usr/bin/python3 only,
    // which a pyenv or venv python3 earlier on PATH hides.
    for (const char* candidate : {"python3", "/usr/bin/python3"})
      if (imports_torch(candidate)) return std::string(candidate);
    return std::string("python3");
  }();
  return python;
}

bool python_has_torch() {
  static const bool has_torch = imports_torch(python_interpreter());
  return has_torch;
}

ShellResult run_twin_script(const std::string& script, const std::vector<std::string>& arguments) {
  std::string command =
      python_interpreter() + " " + shell_quote(std::string(SF_SOURCE_DIR) + "/python/" + script);
  for (const std::string& argument : arguments) command += " " + shell_quote(argument);
  return run_shell(command);
}

}  // namespace sf::test
