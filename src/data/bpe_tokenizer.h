// bpe_tokenizer.h — GPT-2 byte-level BPE tokenizer loaded from a tiktoken ranks file
// (`base64(token bytes) SP rank` per line; r50k_base.tiktoken: ranks 0..50255, end-of-text 50256).
//
// Encoding = tiktoken's algorithm: the text is split into pieces by GPT-2's pre-tokenisation regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (PCRE2, UTF + UCP, JIT when available); each piece's bytes are then merged pairwise, always
// merging the adjacent pair whose concatenation has the lowest rank (leftmost on ties), until no
// adjacent pair is a token. The rank of a token is its id.
//
// Invalid UTF-8: GPT-2 is byte-level, so any byte string must encode and round-trip. The text is
// first cut into maximal runs of well-formed UTF-8 (strict RFC 3629) and runs of bytes that start
// no valid sequence. Each valid run is split by the regex (matched with PCRE2_NO_UTF_CHECK: the
// run was just validated), exactly as tiktoken splits it; each invalid run becomes one piece of
// its own, merged by BPE like any other piece (the treatment a run of punctuation gets). This is
// what PCRE2_MATCH_INVALID_UTF would give (invalid sequences are barriers no match crosses), but
// linear in the text length: with that option PCRE2's interpreter re-validates the rest of the
// subject on every call, which made encoding quadratic (163 s for Moby-Dick without JIT).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace sf {

class BpeTokenizer final : public Tokenizer {
 public:
  // Loads and validates the ranks file; throws sf::Error naming the file and line of a bad
  // entry (malformed line, bad base64, missing or non-numeric rank, duplicate rank or token,
  // ranks not exactly 0..N-1, a single byte without a token).
  explicit BpeTokenizer(const std::string& ranks_path);
  ~BpeTokenizer() override;
  BpeTokenizer(const BpeTokenizer&) = delete;
  BpeTokenizer& operator=(const BpeTokenizer&) = delete;

  std::vector<int32_t> encode(std::string_view text) const override;
  std::string decode_token(int32_t id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()) + 1; }
  int32_t eot_id() const override { return static_cast<int32_t>(token_bytes_.size()); }
  std::string name() const override { return "gpt2"; }

  // The pieces the pre-tokenisation regex splits `text` into (views into `text`, in order,
  // covering it exactly). Exposed for tests and diagnostics.
  std::vector<std::string_view> pretokenize(std::string_view text) const;
  // Ids of one piece by byte-pair merging (no regex split). Exposed for tests.
  std::vector<int32_t> encode_piece(std::string_view piece) const;

 private:
  struct Regex;  // the compiled PCRE2 pattern (keeps pcre2.h out of this header)

  void load_ranks(const std::string& ranks_path);
  // Rank of `bytes` as a token, or -1 when it is not one.
  int32_t rank_of(std::string_view bytes) const {
    auto it = rank_of_bytes_.find(bytes);
    return it == rank_of_bytes_.end() ? -1 : it->second;
  }

  std::string ranks_path_;
  std::vector<std::string> token_bytes_;  // id -> bytes, ids 0..N-1 (end-of-text N is special)
  // bytes -> id; keys view into token_bytes_, which is never resized after loading.
  std::unordered_map<std::string_view, int32_t> rank_of_bytes_;
  std::unique_ptr<Regex> regex_;
};

}  // namespace sf
