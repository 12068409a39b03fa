// twin_decode_test.cpp — our incremental decoder against the PyTorch twin's decoder
// (python/stagformer_twin/decode.py), an independent implementation of docs/decoding.md.
//
// For every tiny variant (staggered decoding, and recurrent decoding where the model allows it):
// random weights, two sequences with random prompts, the logits after every prompt position
// (a prefill of each prefix) and after each of several fed tokens. The dump folder (config.json,
// model.safetensors, decode.safetensors, result.json; python/README.md describes it) goes to
// `python/twin_decode.py check`, which decodes the same tokens in float64 with the twin and
// exits 0 when the logits agree (f32: 1e-4, bf16: 3e-2 relative to the logits' scale;
// python/README.md says why).
//
// Needs a python3 with PyTorch ($SF_PYTHON names another): skipped without one (CI has none).
// The CUDA case (bf16 compute at realistic sizes) needs a CUDA build and a device.
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>

#include "cpu/cpu_backend.h"
#include "infer/decoder.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
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
constexpr int64_t kPrompt = 4;  // longer than windows 1 and 2
constexpr int64_t kFed = 5;

struct Case {
  std::string name;
  ModelConfig config;
  DecodeMode mode;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> twin_cases() {
  std::vector<Case> cases;
  for (const test::Variant& v : test::tiny_variants()) {
    cases.push_back({v.name, v.config, DecodeMode::staggered});
    if (DecodeSchedule::unsupported(v.config, DecodeMode::recurrent).empty())
      cases.push_back({v.name + "_recurrent", v.config, DecodeMode::recurrent});
  }
  return cases;
}

// Copies row `row` of a [batch, V] logits tensor into row `position` of sequence `b` of `out`
// ([B, P + N, V] F32).
void put_row(const Tensor& logits, int64_t row, Tensor& out, int64_t b, int64_t position) {
  const int64_t V = out.dim(2);
  ASSERT_EQ(logits.dtype(), DType::f32);  // the decoder's host logits of an F32 model
  const float* src = logits.data<float>() + row * V;
  float* dst = out.data<float>() + (b * out.dim(1) + position) * V;
  std::copy(src, src + V, dst);
}

// Decodes random prompts and tokens and writes the dump folder of `python/twin_decode.py check`.
void write_decode_dump(Model& model, DecodeMode mode, const std::string& backend_name,
                       const std::string& precision, const std::string& dir) {
  const int64_t V = model.config().vocab_size;
  Rng rng(77);
  Tensor prompt = test::random_ids({kBatch, kPrompt}, V, rng);
  Tensor tokens = test::random_ids({kBatch, kFed}, V, rng);
  Tensor logits = Tensor::zeros({kBatch, kPrompt + kFed, V}, DType::f32);
  Decoder decoder(model, kBatch, mode);
  // The logits at every prompt position: a prefill of each prefix (a prefill resets its sequence).
  for (int64_t length = 1; length <= kPrompt; ++length)
    for (int64_t b = 0; b < kBatch; ++b) {
      decoder.prefill(b, std::span(prompt.data<int32_t>() + b * kPrompt, static_cast<size_t>(length)));
      put_row(decoder.logits(), b, logits, b, length - 1);
    }
  for (int64_t t = 0; t < kFed; ++t) {
    std::vector<int32_t> step(kBatch);
    for (int64_t b = 0; b < kBatch; ++b) step[b] = tokens.data<int32_t>()[b * kFed + t];
    decoder.step(step);
    for (int64_t b = 0; b < kBatch; ++b) put_row(decoder.logits(), b, logits, b, kPrompt + t);
  }
  model_save(model, dir);
  write_safetensors((fs::path(dir) / "decode.safetensors").string(),
                    {{"prompt", prompt}, {"tokens", tokens}, {"logits", logits}});
  const nlohmann::json result{
      {"mode", to_string(mode)}, {"backend", backend_name}, {"precision", precision}};
  write_file_atomic((fs::path(dir) / "result.json").string(), result.dump(2) + "\n");
}

void expect_twin_decodes_alike(Model& model, const Case& c, const std::string& backend_name,
                               const std::string& precision) {
  const std::string dir =
      test::fresh_temp_dir("twin_decode_" + backend_name + "_" + precision + "_" + c.name);
  write_decode_dump(model, c.mode, backend_name, precision, dir);
  const test::ShellResult r = test::run_twin_script("twin_decode.py", {"check", dir});
  EXPECT_EQ(r.exit_code, 0) << "twin_decode.py check " << dir << " said:\n" << r.output;
  if (!::testing::Test::HasFailure()) fs::remove_all(dir);  // kept for inspection on failure
}

class TwinDecode : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!test::python_has_torch())
      GTEST_SKIP() << "no PyTorch: '" << test::python_interpreter()
                   << " -c \"import torch\"' fails (set SF_PYTHON to an interpreter with torch)";
  }
};

TEST_P(TwinDecode, CpuF32DecoderMatchesTwin) {
  const Case& c = GetParam();
  CpuBackend backend;
  Model model(c.config, backend, DType::f32);
  Rng rng(5);
  test::randomize_parameters(model, rng);
  expect_twin_decodes_alike(model, c, "cpu", "f32");
}

#ifdef SF_HAVE_CUDA
TEST_P(TwinDecode, CudaBf16DecoderMatchesTwin) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  std::unique_ptr<Backend> backend = make_cuda_backend();
  // F32 master weights (what the dump holds), bf16 compute, the standard initialisation at
  // realistic sizes (see test::realistic_config).
  ModelConfig config = test::realistic_config(c.config);
  Model model(config, *backend, DType::f32, DType::bf16);
  model.initialize();
  expect_twin_decodes_alike(model, {c.name, config, c.mode}, "cuda", "bf16");
}
#endif

INSTANTIATE_TEST_SUITE_P(Variants, TwinDecode, ::testing::ValuesIn(twin_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
