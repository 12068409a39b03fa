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

std::string python_interpreter() {
  const char* python = std::getenv("SF_PYTHON");
  return python && *python ? python : "python3";
}

bool python_has_torch() {
  static const bool has_torch =
      run_shell(python_interpreter() + " -c 'import torch'").exit_code == 0;
  return has_torch;
}

ShellResult run_twin_script(const std::string& script, const std::vector<std::string>& arguments) {
  std::string command =
      python_interpreter() + " " + shell_quote(std::string(SF_SOURCE_DIR) + "/python/" + script);
  for (const std::string& argument : arguments) command += " " + shell_quote(argument);
  return run_shell(command);
}

}  // namespace sf::test
