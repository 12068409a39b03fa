// cli_common.h — small pieces every subcommand shares: backend choice and thread count.
#pragma once

#include <memory>
#include <string>

#include "core/backend.h"

namespace sf::cli {

// "cpu" -> the CPU backend; "cuda" -> the CUDA backend when built in, else a clear error.
std::unique_ptr<Backend> make_backend(const std::string& device);

// Sets OpenMP and OpenBLAS thread counts (0 = leave the defaults: all cores).
void set_threads(int threads);

}  // namespace sf::cli
