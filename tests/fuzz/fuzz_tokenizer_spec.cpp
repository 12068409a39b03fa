// fuzz_tokenizer_spec.cpp — fuzzes the tokenizer.json reader (tokenizer_spec_load,
// data/tokenizer_files.h): the input is a whole tokenizer.json, written to one scratch file per
// process. An accepted spec must survive tokenizer_spec_save + tokenizer_spec_load unchanged.
//
// fuzz-dict: json tokenizer   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include "data/tokenizer_files.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("tokenizer.json");
  static const std::string saved_path = sf::fuzz::scratch_path("saved/tokenizer.json");
  sf::fuzz::write_bytes(path, data, size);
  sf::TokenizerSpec spec;
  if (!sf::fuzz::run_loader("tokenizer_spec_load", [&] { spec = sf::tokenizer_spec_load(path); }))
    return 0;
  sf::fuzz::require(spec.kind == "gpt2" || spec.kind == "byte", "kind is gpt2 or byte");
  sf::fuzz::require(spec.vocab_size >= 0 && spec.eot_id >= 0 && spec.eot_id < spec.vocab_size,
                    "0 <= eot_id < vocab_size");
  sf::fuzz::run_loader("tokenizer_spec_save round trip", [&] {
    sf::tokenizer_spec_save(spec, saved_path);
    const sf::TokenizerSpec again = sf::tokenizer_spec_load(saved_path);
    sf::fuzz::require(again.kind == spec.kind && again.vocab_size == spec.vocab_size &&
                          again.eot_id == spec.eot_id,
                      "tokenizer_spec_save + tokenizer_spec_load gives the spec back");
  });
  return 0;
}
