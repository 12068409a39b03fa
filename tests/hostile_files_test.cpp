// hostile_files_test.cpp — the classes of hostile input of the reliability issue, each built in
// the test: deep JSON nesting, sizes past every limit, numbers out of range, shapes that
// overflow, a config that does not belong to its weights. Each must end in one sf::Error naming
// the file and the field (the library), or exit code 1 with that message (the CLI) — never a
// crash, a library exception or an allocation the input asked for.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "cpu/cpu_backend.h"
#include "infer/model_summary.h"
#include "io/json_input.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/model_io.h"
#include "support/shell.h"
#include "support/test_util.h"
#include "support/tiny_models.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

namespace sf {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

std::string write_text(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

std::string nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

const char* kSmallConfig =
    R"({"vocab_size": 257, "d_model": 16, "n_heads": 2, "ffn_hidden": 32, "max_seq_len": 32,
        "n_stacks": 2, "layers_per_stack": 1})";

// A config JSON with one field replaced by `value` (raw JSON text).
std::string config_with(const std::string& field, const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(kSmallConfig);
  std::string text = j.dump();
  const std::string key = "\"" + field + "\":";
  const size_t at = text.find(key);
  if (at == std::string::npos) return text.substr(0, text.size() - 1) + "," + key + value + "}";
  const size_t end = text.find_first_of(",}", at + key.size());
  return text.substr(0, at + key.size()) + value + text.substr(end);
}

// A safetensors file whose header is `header` (with no data after it unless given).
std::string write_safetensors_bytes(const fs::path& path, const std::string& header,
                                    const std::string& data = "") {
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  return write_text(path, bytes + header + data);
}

TEST(HostileFiles, DeepJsonNestingIsRefusedWhileParsing) {
  const std::string dir = test::fresh_temp_dir("hostile_nesting");
  // 200,000 levels: printing or destroying such a tree recursively overflows the stack.
  const std::string deep = nested(200000);
  expect_error([&] { config_load(write_text(fs::path(dir) / "config.json", deep)); },
               {"config.json", "nested deeper than"});
  expect_error(
      [&] { config_load(write_text(fs::path(dir) / "config2.json", config_with("d_model", deep))); },
      {"config2.json", "nested deeper than"});
  expect_error([&] { json_parse(deep, "text"); }, {"text: JSON nested deeper than 16 levels"});
  EXPECT_NO_THROW(json_parse(nested(16), "text"));
  // A --set value that nests deeply is taken as text, and then refused as the wrong type.
  expect_error(
      [&] { config_load(write_text(fs::path(dir) / "config3.json", kSmallConfig), {"d_model=" + deep}); },
      {"config3.json", "field 'd_model'", "expected an integer"});

  // A safetensors header with a deep shape.
  const std::string weights = write_safetensors_bytes(
      fs::path(dir) / "model.safetensors", R"({"w":{"dtype":"F32","shape":)" + deep + "}}");
  expect_error([&] { SafetensorsFile file(weights); }, {weights, "deeper"});
  expect_error([&] { safetensors_read_header(weights); }, {weights, "deeper"});

  // A metrics line.
  const std::string metrics =
      write_text(fs::path(dir) / "metrics.jsonl", "{\"step\": 1}\n{\"step\": " + deep + "}\n");
  expect_error([&] { metrics_read(metrics); }, {metrics + ":2", "nested deeper than"});
  fs::remove_all(dir);
}

TEST(HostileFiles, ConfigSizesHaveUpperBounds) {
  const std::string dir = test::fresh_temp_dir("hostile_sizes");
  const auto load = [&](const std::string& field, const std::string& value) {
    return [=] { config_load(write_text(fs::path(dir) / "config.json", config_with(field, value))); };
  };
  expect_error(load("ffn_hidden", "1099511627776"),
               {"config.json", "field 'ffn_hidden'", "above the limit 1048576"});
  expect_error(load("d_model", "4611686018427387904"), {"field 'd_model'", "above the limit"});
  expect_error(load("n_stacks", "1000000"), {"field 'n_stacks'", "above the limit 16"});
  expect_error(load("max_seq_len", "9223372036854775807"), {"field 'max_seq_len'"});
  expect_error(load("cross_window", "100"), {"field 'cross_window'", "larger than max_seq_len"});
  expect_error(load("norm_eps", "1e300"), {"field 'norm_eps'"});
  // Every field within its limit, the product above the parameter limit.
  ModelConfig big;
  big.d_model = 65536;
  big.n_heads = 512;
  big.ffn_hidden = 1048576;
  big.n_stacks = 16;
  big.layers_per_stack = 1024;
  big.max_seq_len = 1024;
  expect_error([&] { big.validate("big"); }, {"big", "parameters, above the limit 1099511627776"});
  fs::remove_all(dir);
}

TEST(HostileFiles, NumbersOutOfRangeAreNamedNotConverted) {
  const std::string dir = test::fresh_temp_dir("hostile_numbers");
  const auto load = [&](const std::string& field, const std::string& value) {
    return [=] { config_load(write_text(fs::path(dir) / "config.json", config_with(field, value))); };
  };
  expect_error(load("d_model", "1e400"), {"config.json", "not valid JSON"});
  expect_error(load("d_model", "1e20"), {"field 'd_model'", "expected an integer", "1e+20"});
  expect_error(load("d_model", "-1e300"), {"field 'd_model'", "expected an integer"});
  expect_error(load("d_model", "16.5"), {"field 'd_model'", "expected an integer"});
  expect_error(load("seed", "18446744073709551615"), {"field 'seed'"});
  expect_error(load("seed", "-1"), {"field 'seed'"});
  expect_error(load("d_model", "16.0"), {"field 'd_model'", "floating-point number 16.0"});
  expect_error(load("seed", "1e12"), {"field 'seed'", "floating-point number"});

  // json_int directly, at and past the edges of int64.
  expect_error([] { json_int(json_parse("9223372036854775808", "x"), "x", 0, INT64_MAX); },
               {"expected an integer in [0, 9223372036854775807]"});
  expect_error([] { json_int(json_parse("9.3e18", "x"), "x", INT64_MIN, INT64_MAX); },
               {"floating-point number"});
  EXPECT_EQ(json_int(json_parse("-9223372036854775808", "x"), "x", INT64_MIN, 0), INT64_MIN);

  // Metrics: a step that is a string, a huge float, negative.
  for (const std::string step : {"\"ten\"", "1e300", "-3", "null"}) {
    const std::string metrics =
        write_text(fs::path(dir) / "metrics.jsonl", "{\"step\": 1, \"loss\": 2.5}\n{\"step\": " + step + "}\n");
    expect_error([&] { metrics_read(metrics); }, {metrics + ":2", "field 'step'"});
  }
  // A checkpoint's state: numbers of the wrong kind name the file and field.
  const fs::path state = fs::path(dir) / "state.json";
  write_text(state, R"({"dir": 7})");
  fs::create_directories(fs::path(dir) / "run" / "checkpoints");
  write_text(fs::path(dir) / "run" / "checkpoints" / "latest.json", R"({"step": 1e30, "dir": 7})");
  expect_error([&] { checkpoint_latest_dir((fs::path(dir) / "run").string()); },
               {"latest.json: field 'dir'", "expected a string"});
  expect_error([&] { run_latest_checkpoint_step((fs::path(dir) / "run").string()); },
               {"latest.json: field 'step'", "expected an integer"});
  // A checkpoint name that would resolve to checkpoints/ itself or the run folder.
  for (const char* name : {"", ".", "..", "step_1/../..", "step_0000000x"}) {
    write_text(fs::path(dir) / "run" / "checkpoints" / "latest.json",
               nlohmann::json{{"step", 1}, {"dir", name}}.dump());
    expect_error([&] { checkpoint_latest_dir((fs::path(dir) / "run").string()); },
                 {"latest.json: field 'dir' must name a checkpoint folder step_NNNNNNNN"});
  }
  fs::remove_all(dir);
}

TEST(HostileFiles, SafetensorsShapesThatOverflowAreRefusedByTheOneReader) {
  const std::string dir = test::fresh_temp_dir("hostile_shapes");
  // 2^40 * 2^40 elements: a reader that multiplies before checking wraps (or goes negative).
  const std::string path = write_safetensors_bytes(
      fs::path(dir) / "model.safetensors",
      R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}})", "abcd");
  expect_error([&] { safetensors_read_header(path); }, {path, "overflows"});
  expect_error([&] { safetensors_header_read(path); }, {path, "overflows"});  // info's summary
  // 2^62 elements of F32: the element count fits, the byte count does not.
  const std::string path2 = write_safetensors_bytes(
      fs::path(dir) / "model2.safetensors",
      R"({"w":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,4]}})", "abcd");
  expect_error([&] { safetensors_header_read(path2); }, {path2, "overflows"});
  // A negative dimension.
  const std::string path3 = write_safetensors_bytes(
      fs::path(dir) / "model3.safetensors",
      R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", "abcd");
  expect_error([&] { safetensors_header_read(path3); }, {path3, "negative"});
  // Tensor shapes built in code are checked too.
  expect_error([] { shape_numel({int64_t{1} << 40, int64_t{1} << 40}); }, {"more elements than"});
  expect_error([] { shape_numel({4, -2}); }, {"negative dimension"});
  fs::remove_all(dir);
}

TEST(HostileFiles, WeightsAreCheckedAgainstTheConfigBeforeTheModelIsBuilt) {
  const std::string dir = test::fresh_temp_dir("hostile_weights");
  CpuBackend backend;
  Model model(test::tiny_config(), backend, DType::f32);
  model.initialize();
  model_save(model, dir);
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  EXPECT_NO_THROW(model_weights_check(weights, model.config()));
  // A config of 8.9e11 parameters beside these weights: building its model would take 7 TB.
  ModelConfig huge = test::tiny_config();
  huge.d_model = 65536;
  huge.n_heads = 512;
  huge.ffn_hidden = 1048576;
  huge.layers_per_stack = 4;
  huge.validate();
  expect_error([&] { model_weights_check(weights, huge); },
               {weights, "does not belong to these weights"});
  fs::remove_all(dir);
}

// The CLI: each class ends with exit code 1 and one message naming the file, fast (no model of
// the hostile size is ever allocated).
TEST(HostileFiles, TheCliNamesTheFileAndExitsWithOne) {
  const std::string dir = test::fresh_temp_dir("hostile_cli");
  CpuBackend backend;
  ModelConfig small = test::tiny_config();
  small.vocab_size = 257;  // the byte tokenizer's
  Model model(small, backend, DType::f32);
  model.initialize();
  model_save(model, dir);
  const std::string bin = SF_STAGFORMER_BIN;
  const std::string config = (fs::path(dir) / "config.json").string();
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  struct Case {
    std::string config_text, expected, file;
  };
  nlohmann::json huge = config_to_json(small);
  huge["d_model"] = 65536;
  huge["n_heads"] = 512;
  huge["ffn_hidden"] = 1048576;
  huge["layers_per_stack"] = 4;
  for (const Case& c :
       std::vector<Case>{{nested(100000), "nested deeper than", config},
                         {config_with("d_model", "1e400"), "not valid JSON", config},
                         {config_with("ffn_hidden", "1e20"), "field 'ffn_hidden'", config},
                         {huge.dump(), "does not belong to these weights", weights}}) {
    write_text(config, c.config_text);
    for (const std::string& command :
         {bin + " info -m " + dir, bin + " generate -m " + dir + " --tokenizer byte -p hi -n 2"}) {
      if (c.expected.find("belong") != std::string::npos && command.find(" info ") != std::string::npos)
        continue;  // info reads the header only and reports the mismatch as a warning
      const test::ShellResult r = test::run_shell(command);
      EXPECT_EQ(r.exit_code, 1) << command << "\n" << r.output;
      EXPECT_NE(r.output.find(c.expected), std::string::npos) << command << "\n" << r.output;
      EXPECT_NE(r.output.find(c.file), std::string::npos) << command << "\n" << r.output;
      EXPECT_EQ(r.output.find("internal error"), std::string::npos) << r.output;
    }
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
