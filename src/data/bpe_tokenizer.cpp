// bpe_tokenizer.cpp — BpeTokenizer: tiktoken ranks loading, GPT-2 regex pre-tokenisation (PCRE2)
// and byte-pair merging.
#include "data/bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <charconv>
#include <climits>
#include <fstream>
#include <iterator>
#include <queue>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sf {

namespace {

// GPT-2's pre-tokenisation pattern (identical in effect to tiktoken's r50k_base pattern).
constexpr std::string_view kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// Pieces up to this many bytes use the simple quadratic merge loop (fastest for the short
// pieces of ordinary text) and are memoised per encode() call; longer ones use the heap-based
// merge, which stays O(n log n) on pathological pieces such as 100k spaces.
constexpr size_t kShortPieceBytes = 64;

std::string pcre2_error_text(int code) {
  PCRE2_UCHAR buffer[256];
  int length = pcre2_get_error_message(code, buffer, sizeof(buffer));
  if (length < 0) return fmt::format("PCRE2 error {}", code);
  return std::string(reinterpret_cast<const char*>(buffer), static_cast<size_t>(length));
}

// Length (1-4) of the well-formed UTF-8 sequence starting at text[i], or 0 when none starts there.
// Strict RFC 3629 (no overlong forms, no surrogates, nothing above U+10FFFF): at least as strict
// as PCRE2's own check, so runs accepted here are safe to match with PCRE2_NO_UTF_CHECK.
size_t utf8_sequence_length(std::string_view text, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  size_t length = 0;
  unsigned char second_min = 0x80, second_max = 0xbf;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    if (lead == 0xe0) second_min = 0xa0;  // overlong
    if (lead == 0xed) second_max = 0x9f;  // surrogates
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    if (lead == 0xf0) second_min = 0x90;  // overlong
    if (lead == 0xf4) second_max = 0x8f;  // above U+10FFFF
  } else {
    return 0;  // continuation byte, overlong lead 0xc0/0xc1, or 0xf5..0xff
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < second_min || byte(i + 1) > second_max) return 0;
  for (size_t k = 2; k < length; ++k)
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  return length;
}

// Value of one base64 character, or -1.
int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Decodes standard (RFC 4648, padded) base64; returns false on any malformation.
bool decode_base64(std::string_view text, std::string& out) {
  out.clear();
  if (text.empty() || text.size() % 4 != 0) return false;
  for (size_t i = 0; i < text.size(); i += 4) {
    bool last_quad = i + 4 == text.size();
    int padding = 0;
    if (last_quad) padding = (text[i + 3] == '=') + (text[i + 2] == '=' && text[i + 3] == '=');
    uint32_t bits = 0;
    for (size_t j = 0; j < 4; ++j) {
      int value = 0;
      if (j < 4 - static_cast<size_t>(padding)) {
        value = base64_value(text[i + j]);
        if (value < 0) return false;
      }
      bits = (bits << 6) | static_cast<uint32_t>(value);
    }
    out.push_back(static_cast<char>((bits >> 16) & 0xff));
    if (padding < 2) out.push_back(static_cast<char>((bits >> 8) & 0xff));
    if (padding < 1) out.push_back(static_cast<char>(bits & 0xff));
  }
  return true;
}

}  // namespace

struct BpeTokenizer::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }
};

BpeTokenizer::BpeTokenizer(const std::string& ranks_path) : ranks_path_(ranks_path) {
  load_ranks(ranks_path);

  regex_ = std::make_unique<Regex>();
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern.data()), kGpt2Pattern.size(),
                               PCRE2_UTF | PCRE2_UCP, &error_code,
                               &error_offset, nullptr);
  SF_CHECK(regex_->code != nullptr, "GPT-2 pre-tokenisation regex failed to compile at offset {}: {}",
           error_offset, pcre2_error_text(error_code));
  // JIT is an optimisation only: when unavailable (or refused), the interpreter gives the same
  // matches.
  regex_->jit = pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE) == 0;
}

BpeTokenizer::~BpeTokenizer() = default;

void BpeTokenizer::load_ranks(const std::string& ranks_path) {
  // r50k_base is 1.6 MB and the largest tiktoken file (o200k_base) 3.6 MB: 64 MiB bounds what
  // a wrong path (a data set, /dev/zero) can make us read.
  const std::vector<uint8_t> bytes = read_file(ranks_path, uint64_t{64} << 20);
  const std::string contents(bytes.begin(), bytes.end());

  std::vector<std::pair<std::string, int64_t>> entries;  // (token bytes, rank) in file order
  std::vector<size_t> entry_line;                        // 1-based line number of each entry
  size_t line_number = 0;
  size_t position = 0;
  std::string token;
  while (position < contents.size()) {
    size_t line_end = contents.find('\n', position);
    if (line_end == std::string::npos) line_end = contents.size();
    std::string_view line(contents.data() + position, line_end - position);
    position = line_end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;  // tiktoken skips blank lines too

    size_t space = line.find(' ');
    SF_CHECK(space != std::string_view::npos,
             "{}:{}: expected 'base64-token rank', found no rank in '{}'", ranks_path, line_number,
             line.substr(0, 80));
    std::string_view encoded = line.substr(0, space);
    std::string_view rank_text = line.substr(space + 1);
    SF_CHECK(decode_base64(encoded, token), "{}:{}: invalid base64 token '{}'", ranks_path,
             line_number, encoded.substr(0, 80));
    int64_t rank = -1;
    auto [end, error] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    SF_CHECK(error == std::errc() && end == rank_text.data() + rank_text.size() && !rank_text.empty(),
             "{}:{}: rank '{}' is not a non-negative integer", ranks_path, line_number,
             rank_text.substr(0, 80));
    SF_CHECK(rank >= 0 && rank < INT32_MAX - 1, "{}:{}: rank {} is out of range", ranks_path,
             line_number, rank);
    entries.emplace_back(token, rank);
    entry_line.push_back(line_number);
  }
  SF_CHECK(!entries.empty(), "tokenizer ranks file {} holds no tokens", ranks_path);

  // Ranks must be exactly 0..N-1, each once, so that rank == id and every id has bytes.
  const size_t count = entries.size();
  std::vector<size_t> line_of_rank(count, 0);
  for (size_t i = 0; i < count; ++i) {
    int64_t rank = entries[i].second;
    SF_CHECK(static_cast<size_t>(rank) < count,
             "{}:{}: rank {} is not below the number of tokens {} (ranks must be 0..{})", ranks_path,
             entry_line[i], rank, count, count - 1);
    SF_CHECK(line_of_rank[rank] == 0, "{}:{}: duplicate rank {} (first on line {})", ranks_path,
             entry_line[i], rank, line_of_rank[rank]);
    line_of_rank[rank] = entry_line[i];
  }

  token_bytes_.assign(count, std::string());
  for (auto& [bytes, rank] : entries) token_bytes_[rank] = std::move(bytes);
  rank_of_bytes_.reserve(count);
  for (size_t rank = 0; rank < count; ++rank) {
    auto [it, inserted] = rank_of_bytes_.emplace(token_bytes_[rank], static_cast<int32_t>(rank));
    SF_CHECK(inserted, "{}:{}: duplicate token (same bytes as rank {} on line {})", ranks_path,
             line_of_rank[rank], it->second, line_of_rank[it->second]);
  }
  // Byte-level BPE needs every single byte as a token, or some inputs could not be encoded.
  for (int byte = 0; byte < 256; ++byte) {
    char c = static_cast<char>(byte);
    SF_CHECK(rank_of(std::string_view(&c, 1)) >= 0,
             "tokenizer ranks file {} has no token for the single byte 0x{:02x}; byte-level BPE "
             "needs all 256",
             ranks_path, byte);
  }
}

std::vector<std::string_view> BpeTokenizer::pretokenize(std::string_view text) const {
  std::vector<std::string_view> pieces;
  pcre2_match_data* match_data = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  SF_CHECK(match_data != nullptr, "out of memory creating PCRE2 match data");
  const size_t n = text.size();
  size_t position = 0;
  while (position < n) {
    // A run of bytes that start no valid UTF-8 sequence is one piece of its own.
    size_t valid_end = position;
    while (valid_end < n) {
      size_t length = utf8_sequence_length(text, valid_end);
      if (length == 0) break;
      valid_end += length;
    }
    if (valid_end == position) {
      size_t invalid_end = position + 1;
      while (invalid_end < n && utf8_sequence_length(text, invalid_end) == 0) ++invalid_end;
      pieces.push_back(text.substr(position, invalid_end - position));
      position = invalid_end;
      continue;
    }
    // Split the valid run [position, valid_end) with the regex. The run is the whole subject, so
    // (?!\S) succeeds at its end, as at an invalid byte under PCRE2_MATCH_INVALID_UTF.
    auto subject = reinterpret_cast<PCRE2_SPTR>(text.data() + position);
    const size_t run_length = valid_end - position;
    size_t offset = 0;
    while (offset < run_length) {
      int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, run_length, offset, PCRE2_NO_UTF_CHECK,
                                             match_data, nullptr)
                           : pcre2_match(regex_->code, subject, run_length, offset, PCRE2_NO_UTF_CHECK,
                                         match_data, nullptr);
      size_t match_start = run_length, match_end = run_length;
      if (rc >= 0) {
        PCRE2_SIZE* offsets = pcre2_get_ovector_pointer(match_data);
        match_start = offsets[0];
        match_end = offsets[1];
      } else if (rc != PCRE2_ERROR_NOMATCH) {
        pcre2_match_data_free(match_data);
        fail(fmt::format("GPT-2 pre-tokenisation failed at byte {} of a {}-byte text: {}",
                         position + offset, n, pcre2_error_text(rc)));
      }
      // The pattern matches every character, so matches are contiguous; should one ever skip
      // bytes, they still become a piece, so that every byte is encoded.
      if (match_start > offset) pieces.push_back(text.substr(position + offset, match_start - offset));
      if (match_end > match_start) pieces.push_back(text.substr(position + match_start, match_end - match_start));
      // Every alternative of the pattern consumes at least one character, so this advances.
      offset = std::max(match_end, match_start + 1);
    }
    position = valid_end;
  }
  pcre2_match_data_free(match_data);
  return pieces;
}

std::vector<int32_t> BpeTokenizer::encode_piece(std::string_view piece) const {
  if (piece.empty()) return {};
  if (int32_t whole = rank_of(piece); whole >= 0) return {whole};
  const size_t n = piece.size();
  std::vector<int32_t> ids;

  if (n <= kShortPieceBytes) {
    // tiktoken's loop: part_start holds the start of each current part (plus n at the end);
    // pair_rank[i] is the rank of parts i and i+1 joined, or INT_MAX when that is no token.
    std::vector<size_t> part_start(n + 1);
    for (size_t i = 0; i <= n; ++i) part_start[i] = i;
    auto joined_rank = [&](size_t i) {
      if (i + 2 >= part_start.size()) return INT_MAX;
      int32_t rank = rank_of(piece.substr(part_start[i], part_start[i + 2] - part_start[i]));
      return rank < 0 ? INT_MAX : rank;
    };
    std::vector<int> pair_rank(n);
    for (size_t i = 0; i + 1 < n; ++i) pair_rank[i] = joined_rank(i);
    pair_rank[n - 1] = INT_MAX;
    while (part_start.size() > 2) {
      auto best = std::min_element(pair_rank.begin(), pair_rank.end());  // leftmost minimum
      if (*best == INT_MAX) break;
      size_t i = static_cast<size_t>(best - pair_rank.begin());
      part_start.erase(part_start.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      pair_rank.erase(pair_rank.begin() + static_cast<std::ptrdiff_t>(i) + 1);
      pair_rank[i] = joined_rank(i);
      if (i > 0) pair_rank[i - 1] = joined_rank(i - 1);
    }
    ids.reserve(part_start.size() - 1);
    for (size_t i = 0; i + 1 < part_start.size(); ++i)
      ids.push_back(rank_of(piece.substr(part_start[i], part_start[i + 1] - part_start[i])));
    return ids;
  }

  // Heap-based merge with the same result: parts form a linked list, each identified by its start
  // byte (a merge keeps the left part), so ordering candidates by (rank, left start) reproduces
  // "lowest rank, leftmost on ties". Candidates invalidated by a later merge are recognised by
  // the parts' version counters and skipped.
  std::vector<size_t> part_end(n), next(n), prev(n);
  std::vector<uint32_t> version(n, 0);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) {
    part_end[i] = i + 1;
    next[i] = i + 1;  // n means "none"
    prev[i] = i == 0 ? n : i - 1;
  }
  struct Candidate {
    int32_t rank;
    size_t left, right;
    uint32_t left_version, right_version;
    bool operator>(const Candidate& other) const {
      return rank != other.rank ? rank > other.rank : left > other.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> candidates;
  auto push_pair = [&](size_t left) {
    if (left >= n) return;
    size_t right = next[left];
    if (right >= n) return;
    int32_t rank = rank_of(piece.substr(left, part_end[right] - left));
    if (rank >= 0) candidates.push({rank, left, right, version[left], version[right]});
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!candidates.empty()) {
    Candidate c = candidates.top();
    candidates.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        version[c.left] != c.left_version || version[c.right] != c.right_version)
      continue;
    part_end[c.left] = part_end[c.right];
    next[c.left] = next[c.right];
    if (next[c.right] < n) prev[next[c.right]] = c.left;
    alive[c.right] = false;
    ++version[c.left];
    push_pair(prev[c.left]);
    push_pair(c.left);
  }
  for (size_t part = 0; part < n; part = next[part])
    ids.push_back(rank_of(piece.substr(part, part_end[part] - part)));
  return ids;
}

std::vector<int32_t> BpeTokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  // Memo of short pieces for this call only: keeps encode() const and thread-safe without locks,
  // and on long texts (where it matters) common words repeat within the call anyway.
  std::unordered_map<std::string_view, std::vector<int32_t>> memo;
  for (std::string_view piece : pretokenize(text)) {
    if (int32_t whole = rank_of(piece); whole >= 0) {
      ids.push_back(whole);
      continue;
    }
    if (piece.size() > kShortPieceBytes) {
      std::vector<int32_t> piece_ids = encode_piece(piece);
      ids.insert(ids.end(), piece_ids.begin(), piece_ids.end());
      continue;
    }
    auto it = memo.find(piece);
    if (it == memo.end()) it = memo.emplace(piece, encode_piece(piece)).first;
    ids.insert(ids.end(), it->second.begin(), it->second.end());
  }
  return ids;
}

std::string BpeTokenizer::decode_token(int32_t id) const {
  SF_CHECK(id >= 0 && id < vocab_size(), "{} tokenizer: token id {} is outside the vocabulary of {}",
           name(), id, vocab_size());
  if (id == eot_id()) return std::string(kEndOfTextText);
  return token_bytes_[static_cast<size_t>(id)];
}

}  // namespace sf
