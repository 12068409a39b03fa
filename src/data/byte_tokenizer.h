// byte_tokenizer.h — the byte-level tokenizer: ids 0..255 are the bytes themselves, id 256 is
// end-of-text (vocabulary 257). Needs no data file; used for tests and tiny models.
#pragma once

#include "data/tokenizer.h"

namespace sf {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEndOfTextId = 256;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode_token(int32_t id) const override;
  int32_t vocab_size() const override { return kEndOfTextId + 1; }
  int32_t eot_id() const override { return kEndOfTextId; }
  std::string name() const override { return "byte"; }
};

}  // namespace sf
