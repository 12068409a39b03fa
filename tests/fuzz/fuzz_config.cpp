// fuzz_config.cpp — fuzzes the model config loader (model/config.h): the input is a whole
// config.json, written to one scratch file per process, read by config_load(path) and by
// config_load(path, {"seed=1"}) (a --set override on top of whatever the file holds). An
// accepted config must survive config_save + config_load unchanged.
//
// fuzz-dict: json config   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "model/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("config.json");
  static const std::string saved_path = sf::fuzz::scratch_path("saved/config.json");
  sf::fuzz::write_bytes(path, data, size);
  sf::ModelConfig config;
  if (sf::fuzz::run_loader("config_load", [&] { config = sf::config_load(path); })) {
    sf::fuzz::run_loader("config_save round trip", [&] {
      sf::config_save(config, saved_path);
      const sf::ModelConfig again = sf::config_load(saved_path);
      sf::fuzz::require(sf::config_to_json(again) == sf::config_to_json(config),
                        "config_save + config_load gives the config back");
    });
  }
  sf::fuzz::run_loader("config_load with an override",
                       [&] { sf::config_load(path, std::vector<std::string>{"seed=1"}); });
  return 0;
}
