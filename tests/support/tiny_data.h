// tiny_data.h — small prepared datasets (shards + tokenizer.json) and temp folders for tests.
#pragma once

#include <cstdint>
#include <string>

#include "support/test_util.h"

namespace sf::test {

// Writes a byte-tokenizer dataset into `dir`: data_train_000000.bin with `train_tokens` tokens
// and data_val_000000.bin with `val_tokens` tokens, both a repetitive text-like pattern (so
// a model can learn it quickly) with a little pseudo-random variation, plus tokenizer.json.
void write_tiny_dataset(const std::string& dir, int64_t train_tokens, int64_t val_tokens,
                        uint64_t seed = 1);

}  // namespace sf::test
