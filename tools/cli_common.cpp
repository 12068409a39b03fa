// cli_common.cpp — backend choice and thread count for the command-line tool.
#include "cli_common.h"

#include <cblas.h>
#include <omp.h>

#include "core/error.h"
#include "cpu/cpu_backend.h"

namespace sf::cli {

std::unique_ptr<Backend> make_backend(const std::string& device) {
  if (device == "cpu") return std::make_unique<CpuBackend>();
  if (device == "cuda")
    fail("--device cuda: the CUDA backend is not available in this build yet (use --device cpu)");
  fail(fmt::format("--device '{}': expected cpu or cuda", device));
}

void set_threads(int threads) {
  SF_CHECK(threads >= 0, "-t/--threads must be >= 0, got {}", threads);
  if (threads == 0) return;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

}  // namespace sf::cli
