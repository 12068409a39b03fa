// tokenizer.h — the abstract text <-> token-id interface shared by every tokenizer of stagformer,
// and the factory that builds one by name ("byte" or "gpt2").
//
// Contract for every implementation:
//   - encode() treats its input as raw bytes; any byte string (invalid UTF-8 included) encodes,
//     and decode(encode(s)) == s exactly.
//   - The end-of-text marker "<|endoftext|>" inside text given to encode() is ordinary text (like
//     tiktoken's encode_ordinary), so untrusted text can never inject the special id.
//     encode_with_special() recognises it and emits eot_id() instead.
//   - decode() of the end-of-text id yields the text "<|endoftext|>"; decode of an id outside
//     [0, vocab_size()) throws sf::Error naming the id and the vocabulary size.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sf {

// The textual form of the end-of-text special token (GPT-2's spelling).
inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Token ids of `text`, with "<|endoftext|>" encoded as plain text.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  // Concatenated bytes of `ids`; throws sf::Error on an id outside [0, vocab_size()).
  virtual std::string decode(const std::vector<int32_t>& ids) const;
  // Raw bytes of one token (possibly a partial UTF-8 sequence), for streaming output.
  virtual std::string decode_token(int32_t id) const = 0;
  // Number of ids, special tokens included: every id is in [0, vocab_size()).
  virtual int32_t vocab_size() const = 0;
  // Id of the end-of-text token separating documents.
  virtual int32_t eot_id() const = 0;
  // Short name for logs and model metadata ("byte", "gpt2").
  virtual std::string name() const = 0;

  // Like encode(), but every occurrence of "<|endoftext|>" becomes eot_id().
  std::vector<int32_t> encode_with_special(std::string_view text) const;
};

// Builds a tokenizer: kind "byte" (ranks_path ignored) or "gpt2" (GPT-2 BPE from the tiktoken
// ranks file at ranks_path, e.g. third_party_data/gpt-tokenizer/r50k_base.tiktoken).
// Throws sf::Error for an unknown kind, a missing path, or an invalid ranks file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& kind, const std::string& ranks_path);

}  // namespace sf
