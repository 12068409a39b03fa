// fuzz_shards.cpp — fuzzes the llm.c token-shard reader (data/shards.h): the input is a whole
// shard file, written to one scratch file per process, read by read_shard_header, read_shard
// (without and with an id limit) and ShardReader windows. An accepted shard must hold exactly the
// header's token count, and every window must agree with the whole read.
//
// fuzz-dict: shards   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <algorithm>

#include "data/shards.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("data_train_000000.bin");
  sf::fuzz::write_bytes(path, data, size);
  sf::ShardHeader header;
  if (!sf::fuzz::run_loader("read_shard_header", [&] { header = sf::read_shard_header(path); }))
    return 0;
  sf::fuzz::require(header.token_bytes == 2 || header.token_bytes == 4, "token_bytes is 2 or 4");
  sf::fuzz::require(header.num_tokens >= 0 &&
                        sf::kShardHeaderBytes + header.num_tokens * header.token_bytes == size,
                    "an accepted shard is exactly header + num_tokens * token_bytes bytes");
  std::vector<int32_t> all;
  // A uint32 shard may hold ids past int32: read_shard refuses those.
  if (!sf::fuzz::run_loader("read_shard", [&] { all = sf::read_shard(path); })) return 0;
  sf::fuzz::require(static_cast<int64_t>(all.size()) == header.num_tokens,
                    "read_shard gives num_tokens ids");
  for (int32_t id : all) sf::fuzz::require(id >= 0, "ids are non-negative");
  sf::fuzz::run_loader("read_shard with vocab_size", [&] { sf::read_shard(path, 50257); });
  sf::fuzz::run_loader("ShardReader", [&] {
    const sf::ShardReader reader(path, 0);
    const int64_t n = reader.num_tokens();
    const int64_t half = n / 2;
    const std::vector<int32_t> window = reader.read(half, n - half);
    sf::fuzz::require(std::equal(window.begin(), window.end(), all.begin() + half),
                      "a ShardReader window equals the same range of read_shard");
    sf::fuzz::require(!sf::fuzz::run_loader("ShardReader past the end", [&] { reader.read(n, 1); }),
                      "reading past the end of a shard throws sf::Error");
  });
  return 0;
}
