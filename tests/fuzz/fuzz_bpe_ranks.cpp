// fuzz_bpe_ranks.cpp — fuzzes the tiktoken ranks-file loader of the GPT-2 tokenizer
// (BpeTokenizer(ranks_path), data/bpe_tokenizer.h): the input is a whole ranks file
// ("base64-token rank" per line), written to one scratch file per process. A file that loads
// gives a tokenizer that must keep the Tokenizer contract (data/tokenizer.h) on a fixed text:
// ids inside the vocabulary and decode(encode(text)) == text.
//
// fuzz-dict: ranks   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include "data/bpe_tokenizer.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("ranks.tiktoken");
  sf::fuzz::write_bytes(path, data, size);
  sf::fuzz::run_loader("BpeTokenizer(ranks file)", [&] {
    const sf::BpeTokenizer tokenizer(path);
    sf::fuzz::require(
        tokenizer.vocab_size() >= 257 && tokenizer.eot_id() == tokenizer.vocab_size() - 1,
        "a loaded ranks file has every byte and end-of-text last");
    static const std::string text =
        "Call me Ishmael.  It's 1851 -- \xe2\x80\x9cwhale\xe2\x80\x9d, \xff\xfe bytes\r\n\t ok's";
    const std::vector<int32_t> ids = tokenizer.encode(text);
    for (int32_t id : ids)
      sf::fuzz::require(id >= 0 && id < tokenizer.vocab_size(),
                        "encode() gives ids in the vocabulary");
    sf::fuzz::require(tokenizer.decode(ids) == text, "decode(encode(text)) == text");
  });
  return 0;
}
