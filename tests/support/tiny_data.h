// tiny_data.h — small prepared datasets (shards + tokenizer.json) and temp folders for tests.
#pragma once

#include <cstdint>
#include <string>

namespace sf::test {

// A fresh empty folder under the system temp dir, unique to this process and `name`.
std::string fresh_temp_dir(const std::string& name);

// Writes a byte-tokenizer dataset into `dir`: data_train_000000.bin with `train_tokens` tokens
// and data_val_000000.bin with `val_tokens` tokens, both a repetitive text-like pattern (so
// a model can learn it quickly) with a little pseudo-random variation, plus tokenizer.json.
void write_tiny_dataset(const std::string& dir, int64_t train_tokens, int64_t val_tokens,
                        uint64_t seed = 1);

}  // namespace sf::test
