// model_io_test.cpp — save -> load gives bit-identical logits; bad model files give clear errors.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_util.h"
#include "cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/model_io.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) { return test::fresh_temp_dir("model_io_" + name); }

using test::error_of;

class ModelRoundTrip : public ::testing::TestWithParam<test::Variant> {};

TEST_P(ModelRoundTrip, SaveLoadGivesBitIdenticalLogits) {
  const test::Variant& v = GetParam();
  CpuBackend backend;
  Model model(v.config, backend, DType::f32);
  Rng rng(21);
  test::randomize_parameters(model, rng);
  Tensor tokens = test::random_ids({2, 9}, v.config.vocab_size, rng);
  model.forward(tokens);
  Tensor before = test::clone(model.logits());

  const fs::path dir = temp_dir(v.name);
  model_save(model, dir.string());
  const ModelConfig loaded_config = model_load_config(dir.string());
  EXPECT_EQ(config_to_json(loaded_config), config_to_json(model.config()));
  Model loaded(loaded_config, backend, DType::f32);
  model_load_weights(loaded, model_files(dir.string()).weights);
  loaded.forward(tokens);
  ASSERT_EQ(loaded.logits().nbytes(), before.nbytes());
  EXPECT_EQ(std::memcmp(loaded.logits().raw(), before.raw(), before.nbytes()), 0);
  // The file path form of MODEL works too.
  EXPECT_EQ(model_files((dir / "model.safetensors").string()).config, (dir / "config.json").string());
  fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(Variants, ModelRoundTrip, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

TEST(ModelFilesErrors, MissingTensorWrongShapeExtraTensorAndMissingFiles) {
  CpuBackend backend;
  ModelConfig c = test::tiny_config();
  c.n_stacks = 2;
  Model model(c, backend, DType::f32);
  model.initialize();
  const fs::path dir = temp_dir("errors");
  model_save(model, dir.string());
  const std::string weights = (dir / "model.safetensors").string();

  // A model of another shape: names match but a shape does not.
  ModelConfig wider = c;
  wider.ffn_hidden = 14;
  Model other(wider, backend, DType::f32);
  std::string msg = error_of([&] { model_load_weights(other, weights); });
  EXPECT_NE(msg.find(weights), std::string::npos) << msg;
  EXPECT_NE(msg.find("mlp.w1.weight"), std::string::npos) << msg;

  // A model with fewer stacks: the file has tensors it does not know.
  ModelConfig fewer = c;
  fewer.n_stacks = 1;
  Model baseline(fewer, backend, DType::f32);
  msg = error_of([&] { model_load_weights(baseline, weights); });
  EXPECT_NE(msg.find("is not a parameter"), std::string::npos) << msg;

  // A model with more stacks: tensors are missing.
  ModelConfig more = c;
  more.n_stacks = 3;
  Model deeper(more, backend, DType::f32);
  msg = error_of([&] { model_load_weights(deeper, weights); });
  EXPECT_NE(msg.find("missing tensor 'stacks.2."), std::string::npos) << msg;

  // Truncated weights file.
  {
    const auto size = fs::file_size(weights);
    fs::resize_file(weights, size - 100);
    msg = error_of([&] { model_load_weights(model, weights); });
    EXPECT_NE(msg.find(weights), std::string::npos) << msg;
  }
  // Missing config beside the weights.
  fs::remove(dir / "config.json");
  msg = error_of([&] { model_files(dir.string()); });
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
  msg = error_of([&] { model_files((dir / "nothing_here").string()); });
  EXPECT_NE(msg.find("no such model"), std::string::npos) << msg;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
