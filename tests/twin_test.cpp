// twin_test.cpp — the C++ model against its PyTorch twin (python/stagformer_twin).
//
// For every tiny variant: random parameters and batch, forward + backward here, then the dump
// folder (config.json, model.safetensors, batch.safetensors, grads.safetensors, result.json)
// goes to python/twin_check.py, which recomputes loss and every parameter gradient in float64
// with the twin and exits 0 when they agree (f32: loss 1e-5, every gradient 1e-4 relative;
// bf16: loss 2e-2, gradients 5e-2 — twin_check.py says why). The twin is an independent
// implementation of docs/model.md, so this checks the wiring (masks, RoPE layout, sharing,
// combination, tying), not only self-consistency as the finite-difference tests do.
//
// Needs a python3 with PyTorch ($SF_PYTHON names another interpreter); skipped without one
// (CI has no torch). The CUDA cases need a build with SF_HAVE_CUDA and a device: f32 compute
// (the tight check of every kernel) and bf16 compute with F32 master weights and gradients (the
// mixed-precision path; its tolerances are those of bf16 rounding).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cpu/cpu_backend.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/model_io.h"
#include "support/device_tensors.h"
#include "support/gradcheck.h"
#include "support/python_twin.h"
#include "support/test_util.h"
#include "support/tiny_models.h"
#ifdef SF_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace sf {
namespace {

namespace fs = std::filesystem;

constexpr int64_t kBatch = 2;
constexpr int64_t kSeq = 7;

// Runs python/twin_check.py on `dir`; expects exit 0 and shows its report otherwise.
void expect_twin_agrees(const std::string& dir) {
  const test::ShellResult r = test::run_twin_script("twin_check.py", {dir});
  EXPECT_EQ(r.exit_code, 0) << "twin_check.py " << dir << " said:\n" << r.output;
}

// ---- the dump ------------------------------------------------------------------------------

struct Batch {
  Tensor tokens, targets;  // CPU I32 [B, T]
};

// Random tokens; targets are random ids with three positions ignored (-1).
Batch random_batch(int64_t vocab, Rng& rng) {
  Batch b{test::random_ids({kBatch, kSeq}, vocab, rng), test::random_ids({kBatch, kSeq}, vocab, rng)};
  int32_t* targets = b.targets.data<int32_t>();
  targets[0 * kSeq + 2] = -1;
  targets[1 * kSeq + 0] = -1;
  targets[1 * kSeq + kSeq - 1] = -1;
  return b;
}

// Writes the folder python/twin_check.py reads (its header comment lists the files).
void write_dump(Model& model, const Batch& batch, double loss, const std::string& backend_name,
                const std::string& precision, const std::string& dir) {
  model_save(model, dir);  // model.safetensors (F32 parameters) + config.json
  write_safetensors((fs::path(dir) / "batch.safetensors").string(),
                    {{"tokens", batch.tokens}, {"targets", batch.targets}});
  std::vector<std::pair<std::string, Tensor>> grads;
  for (const Parameter& p : model.params().all())
    grads.emplace_back(p.name, test::to_host_f32(model.backend(), p.grad));
  write_safetensors((fs::path(dir) / "grads.safetensors").string(), grads);
  const nlohmann::json result{{"loss", loss}, {"backend", backend_name}, {"precision", precision}};
  write_file_atomic((fs::path(dir) / "result.json").string(), result.dump(2) + "\n");
}

// Forward + backward of one random batch, then the twin's verdict on the dump.
// `standard_init`: the model's own initialisation instead of strong random weights (bf16, see
// test::realistic_config).
void check_against_twin(Model& model, const test::Variant& v, const std::string& backend_name,
                        const std::string& precision, bool standard_init = false) {
  Rng rng(2024);
  if (standard_init) model.initialize();
  else test::randomize_parameters(model, rng);
  const Batch batch = random_batch(model.config().vocab_size, rng);
  model.params().zero_grad(model.backend());
  const double loss = model.forward(batch.tokens, batch.targets);
  model.backward();
  ASSERT_TRUE(std::isfinite(loss)) << v.name << ": loss " << loss;
  const std::string dir = test::fresh_temp_dir("twin_" + backend_name + "_" + precision + "_" + v.name);
  write_dump(model, batch, loss, backend_name, precision, dir);
  expect_twin_agrees(dir);
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);  // kept for inspection on failure
}

class TwinCheck : public ::testing::TestWithParam<test::Variant> {
 protected:
  void SetUp() override {
    if (!test::python_has_torch())
      GTEST_SKIP() << "no PyTorch: '" << test::python_interpreter()
                   << " -c \"import torch\"' fails (set SF_PYTHON to an interpreter with torch)";
  }
};

TEST_P(TwinCheck, CpuF32LossAndGradientsMatchTwin) {
  const test::Variant& v = GetParam();
  CpuBackend backend;
  Model model(v.config, backend, DType::f32);
  check_against_twin(model, v, "cpu", "f32");
}

#ifdef SF_HAVE_CUDA
TEST_P(TwinCheck, CudaF32LossAndGradientsMatchTwin) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const test::Variant& v = GetParam();
  std::unique_ptr<Backend> backend = make_cuda_backend();
  Model model(v.config, *backend, DType::f32);  // F32 weights and compute
  check_against_twin(model, v, "cuda", "f32");
}

TEST_P(TwinCheck, CudaBf16LossAndGradientsMatchTwin) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const test::Variant& v = GetParam();
  std::unique_ptr<Backend> backend = make_cuda_backend();
  // F32 master weights and gradients (what the dump holds), bf16 compute, at realistic sizes.
  Model model(test::realistic_config(v.config), *backend, DType::f32, DType::bf16);
  check_against_twin(model, v, "cuda", "bf16", /*standard_init=*/true);
}
#endif

INSTANTIATE_TEST_SUITE_P(Variants, TwinCheck, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
