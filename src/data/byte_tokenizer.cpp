// byte_tokenizer.cpp — ByteTokenizer: one id per byte, plus end-of-text.
#include "data/byte_tokenizer.h"

#include "core/error.h"

namespace sf {

std::vector<int32_t> ByteTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode_token(int32_t id) const {
  SF_CHECK(id >= 0 && id < vocab_size(), "byte tokenizer: token id {} is outside the vocabulary of {}",
           id, vocab_size());
  if (id == kEndOfTextId) return std::string(kEndOfTextText);
  return std::string(1, static_cast<char>(static_cast<unsigned char>(id)));
}

}  // namespace sf
