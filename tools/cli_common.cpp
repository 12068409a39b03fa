// cli_common.cpp — backend choice, compute precision and thread count for the command-line tool.
#include "cli_common.h"

#include <cblas.h>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <omp.h>

#include "core/error.h"
#include "cpu/cpu_backend.h"
#include "cpu/idle_cores.h"
#ifdef SF_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace sf::cli {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  if (device == "cuda") {
#ifdef SF_HAVE_CUDA
    return make_cuda_backend();
#else
    fail("--device cuda: this stagformer was built without the CUDA backend (nvcc was not found "
         "at configure time); rebuild on a machine with the CUDA toolkit or use --device cpu");
#endif
  }
  fail(fmt::format("--device '{}': expected cpu or cuda", device));
}

DType compute_dtype_for(const std::string& device, const std::string& precision) {
  if (precision.empty()) return device == "cuda" ? DType::bf16 : DType::f32;
  if (precision == "f32") return DType::f32;
  if (precision == "bf16") {
    SF_CHECK(device == "cuda",
             "--precision bf16 needs --device cuda (the CPU backend is the fp32 reference)");
    return DType::bf16;
  }
  fail(fmt::format("--precision '{}': expected bf16 or f32", precision));
}

// The command line as typed, for the report: /proc/self/cmdline (Linux), each argument quoted
// for a POSIX shell where it needs it, so the line can be pasted back.
std::string command_line() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string line, arg;
  auto flush = [&] {
    bool plain = !arg.empty();
    for (char ch : arg)
      plain = plain && (std::isalnum(static_cast<unsigned char>(ch)) || std::string("_-./=,:+@%").find(ch) != std::string::npos);
    std::string quoted = arg;
    if (!plain) {
      quoted = "'";
      for (char ch : arg) quoted += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
      quoted += "'";
    }
    line += (line.empty() ? "" : " ") + quoted;
    arg.clear();
  };
  for (char ch : raw) {
    if (ch == '\0') flush();
    else arg += ch;
  }
  if (!arg.empty()) flush();
  return line.empty() ? "stagformer" : line;
}

ThreadChoice set_threads(int threads) {
  SF_CHECK(threads >= 0, "-t/--threads must be >= 0, got {}", threads);
  ThreadChoice choice;
  if (threads == 0) {
    const char* env = std::getenv("OMP_NUM_THREADS");
    if (env != nullptr && *env != '\0') {
      choice.threads = omp_get_max_threads();  // the user's choice, made before we started
      return choice;
    }
    const CoreAvailability cores = measure_core_availability();
    threads = cores.free;
    if (cores.free < cores.usable)
      choice.note = fmt::format("{} of {} cores: {:.1f} were busy with other work (-t N to choose)",
                                cores.free, cores.usable, cores.busy);
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
  choice.threads = threads;
  return choice;
}

}  // namespace sf::cli
