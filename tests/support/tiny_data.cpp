// tiny_data.cpp — tiny datasets for trainer and CLI tests.
#include "support/tiny_data.h"

#include <unistd.h>

#include <filesystem>
#include <vector>

#include "core/rng.h"
#include "data/byte_tokenizer.h"
#include "data/shards.h"
#include "data/tokenizer_files.h"

namespace sf::test {

namespace fs = std::filesystem;

void write_tiny_dataset(const std::string& dir, int64_t train_tokens, int64_t val_tokens,
                        uint64_t seed) {
  fs::create_directories(dir);
  Rng rng(seed);
  const std::string words[] = {"the ", "whale ", "sea ", "ship ", "captain ", "white ", "and ", "of "};
  auto make = [&](int64_t n) {
    std::vector<int32_t> ids;
    ids.push_back(256);  // end-of-text opens the document
    while (static_cast<int64_t>(ids.size()) < n) {
      for (unsigned char c : words[rng.below(8)]) ids.push_back(c);
      if (rng.below(10) == 0) ids.push_back('.');
    }
    ids.resize(static_cast<size_t>(n));
    return ids;
  };
  const auto train = make(train_tokens);
  const auto val = make(val_tokens);
  write_shard(fs::path(dir) / "data_train_000000.bin", train, 257);
  write_shard(fs::path(dir) / "data_val_000000.bin", val, 257);
  tokenizer_spec_save(tokenizer_spec_of(ByteTokenizer()), (fs::path(dir) / "tokenizer.json").string());
}

}  // namespace sf::test
