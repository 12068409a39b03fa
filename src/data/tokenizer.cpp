// tokenizer.cpp — the shared parts of the Tokenizer interface (decode, special-token splitting)
// and the make_tokenizer factory.
#include "data/tokenizer.h"

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"

namespace sf {

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) text += decode_token(id);
  return text;
}

std::vector<int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  std::vector<int32_t> ids;
  size_t start = 0;
  while (start <= text.size()) {
    size_t marker = text.find(kEndOfTextText, start);
    size_t end = marker == std::string_view::npos ? text.size() : marker;
    std::vector<int32_t> part = encode(text.substr(start, end - start));
    ids.insert(ids.end(), part.begin(), part.end());
    if (marker == std::string_view::npos) break;
    ids.push_back(eot_id());
    start = marker + kEndOfTextText.size();
  }
  return ids;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& ranks_path) {
  if (kind == "byte") return std::make_unique<ByteTokenizer>();
  if (kind == "gpt2") {
    SF_CHECK(!ranks_path.empty(),
             "tokenizer 'gpt2' needs a ranks file (r50k_base.tiktoken); none was given");
    return std::make_unique<BpeTokenizer>(ranks_path);
  }
  fail(fmt::format("unknown tokenizer '{}' (expected 'byte' or 'gpt2')", kind));
}

}  // namespace sf
