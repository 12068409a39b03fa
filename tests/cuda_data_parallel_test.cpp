// cuda_data_parallel_test.cpp — data-parallel training on two GPUs, end to end: the real
// binary started by scripts/launch.sh (TCP rendezvous, then the shared-file rendezvous with a
// stop and a resume) against one GPU with doubled --grad-accum on the same data. In fp32 the
// runs differ only in the order gradients are summed, so every logged loss agrees within 1e-4
// and the final weights within 1e-5 (relative). Skips without two CUDA devices.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "cuda/cuda_backend.h"
#include "support/free_port.h"
#include "support/run_compare.h"
#include "support/shell.h"
#include "support/tiny_data.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

constexpr double kLossTolerance = 1e-4;
constexpr double kWeightTolerance = 1e-5;

// The binary and the launcher: where the build put them, or — when the build folder was copied
// to another machine at another path — beside this test (the binary) and one folder up (the
// source tree holding scripts/).
fs::path this_executable() { return fs::read_symlink("/proc/self/exe"); }

std::string stagformer_binary() {
  if (fs::exists(SF_STAGFORMER_BIN)) return SF_STAGFORMER_BIN;
  return (this_executable().parent_path() / "stagformer").string();
}

std::string launch_script() {
  const fs::path built = fs::path(SF_SOURCE_DIR) / "scripts/launch.sh";
  if (fs::exists(built)) return built.string();
  return (this_executable().parent_path().parent_path() / "scripts/launch.sh").string();
}

// Prints the output of a failed command, which holds every rank's error.
void expect_success(const test::ShellResult& r, const std::string& what) {
  EXPECT_EQ(r.exit_code, 0) << what << " failed:\n" << r.output;
}

TEST(CudaDataParallel, TwoGpusMatchOneGpuWithTheSameGlobalBatch) {
  if (cuda_device_count() < 2) GTEST_SKIP() << "needs 2 CUDA devices, found " << cuda_device_count();
  const std::string dir = test::fresh_temp_dir("cuda_data_parallel");
  test::write_tiny_dataset(dir + "/data", 60000, 6000);
  const std::string config = dir + "/model.json";
  std::ofstream(config) << R"({"vocab_size": 257, "d_model": 128, "n_heads": 2, "ffn_hidden": 256,
                               "max_seq_len": 64, "n_stacks": 2, "layers_per_stack": 1})";
  const std::string bin = stagformer_binary();
  const std::string launch = "bash " + launch_script() + " --nproc 2";
  // Nothing from the environment this test runs in may turn the single run into a rank.
  const std::string clean_env = "env -u WORLD_SIZE -u RANK -u LOCAL_RANK -u SF_DIST_INIT_FILE ";
  const std::string train = " train --data " + dir + "/data --steps 8 --batch 4 --seq 64 --lr 1e-3 "
                            "--warmup 2 --eval-every 4 --eval-batches 2 --checkpoint-every 0 "
                            "--device cuda --precision f32 --no-progress";

  // One GPU, two micro-batches per update.
  const std::string single = dir + "/single";
  expect_success(test::run_shell(clean_env + "LOCAL_RANK=0 " + bin + train + " --config " + config +
                                 " --grad-accum 2 --out " + single),
                 "the single-GPU run");

  // Two GPUs, one micro-batch each per update, TCP rendezvous.
  const std::string tcp = dir + "/tcp";
  const test::ShellResult r = test::run_shell(
      clean_env + launch + " --master-port " + std::to_string(test::free_tcp_port()) + " -- " +
      bin + train + " --config " + config + " --grad-accum 1 --out " + tcp);
  expect_success(r, "the 2-GPU run");
  EXPECT_NE(r.output.find("[rank 0] data parallel: 2 processes"), std::string::npos) << r.output;
  test::expect_metrics_close(tcp, single, kLossTolerance);
  test::expect_weights_close(tcp + "/model.safetensors", single + "/model.safetensors",
                             kWeightTolerance);

  // Two GPUs through a shared file, stopped after 4 updates and resumed.
  const std::string halves = dir + "/halves";
  const std::string file_env = clean_env + "SF_DIST_INIT_FILE=" + dir + "/job.init ";
  expect_success(test::run_shell(file_env + launch + " -- " + bin + train + " --config " + config +
                                 " --grad-accum 1 --stop-after 4 --out " + halves),
                 "the first half of the 2-GPU run");
  EXPECT_FALSE(fs::exists(dir + "/job.init")) << "the rendezvous file was not cleaned up";
  expect_success(test::run_shell(file_env + launch + " -- " + bin + train +
                                 " --grad-accum 1 --resume --out " + halves),
                 "the resumed 2-GPU run");
  test::expect_metrics_close(halves, single, kLossTolerance);
  test::expect_weights_close(halves + "/model.safetensors", single + "/model.safetensors",
                             kWeightTolerance);
}

}  // namespace
}  // namespace sf
