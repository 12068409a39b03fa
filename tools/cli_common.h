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

// Sets the OpenMP and OpenBLAS thread count (one pool) and returns it: `threads` when > 0; with
// 0 (the default of every -t) OMP_NUM_THREADS when set, else the cores free right now
// (cpu/idle_cores.h: all of them on a quiet machine, fewer where other work keeps some busy).
// Costs a 0.1 s sample of /proc/stat when it measures.
struct ThreadChoice {
  int threads = 1;
  std::string note;  // set when busy cores were left out: "1 of 2 cores: 1.9 were busy ..."
};
ThreadChoice set_threads(int threads);

}  // namespace sf::cli
