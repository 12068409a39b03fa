// model_config_test.cpp — config JSON: round trip, defaults, and one clear message per bad field.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/config.h"

namespace sf {
namespace {

using json = nlohmann::json;

std::string error_of(const json& j) {
  try {
    config_from_json(j, "cfg.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ModelConfig, RoundTripKeepsEveryField) {
  ModelConfig c;
  c.vocab_size = 300;
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn_hidden = 96;
  c.max_seq_len = 128;
  c.rope_theta = 5000;
  c.norm_eps = 1e-6;
  c.tie_embeddings = true;
  c.n_stacks = 3;
  c.layers_per_stack = 2;
  c.weights = WeightSharing::shared;
  c.cross_window = 4;
  c.cross_rope = false;
  c.combine = CombineMode::linear;
  c.init_std = 0.01;
  c.seed = 99;
  c.validate();
  const json j = config_to_json(c);
  const ModelConfig back = config_from_json(j, "x");
  EXPECT_EQ(config_to_json(back), j);
}

TEST(ModelConfig, DefaultsAndKvHeadsResolution) {
  const ModelConfig c = config_from_json(json{{"n_heads", 6}, {"d_model", 96}}, "x");
  EXPECT_EQ(c.n_kv_heads, 6);
  EXPECT_EQ(c.head_dim(), 16);
  EXPECT_EQ(c.weights, WeightSharing::separate);
  EXPECT_EQ(c.combine, CombineMode::last);
  EXPECT_EQ(c.cross_window, 0);
  EXPECT_TRUE(c.cross_rope);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-5);
}

TEST(ModelConfig, EveryBadFieldIsNamed) {
  struct Case {
    json j;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{{"d_model", -3}}, "'d_model': must be a positive integer, got -3"},
      {{{"d_model", "big"}}, "'d_model': expected an integer"},
      {{{"d_model", 100}, {"n_heads", 3}}, "'n_heads': d_model 100 is not divisible"},
      {{{"d_model", 12}, {"n_heads", 4}}, "head_dim"},
      {{{"n_kv_heads", 5}}, "'n_kv_heads'"},
      {{{"weights", "tied"}}, "'weights': expected one of separate|shared"},
      {{{"combine", 2}}, "'combine': expected one of last|linear"},
      {{{"cross_window", -1}}, "'cross_window'"},
      {{{"cross_rope", "yes"}}, "'cross_rope': expected true or false"},
      {{{"rope_theta", 0}}, "'rope_theta'"},
      {{{"norm_eps", -1}}, "'norm_eps'"},
      {{{"n_stack", 2}}, "'n_stack': unknown field"},
      {{{"n_stacks", 1}, {"weights", "shared"}}, "'weights': 'shared' needs n_stacks >= 2"},
      {{{"n_stacks", 1}, {"combine", "linear"}}, "'combine': 'linear' needs n_stacks >= 2"},
      {{{"layers_per_stack", 0}}, "'layers_per_stack'"},
      {{{"vocab_size", 3000000000LL}}, "'vocab_size'"},
      {{{"seed", -5}}, "'seed'"},
      {json::array(), "must be a JSON object"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of(c.j);
    EXPECT_NE(msg.find("cfg.json"), std::string::npos) << c.j.dump() << " -> " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.j.dump() << " -> " << msg;
  }
  // A field that cannot be read is reported alone, not also through a check against the default
  // it kept (n_heads 12 does not divide d_model 128).
  const std::string unread = error_of(json{{"d_model", 128}, {"n_heads", 2.5}});
  EXPECT_NE(unread.find("'n_heads': expected an integer"), std::string::npos) << unread;
  EXPECT_EQ(unread.find("divisible"), std::string::npos) << unread;
  // Several bad fields: all of them reported at once.
  const std::string msg = error_of(json{{"d_model", 0}, {"ffn_hidden", -1}, {"bogus", 1}});
  EXPECT_NE(msg.find("'d_model'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'ffn_hidden'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'bogus'"), std::string::npos) << msg;
}

TEST(ModelConfig, OverridesParseJsonValuesElseStrings) {
  json j = config_to_json(ModelConfig{});
  config_apply_override(j, "n_stacks=3");
  config_apply_override(j, "weights=shared");
  config_apply_override(j, "cross_rope=false");
  config_apply_override(j, "norm_eps=1e-6");
  const ModelConfig c = config_from_json(j, "x");
  EXPECT_EQ(c.n_stacks, 3);
  EXPECT_EQ(c.weights, WeightSharing::shared);
  EXPECT_FALSE(c.cross_rope);
  EXPECT_DOUBLE_EQ(c.norm_eps, 1e-6);
  EXPECT_THROW(config_apply_override(j, "novalue"), Error);
  EXPECT_THROW(config_apply_override(j, "=3"), Error);
}

TEST(ModelConfig, FileErrorsNameTheFile) {
  const auto dir = std::filesystem::temp_directory_path();
  const std::string bad = (dir / "sf_bad_config.json").string();
  std::ofstream(bad) << "{ \"d_model\": 64, ";  // truncated JSON
  try {
    config_load(bad);
    FAIL() << "truncated JSON accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
  EXPECT_THROW(config_load((dir / "sf_no_such_config.json").string()), Error);
  const std::string good = (dir / "sf_good_config.json").string();
  ModelConfig c;
  c.n_stacks = 3;
  config_save(c, good);
  EXPECT_EQ(config_load(good).n_stacks, 3);
  std::filesystem::remove(bad);
  std::filesystem::remove(good);
}

}  // namespace
}  // namespace sf
