// fuzz_bpe_encode.cpp — fuzzes GPT-2 BPE encoding of arbitrary bytes (BpeTokenizer::encode,
// data/bpe_tokenizer.h) with the real r50k_base ranks (default_ranks_path(), loaded once per
// process). Checks the Tokenizer contract (data/tokenizer.h) on every input, valid UTF-8 or not:
// ids inside the vocabulary, never end-of-text from encode(), decode(encode(s)) == s,
// decode(encode_with_special(s)) == s, and pretokenize() covering the input exactly.
//
// fuzz-dict: text   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <memory>

#include "data/bpe_tokenizer.h"
#include "data/tokenizer_files.h"
#include "fuzz_util.h"

namespace {
const sf::BpeTokenizer* tokenizer = nullptr;
}

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  try {
    tokenizer = new sf::BpeTokenizer(sf::default_ranks_path());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_bpe_encode: cannot load the GPT-2 ranks: %s\n", e.what());
    std::exit(2);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  sf::fuzz::run_loader("BpeTokenizer::encode", [&] {
    const std::vector<int32_t> ids = tokenizer->encode(text);
    for (int32_t id : ids)
      sf::fuzz::require(id >= 0 && id < tokenizer->eot_id(),
                        "encode() gives ids of ordinary tokens only");
    sf::fuzz::require(tokenizer->decode(ids) == text, "decode(encode(s)) == s");
    sf::fuzz::require(tokenizer->decode(tokenizer->encode_with_special(text)) == text,
                      "decode(encode_with_special(s)) == s");
    size_t covered = 0;
    for (std::string_view piece : tokenizer->pretokenize(text)) {
      sf::fuzz::require(!piece.empty() && piece.data() == text.data() + covered,
                        "pretokenize() pieces are non-empty and contiguous");
      covered += piece.size();
    }
    sf::fuzz::require(covered == text.size(), "pretokenize() covers the text");
  });
  return 0;
}
