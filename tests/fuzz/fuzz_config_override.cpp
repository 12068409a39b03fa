// fuzz_config_override.cpp — fuzzes `--set key=value` (config_apply_override, model/config.h):
// the input is split at newlines into assignments, applied in order onto a valid config's JSON,
// and the result is read by config_from_json (what config_load(path, overrides) does).
//
// fuzz-dict: json config   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const nlohmann::json base = [] {
    sf::ModelConfig c;
    c.vocab_size = 11;
    c.d_model = 8;
    c.n_heads = 2;
    c.ffn_hidden = 12;
    c.max_seq_len = 16;
    c.layers_per_stack = 1;
    c.validate("fuzz base config");
    return sf::config_to_json(c);
  }();
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  nlohmann::json j = base;
  sf::fuzz::run_loader("config_apply_override + config_from_json", [&] {
    size_t start = 0;
    while (start <= input.size()) {
      size_t end = input.find('\n', start);
      if (end == std::string_view::npos) end = input.size();
      sf::config_apply_override(j, std::string(input.substr(start, end - start)));
      start = end + 1;
    }
    sf::config_from_json(j, "fuzz overrides");
  });
  return 0;
}
