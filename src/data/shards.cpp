// shards.cpp — llm.c token shards: atomic writer, validating reader, split listing.
#include "data/shards.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <utility>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sf {

namespace {

// Tokens converted per chunk when writing or reading, bounding the temporary byte buffer.
constexpr size_t kChunkTokens = size_t{1} << 20;

void put_le32(uint8_t* out, uint32_t value) {
  out[0] = static_cast<uint8_t>(value);
  out[1] = static_cast<uint8_t>(value >> 8);
  out[2] = static_cast<uint8_t>(value >> 16);
  out[3] = static_cast<uint8_t>(value >> 24);
}

uint32_t get_le32(const uint8_t* in) {
  return uint32_t{in[0]} | uint32_t{in[1]} << 8 | uint32_t{in[2]} << 16 | uint32_t{in[3]} << 24;
}

// Reads exactly `bytes` at `offset` of `fd`; throws naming the file on error or early end.
void read_exact(int fd, const std::filesystem::path& path, uint8_t* out, size_t bytes, int64_t offset) {
  size_t done = 0;
  while (done < bytes) {
    ssize_t got = ::pread(fd, out + done, bytes - done, static_cast<off_t>(offset + done));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail(fmt::format("shard {}: read failed: {}", path.string(), std::strerror(errno)));
    }
    SF_CHECK(got > 0, "shard {}: file ended at byte {} while reading {} bytes at offset {} (was it "
             "truncated while open?)", path.string(), offset + done, bytes, offset);
    done += static_cast<size_t>(got);
  }
}

int open_for_reading(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fmt::format("shard {}: cannot open: {}", path.string(), std::strerror(errno)));
  return fd;
}

// Validates the header of an open shard against the file's size.
ShardHeader parse_header(int fd, const std::filesystem::path& path) {
  std::error_code error;
  uintmax_t file_size = std::filesystem::file_size(path, error);
  SF_CHECK(!error, "shard {}: cannot get its size: {}", path.string(), error.message());
  SF_CHECK(file_size >= kShardHeaderBytes,
           "shard {}: {} bytes is shorter than the {}-byte llm.c header", path.string(), file_size,
           kShardHeaderBytes);
  uint8_t raw[kShardHeaderBytes];
  read_exact(fd, path, raw, kShardHeaderBytes, 0);

  ShardHeader header;
  header.magic = static_cast<int32_t>(get_le32(raw));
  header.version = static_cast<int32_t>(get_le32(raw + 4));
  header.num_tokens = static_cast<int32_t>(get_le32(raw + 8));
  if (header.magic == kShardMagicUint16 && header.version == kShardVersionUint16) {
    header.token_bytes = 2;
  } else if (header.magic == kShardMagicUint32 && header.version == kShardVersionUint32) {
    header.token_bytes = 4;
  } else {
    fail(fmt::format("shard {}: unknown magic/version {}/{} (expected {}/{} for uint16 tokens or "
                     "{}/{} for uint32 tokens)",
                     path.string(), header.magic, header.version, kShardMagicUint16,
                     kShardVersionUint16, kShardMagicUint32, kShardVersionUint32));
  }
  SF_CHECK(header.num_tokens >= 0, "shard {}: negative token count {} in header", path.string(),
           header.num_tokens);
  uintmax_t expected = kShardHeaderBytes + static_cast<uintmax_t>(header.num_tokens) * header.token_bytes;
  SF_CHECK(file_size == expected,
           "shard {}: header says {} tokens of {} bytes, so the file should be {} bytes, but it is {} "
           "bytes ({})",
           path.string(), header.num_tokens, header.token_bytes, expected, file_size,
           file_size < expected ? "truncated" : "extra bytes at the end");
  return header;
}

}  // namespace

void write_shard(const std::filesystem::path& path, std::span<const int32_t> tokens, int32_t vocab_size) {
  SF_CHECK(vocab_size > 0, "shard {}: vocabulary size must be positive, got {}", path.string(), vocab_size);
  SF_CHECK(tokens.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
           "shard {}: {} tokens exceed the int32 count of the llm.c header; split into more shards",
           path.string(), tokens.size());
  const bool narrow = vocab_size <= 65536;
  const size_t token_bytes = narrow ? 2 : 4;

  uint8_t header[kShardHeaderBytes] = {};
  put_le32(header, static_cast<uint32_t>(narrow ? kShardMagicUint16 : kShardMagicUint32));
  put_le32(header + 4, static_cast<uint32_t>(narrow ? kShardVersionUint16 : kShardVersionUint32));
  put_le32(header + 8, static_cast<uint32_t>(tokens.size()));

  AtomicFileWriter writer(path.string());
  writer.write(header, sizeof(header));
  std::vector<uint8_t> buffer(std::min(tokens.size(), kChunkTokens) * token_bytes);
  for (size_t chunk_start = 0; chunk_start < tokens.size(); chunk_start += kChunkTokens) {
    size_t chunk_size = std::min(kChunkTokens, tokens.size() - chunk_start);
    for (size_t i = 0; i < chunk_size; ++i) {
      int32_t id = tokens[chunk_start + i];
      SF_CHECK(id >= 0 && id < vocab_size,
               "shard {}: token {} at position {} is outside the vocabulary of {}", path.string(), id,
               chunk_start + i, vocab_size);
      uint8_t* out = buffer.data() + i * token_bytes;
      if (narrow) {
        out[0] = static_cast<uint8_t>(id);
        out[1] = static_cast<uint8_t>(id >> 8);
      } else {
        put_le32(out, static_cast<uint32_t>(id));
      }
    }
    writer.write(buffer.data(), chunk_size * token_bytes);
  }
  writer.commit();  // a throw above leaves no file (the writer removes its temporary)
}

ShardHeader read_shard_header(const std::filesystem::path& path) {
  return ShardReader(path).header();
}

std::vector<int32_t> read_shard(const std::filesystem::path& path, int32_t vocab_size) {
  ShardReader reader(path, vocab_size);
  return reader.read(0, reader.num_tokens());
}

ShardReader::ShardReader(std::filesystem::path path, int32_t vocab_size)
    : path_(std::move(path)), vocab_size_(vocab_size) {
  fd_ = open_for_reading(path_);
  try {
    header_ = parse_header(fd_, path_);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

ShardReader::~ShardReader() {
  if (fd_ >= 0) ::close(fd_);
}

ShardReader::ShardReader(ShardReader&& other) noexcept
    : path_(std::move(other.path_)), header_(other.header_), vocab_size_(other.vocab_size_),
      fd_(std::exchange(other.fd_, -1)) {}

ShardReader& ShardReader::operator=(ShardReader&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(other.path_);
    header_ = other.header_;
    vocab_size_ = other.vocab_size_;
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

std::vector<int32_t> ShardReader::read(int64_t start, int64_t count) const {
  SF_CHECK(fd_ >= 0, "shard reader used after being moved from");
  SF_CHECK(start >= 0 && count >= 0 && start + count <= header_.num_tokens,
           "shard {}: tokens [{}, {}) are outside its {} tokens", path_.string(), start, start + count,
           header_.num_tokens);
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  const size_t token_bytes = header_.token_bytes;
  std::vector<uint8_t> buffer(std::min(static_cast<size_t>(count), kChunkTokens) * token_bytes);
  for (size_t done = 0; done < tokens.size(); done += kChunkTokens) {
    size_t chunk_size = std::min(kChunkTokens, tokens.size() - done);
    int64_t offset = static_cast<int64_t>(kShardHeaderBytes) +
                     (start + static_cast<int64_t>(done)) * static_cast<int64_t>(token_bytes);
    read_exact(fd_, path_, buffer.data(), chunk_size * token_bytes, offset);
    for (size_t i = 0; i < chunk_size; ++i) {
      const uint8_t* in = buffer.data() + i * token_bytes;
      uint32_t id = token_bytes == 2 ? uint32_t{in[0]} | uint32_t{in[1]} << 8 : get_le32(in);
      if (vocab_size_ > 0 && id >= static_cast<uint32_t>(vocab_size_)) {
        fail(fmt::format("shard {}: token {} at position {} is outside the vocabulary of {}",
                         path_.string(), id, start + static_cast<int64_t>(done + i), vocab_size_));
      }
      // uint32 ids above INT32_MAX cannot be represented; no real vocabulary comes close.
      SF_CHECK(id <= static_cast<uint32_t>(std::numeric_limits<int32_t>::max()),
               "shard {}: token {} at position {} does not fit an int32 id", path_.string(), id,
               start + static_cast<int64_t>(done + i));
      tokens[done + i] = static_cast<int32_t>(id);
    }
  }
  return tokens;
}

std::vector<std::filesystem::path> list_shards(const std::filesystem::path& folder, std::string_view split) {
  std::error_code error;
  SF_CHECK(std::filesystem::is_directory(folder, error), "shard folder {} does not exist or is not a "
           "folder", folder.string());
  const std::string infix = fmt::format("_{}_", split);
  const std::string suffix = fmt::format("_{}.bin", split);
  std::vector<std::filesystem::path> shards;
  for (const auto& entry : std::filesystem::directory_iterator(folder)) {
    if (!entry.is_regular_file()) continue;
    std::string name = entry.path().filename().string();
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".bin") != 0) continue;
    bool numbered = name.find(infix) != std::string::npos;
    bool single = name.size() >= suffix.size() &&
                  name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
    if (numbered || single) shards.push_back(entry.path());
  }
  std::sort(shards.begin(), shards.end(),
            [](const auto& a, const auto& b) { return a.filename() < b.filename(); });
  return shards;
}

}  // namespace sf
