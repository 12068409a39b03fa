// model_summary_test.cpp — the numbers `stagformer info` prints: parameter-count formulas equal
// the counts of the registered tensors, KV-cache sizes and depths by hand, the safetensors
// header summary of a saved model, and the training step of a run folder.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "support/test_util.h"
#include "core/error.h"
#include "cpu/cpu_backend.h"
#include "infer/model_summary.h"
#include "model/model.h"
#include "model/model_io.h"
#include "model/weights.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

using test::error_of;

fs::path temp_dir(const std::string& name) { return test::fresh_temp_dir("model_summary_" + name); }

std::vector<test::Variant> variants() {
  std::vector<test::Variant> v = test::tiny_variants();
  // Wider shapes, so that each formula term has a distinct size (D != F != V, GQA, tied, p=4).
  ModelConfig wide;
  wide.vocab_size = 97;
  wide.d_model = 48;
  wide.n_heads = 6;
  wide.n_kv_heads = 2;
  wide.ffn_hidden = 136;
  wide.max_seq_len = 64;
  wide.n_stacks = 4;
  wide.layers_per_stack = 3;
  wide.validate("wide");
  v.push_back({"wide_p4_gqa", wide});
  ModelConfig shared_tied = wide;
  shared_tied.weights = WeightSharing::shared;
  shared_tied.tie_embeddings = true;
  shared_tied.combine = CombineMode::linear;
  v.push_back({"wide_shared_tied_linear", shared_tied});
  ModelConfig baseline = wide;
  baseline.n_stacks = 1;
  baseline.layers_per_stack = 5;
  v.push_back({"wide_baseline", baseline});
  return v;
}

TEST(ModelSummary, FormulaCountsEqualRegisteredParameters) {
  for (const test::Variant& v : variants()) {
    CpuBackend backend;
    const Model model(v.config, backend, DType::f32);
    const auto registered = parameter_counts(model.params());
    EXPECT_EQ(parameter_counts_for(v.config), registered) << v.name;
    EXPECT_EQ(registered.at("total"), model.params().count_elements()) << v.name;
  }
}

TEST(ModelSummary, KnownSizesOfDocsModelMd) {
  // docs/model.md: at d_model 768, ffn 2048, vocab 50304, the 2x6 StagFormer has 14.16M more
  // parameters than the 12-layer baseline: 6 * (4 * 768^2 + 768) + 768.
  ModelConfig stag;  // defaults: 2 x 6, d_model 768, ffn 2048, vocab 50304
  stag.validate();
  ModelConfig base = stag;
  base.n_stacks = 1;
  base.layers_per_stack = 12;
  const int64_t difference =
      parameter_counts_for(stag).at("total") - parameter_counts_for(base).at("total");
  EXPECT_EQ(difference, 6 * (4 * 768 * 768 + 768) + 768);
  EXPECT_EQ(parameter_counts_for(base).at("embedding"), 50304 * 768);
  EXPECT_EQ(parameter_counts_for(base).at("mlp"), 12 * 3 * 768 * 2048);
}

TEST(ModelSummary, KvCacheAndDepthByHand) {
  ModelConfig c;
  c.d_model = 64;
  c.n_heads = 8;
  c.n_kv_heads = 2;  // kv_dim = 2 * 8 = 16
  c.n_stacks = 3;
  c.layers_per_stack = 4;
  c.max_seq_len = 100;
  c.validate();
  KvCacheSize kv = kv_cache_size(c);
  EXPECT_EQ(kv.self_values_per_token, 3 * 4 * 2 * 16);
  EXPECT_EQ(kv.cross_values_per_position, 2 * 4 * 2 * 16);
  EXPECT_EQ(kv.values_for_context(100), 100 * (3 * 4 * 2 * 16) + 100 * (2 * 4 * 2 * 16));
  // A window bounds the cross caches to w positions.
  c.cross_window = 7;
  kv = kv_cache_size(c);
  EXPECT_EQ(kv.cross_positions(100), 7);
  EXPECT_EQ(kv.cross_positions(5), 5);
  EXPECT_EQ(kv.values_for_context(100), 100 * (3 * 4 * 2 * 16) + 7 * (2 * 4 * 2 * 16));
  const DecodeDepth depth = decode_depth(c);
  EXPECT_EQ(depth.total_layers, 12);
  EXPECT_EQ(depth.critical_path_sequential, 12);
  EXPECT_EQ(depth.critical_path_staggered, 4);
  // The baseline has no cross caches.
  c.n_stacks = 1;
  c.cross_window = 0;
  EXPECT_EQ(kv_cache_size(c).cross_values_per_position, 0);
}

TEST(ModelSummary, SafetensorsHeaderOfASavedModel) {
  const test::Variant v = test::tiny_variants()[3];  // p3_linear
  CpuBackend backend;
  Model model(v.config, backend, DType::f32);
  Rng rng(3);
  test::randomize_parameters(model, rng);
  const fs::path dir = temp_dir("header");
  model_save(model, dir.string());
  const std::string weights = (dir / "model.safetensors").string();
  const SafetensorsHeaderSummary h = safetensors_header_read(weights);
  EXPECT_EQ(h.file_bytes, fs::file_size(weights));
  EXPECT_EQ(h.tensors, static_cast<int64_t>(model.params().size()));
  ASSERT_EQ(h.elements_by_dtype.size(), 1u);
  EXPECT_EQ(h.elements_by_dtype.at("F32"), model.params().count_elements());
  EXPECT_TRUE(h.metadata.count("stagformer_config"));

  // A truncated file: the data offsets reach past its end.
  fs::resize_file(weights, h.file_bytes - 4);
  EXPECT_NE(error_of([&] { safetensors_header_read(weights); }).find(weights), std::string::npos);
  // Garbage: a header length beyond the file.
  {
    std::ofstream out(weights, std::ios::binary | std::ios::trunc);
    const std::string bytes("\xff\xff\xff\x00\x00\x00\x00\x00{}", 10);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  EXPECT_NE(error_of([&] { safetensors_header_read(weights); }).find("past the end"),
            std::string::npos);
  {
    std::ofstream out(weights, std::ios::binary | std::ios::trunc);
    out << "abc";
  }
  EXPECT_NE(error_of([&] { safetensors_header_read(weights); }).find("too short"),
            std::string::npos);
  fs::remove_all(dir);
}

TEST(ModelSummary, LatestCheckpointStepOfARunFolder) {
  const fs::path dir = temp_dir("run");
  EXPECT_EQ(run_latest_checkpoint_step(dir.string()), -1);
  fs::create_directories(dir / "checkpoints");
  {
    std::ofstream out(dir / "checkpoints" / "latest.json");
    out << R"({"step": 1200, "dir": "step_00001200"})";
  }
  EXPECT_EQ(run_latest_checkpoint_step(dir.string()), 1200);
  {
    std::ofstream out(dir / "checkpoints" / "latest.json", std::ios::trunc);
    out << R"({"step": "soon"})";
  }
  EXPECT_NE(error_of([&] { run_latest_checkpoint_step(dir.string()); }).find("latest.json"),
            std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
