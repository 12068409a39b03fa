// shards.h — token shards in llm.c's binary format, so shards made by llm.c's data scripts
// (FineWeb, TinyStories, ...) and by `stagformer prepare` are interchangeable.
//
// Layout (all little-endian): a header of 256 int32 — [0] magic, [1] version, [2] token count,
// the rest zero — followed by the tokens:
//   magic 20240520, version 1: uint16 tokens (GPT-2-sized vocabularies, <= 65536 ids)
//   magic 20240801, version 7: uint32 tokens (larger vocabularies, e.g. Llama 3)
// File names follow llm.c: <name>_train_<index>.bin / <name>_val_<index>.bin (or _train.bin).
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace sf {

inline constexpr int32_t kShardMagicUint16 = 20240520;
inline constexpr int32_t kShardVersionUint16 = 1;
inline constexpr int32_t kShardMagicUint32 = 20240801;
inline constexpr int32_t kShardVersionUint32 = 7;
inline constexpr size_t kShardHeaderInts = 256;
inline constexpr size_t kShardHeaderBytes = kShardHeaderInts * sizeof(int32_t);

struct ShardHeader {
  int32_t magic = 0;
  int32_t version = 0;
  int64_t num_tokens = 0;
  size_t token_bytes = 0;  // 2 (uint16) or 4 (uint32)
};

// Writes `tokens` as a shard, atomically (temporary file in the same folder, then rename), so a
// reader never sees a half-written shard. Uses uint16 tokens when vocab_size <= 65536, else
// uint32. Throws sf::Error naming the position and id of a token outside [0, vocab_size), or when
// there are more tokens than the int32 header count can hold, or on any I/O failure.
void write_shard(const std::filesystem::path& path, std::span<const int32_t> tokens, int32_t vocab_size);

// Reads and validates a shard's header: known magic/version pair (else the error names the file
// and the values found) and file size == 1024 + num_tokens * token_bytes (else the error names
// the file, the expected and the actual size).
ShardHeader read_shard_header(const std::filesystem::path& path);

// Reads a whole shard into memory as int32 ids (4 bytes per token in RAM: a 100M-token shard
// takes 400 MB; use ShardReader to read windows of a larger one). With vocab_size > 0, every id
// must be < vocab_size (else the error names the file, the position and the id).
std::vector<int32_t> read_shard(const std::filesystem::path& path, int32_t vocab_size = 0);

// Random access to a validated shard without loading it whole (what a training data loader
// needs: windows of B*T+1 tokens at arbitrary positions).
class ShardReader {
 public:
  // Validates the header and size like read_shard_header; vocab_size > 0 enables id checks on
  // every read.
  explicit ShardReader(std::filesystem::path path, int32_t vocab_size = 0);
  ~ShardReader();
  ShardReader(ShardReader&& other) noexcept;
  ShardReader& operator=(ShardReader&& other) noexcept;
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::filesystem::path& path() const { return path_; }
  const ShardHeader& header() const { return header_; }
  int64_t num_tokens() const { return header_.num_tokens; }
  // Tokens [start, start + count) as int32; throws sf::Error when the range leaves the shard.
  // Safe to call from several threads at once (positioned reads on one descriptor).
  std::vector<int32_t> read(int64_t start, int64_t count) const;

 private:
  std::filesystem::path path_;
  ShardHeader header_;
  int32_t vocab_size_ = 0;
  int fd_ = -1;
};

// Shards of one split ("train" or "val") in `folder`, sorted by file name: regular files named
// *_<split>_*.bin or *_<split>.bin (llm.c's naming; its indices are zero-padded, so name order is
// shard order). Throws sf::Error when the folder does not exist; returns an empty list when it
// holds no matching file.
std::vector<std::filesystem::path> list_shards(const std::filesystem::path& folder, std::string_view split);

}  // namespace sf
