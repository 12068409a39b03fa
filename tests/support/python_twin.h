// python_twin.h — running the PyTorch twin's scripts (python/) from a test: which interpreter,
// whether it has torch (tests skip without it: CI has none), and a script's exit code and output.
#pragma once

#include <string>
#include <vector>

#include "support/shell.h"

namespace sf::test {

// $SF_PYTHON when set; else the first of python3 and /usr/bin/python3 that imports torch
// (scripts/setup.sh --twin installs Debian's), else python3.
std::string python_interpreter();
// True when `python_interpreter() -c "import torch"` succeeds (asked once per process).
bool python_has_torch();
// Runs python/<script> of the source tree with `arguments` (each shell-quoted).
ShellResult run_twin_script(const std::string& script, const std::vector<std::string>& arguments);

}  // namespace sf::test
