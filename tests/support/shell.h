// shell.h — running a shell command from a test and capturing what it printed.
#pragma once

#include <string>

namespace sf::test {

struct ShellResult {
  int exit_code;       // -1 when the command did not exit normally
  std::string output;  // stdout and stderr together
  double seconds;      // wall time
};

// Runs `command` with /bin/sh (stderr merged into stdout) and waits for it.
ShellResult run_shell(const std::string& command);

}  // namespace sf::test
