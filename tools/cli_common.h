// cli_common.h — small pieces every subcommand shares: backend choice and thread count.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "core/backend.h"

namespace sf::cli {

// "cpu" -> the CPU backend; "cuda" -> the CUDA backend when built in, else a clear error.
std::unique_ptr<Backend> make_backend(const std::string& device);

// The compute dtype for --device and --precision ("" = the device's default: bf16 on cuda,
// f32 on cpu). bf16 on the CPU is refused (the CPU backend is the fp32 reference).
DType compute_dtype_for(const std::string& device, const std::string& precision);

// The command line as typed (/proc/self/cmdline), each argument quoted for a POSIX shell where
// it needs it, so a report's line can be pasted back.
std::string command_line();

// Sets OpenMP and OpenBLAS thread counts (0 = leave the defaults: all cores).
void set_threads(int threads);

}  // namespace sf::cli
