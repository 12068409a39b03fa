// prepare.cpp — `stagformer prepare`: input listing, document cutting, parallel tokenisation,
// the train/val assignment by document, shard writing, tokenizer.json and prepare.json.
#include "data/prepare.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <fcntl.h>
#include <omp.h>
#include <pcre2.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <span>

#include "core/error.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "data/tokenizer_files.h"
#include "io/atomic_file.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;  // keys in the order written: prepare.json reads top-down

// ---- SHA-256 (FIPS 180-4), for the shard checksums of prepare.json --------------------------

namespace {

class Sha256 {
 public:
  void update(const void* data, size_t bytes) {
    const auto* in = static_cast<const uint8_t*>(data);
    length_bytes_ += bytes;
    while (bytes > 0) {
      const size_t take = std::min(bytes, sizeof(block_) - block_used_);
      std::memcpy(block_ + block_used_, in, take);
      block_used_ += take;
      in += take;
      bytes -= take;
      if (block_used_ == sizeof(block_)) {
        compress(block_);
        block_used_ = 0;
      }
    }
  }

  std::string hex_digest() {
    const uint64_t length_bits = length_bytes_ * 8;
    const uint8_t one_bit = 0x80;
    update(&one_bit, 1);
    const uint8_t zero = 0;
    while (block_used_ != 56) update(&zero, 1);
    uint8_t length_be[8];
    for (int i = 0; i < 8; ++i) length_be[i] = static_cast<uint8_t>(length_bits >> (56 - 8 * i));
    update(length_be, 8);
    std::string hex;
    for (uint32_t word : state_) hex += fmt::format("{:08x}", word);
    return hex;
  }

 private:
  static uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

  void compress(const uint8_t* block) {
    static constexpr uint32_t kRound[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2};
    uint32_t w[64];
    for (int i = 0; i < 16; ++i) {
      w[i] = uint32_t{block[4 * i]} << 24 | uint32_t{block[4 * i + 1]} << 16 |
             uint32_t{block[4 * i + 2]} << 8 | uint32_t{block[4 * i + 3]};
    }
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = state_[0], b = state_[1], c = state_[2], d = state_[3];
    uint32_t e = state_[4], f = state_[5], g = state_[6], h = state_[7];
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) +
                          kRound[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = b;
      b = a;
      a = t1 + t2;
    }
    state_[0] += a; state_[1] += b; state_[2] += c; state_[3] += d;
    state_[4] += e; state_[5] += f; state_[6] += g; state_[7] += h;
  }

  std::array<uint32_t, 8> state_{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  uint8_t block_[64] = {};
  size_t block_used_ = 0;
  uint64_t length_bytes_ = 0;
};

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Whole file as bytes; errors name the file and the system error.
std::string read_text_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(fmt::format("cannot read input file {}: {}", path, std::strerror(errno)));
  std::string text;
  char chunk[1 << 16];
  for (;;) {
    const ssize_t got = ::read(fd, chunk, sizeof(chunk));
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      fail(fmt::format("cannot read input file {}: {}", path, std::strerror(error)));
    }
    if (got == 0) break;
    text.append(chunk, static_cast<size_t>(got));
  }
  ::close(fd);
  return text;
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i ? std::string(separator) : "") + items[i];
  return out;
}

void check_readable(const std::string& path) {
  if (::access(path.c_str(), R_OK) != 0)
    fail(fmt::format("cannot read input file {}: {}", path, std::strerror(errno)));
}

std::string shard_file_name(const std::string& prefix, std::string_view split, int64_t index) {
  return fmt::format("{}_{}_{:06}.bin", prefix, split, index);
}

// True when `name` is exactly <prefix>_<split>_<digits>.bin, a shard this tool writes.
bool is_own_shard_name(const std::string& name, const std::string& prefix) {
  for (std::string_view split : {"train", "val"}) {
    const std::string head = fmt::format("{}_{}_", prefix, split);
    if (name.size() <= head.size() + 4 || name.compare(0, head.size(), head) != 0) continue;
    if (name.compare(name.size() - 4, 4, ".bin") != 0) continue;
    const std::string_view digits(name.data() + head.size(), name.size() - head.size() - 4);
    if (std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      return true;
  }
  return false;
}

void check_options(const PrepareOptions& o) {
  SF_CHECK(o.tokenizer == "gpt2" || o.tokenizer == "byte",
           "unknown tokenizer '{}': expected gpt2 or byte", o.tokenizer);
  SF_CHECK(!o.out_dir.empty(), "no output folder given");
  SF_CHECK(o.val_fraction >= 0 && o.val_fraction < 1,
           "validation fraction {} is outside [0, 1) (it is the fraction of documents, e.g. 0.05)",
           o.val_fraction);
  SF_CHECK(o.shard_tokens >= 1 && o.shard_tokens <= std::numeric_limits<int32_t>::max(),
           "shard size {} tokens is outside [1, {}] (the llm.c header counts tokens in an int32)",
           o.shard_tokens, std::numeric_limits<int32_t>::max());
  SF_CHECK(!o.prefix.empty() && o.prefix[0] != '.' &&
               std::all_of(o.prefix.begin(), o.prefix.end(),
                           [](char c) {
                             return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                                    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
                           }),
           "shard name prefix '{}' must be non-empty, not start with '.', and use only letters, "
           "digits, '_', '-' and '.'", o.prefix);
  // Loaders find a split's shards by the infix _train_ / _val_: a prefix holding one would put
  // the validation shards into the training set.
  const std::string padded = "_" + o.prefix + "_";
  SF_CHECK(padded.find("_train_") == std::string::npos && padded.find("_val_") == std::string::npos,
           "shard name prefix '{}' contains 'train' or 'val' between underscores, which would make "
           "loaders mistake one split for the other", o.prefix);
}

// Creates the output folder and checks it can be written. Returns the names of the shard files
// it already holds (of this prefix); throws on a shard of any other name.
std::vector<std::string> prepare_out_dir(const PrepareOptions& o) {
  const fs::path out(o.out_dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    SF_CHECK(fs::is_directory(out, ec), "output folder {} exists and is not a folder", o.out_dir);
  } else {
    fs::create_directories(out, ec);
    SF_CHECK(!ec, "cannot create output folder {}: {}", o.out_dir, ec.message());
  }
  SF_CHECK(::access(out.c_str(), W_OK | X_OK) == 0, "output folder {} is not writable: {}",
           o.out_dir, std::strerror(errno));
  std::vector<std::string> own;
  for (std::string_view split : {"train", "val"}) {
    for (const fs::path& shard : list_shards(out, split)) {
      const std::string name = shard.filename().string();
      SF_CHECK(is_own_shard_name(name, o.prefix),
               "output folder {} already holds {}, a shard of another data set; loaders read "
               "every *_{}_*.bin of a folder, so the two would mix: remove it or choose another "
               "--out", o.out_dir, name, split);
      own.push_back(name);
    }
  }
  return own;
}

// Accumulates one split's token stream and writes it as shards of exactly `shard_tokens`.
class SplitWriter {
 public:
  SplitWriter(const PrepareOptions& o, std::string split, int32_t vocab_size,
              std::vector<ShardInfo>& shards)
      : out_(o.out_dir), prefix_(o.prefix), split_(std::move(split)), shard_tokens_(o.shard_tokens),
        vocab_size_(vocab_size), shards_(shards) {}

  void append(std::span<const int32_t> tokens) {
    stats_.tokens += static_cast<int64_t>(tokens.size());
    while (!tokens.empty()) {
      const size_t room = static_cast<size_t>(shard_tokens_) - buffer_.size();
      const size_t take = std::min(room, tokens.size());
      buffer_.insert(buffer_.end(), tokens.begin(), tokens.begin() + static_cast<std::ptrdiff_t>(take));
      tokens = tokens.subspan(take);
      if (buffer_.size() == static_cast<size_t>(shard_tokens_)) flush();
    }
  }
  void count_document() { ++stats_.documents; }
  // Writes the last, shorter shard.
  void finish() {
    if (!buffer_.empty()) flush();
  }
  const SplitStats& stats() const { return stats_; }

 private:
  void flush() {
    const std::string name = shard_file_name(prefix_, split_, stats_.shards);
    const fs::path path = out_ / name;
    write_shard(path, buffer_, vocab_size_);
    shards_.push_back(ShardInfo{name, split_, static_cast<int64_t>(buffer_.size()),
                                sha256_file_hex(path.string())});
    ++stats_.shards;
    buffer_.clear();
  }

  fs::path out_;
  std::string prefix_;
  std::string split_;
  int64_t shard_tokens_;
  int32_t vocab_size_;
  std::vector<ShardInfo>& shards_;
  std::vector<int32_t> buffer_;
  SplitStats stats_;
};

// Input text read per batch before tokenising it in parallel: bounds memory while giving every
// thread work (a single larger file makes a batch of its own).
constexpr size_t kBatchBytes = size_t{16} << 20;

struct Document {
  std::vector<int32_t> ids;  // without the EOT, added when written
  bool val = false;
  size_t file = 0;
};

}  // namespace

std::string sha256_hex(std::string_view bytes) {
  Sha256 hash;
  hash.update(bytes.data(), bytes.size());
  return hash.hex_digest();
}

std::string sha256_file_hex(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) fail(fmt::format("cannot read {} to checksum it: {}", path, std::strerror(errno)));
  Sha256 hash;
  std::vector<char> chunk(size_t{1} << 20);
  size_t got;
  while ((got = std::fread(chunk.data(), 1, chunk.size(), file)) > 0) hash.update(chunk.data(), got);
  const bool failed = std::ferror(file) != 0;
  std::fclose(file);
  SF_CHECK(!failed, "cannot read {} to checksum it", path);
  return hash.hex_digest();
}

bool document_hashes_to_val(uint64_t seed, int64_t index, double val_fraction) {
  const uint64_t h = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(index));
  const double uniform = static_cast<double>(h >> 11) * 0x1.0p-53;  // [0, 1), 53 bits
  return uniform < val_fraction;
}

// ---- input listing ----------------------------------------------------------------------------

std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::string& skip_folder) {
  SF_CHECK(!inputs.empty(), "no input given: name the text files or folders to prepare");
  std::error_code ec;
  fs::path skip;
  if (!skip_folder.empty() && fs::exists(skip_folder, ec)) skip = fs::canonical(skip_folder, ec);

  std::vector<std::string> files;
  std::map<fs::path, std::string> reached_by;  // canonical path -> how it was named first
  auto add = [&](const std::string& file) {
    check_readable(file);
    fs::path canonical = fs::canonical(file, ec);
    if (ec) canonical = file;
    auto [it, inserted] = reached_by.emplace(canonical, file);
    SF_CHECK(inserted, "input file {} is given twice (also as {})", file, it->second);
    files.push_back(file);
  };

  for (const std::string& input : inputs) {
    const fs::file_status status = fs::status(input, ec);
    SF_CHECK(!ec || ec == std::errc::no_such_file_or_directory, "cannot access input {}: {}",
             input, ec.message());
    SF_CHECK(fs::exists(status), "input {} does not exist", input);
    if (fs::is_regular_file(status)) {
      add(input);
      continue;
    }
    SF_CHECK(fs::is_directory(status), "input {} is neither a regular file nor a folder", input);
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(input, ec);
    SF_CHECK(!ec, "cannot list input folder {}: {}", input, ec.message());
    for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const fs::directory_entry& entry = *it;
      // Entries that cannot be examined (a dangling link, a race) count as neither kind.
      std::error_code entry_ec;
      const bool is_folder = entry.is_directory(entry_ec);
      if (entry.path().filename().string().starts_with(".")) {  // hidden: .git, .DS_Store, ...
        if (is_folder) it.disable_recursion_pending();
        continue;
      }
      if (is_folder) {
        if (!skip.empty() && fs::equivalent(entry.path(), skip, entry_ec)) it.disable_recursion_pending();
        continue;
      }
      if (entry.is_regular_file(entry_ec)) found.push_back(entry.path().string());
    }
    SF_CHECK(!ec, "cannot list input folder {}: {}", input, ec.message());
    // Directory order is whatever the file system returns (often creation order): sort.
    std::sort(found.begin(), found.end());
    for (const std::string& file : found) add(file);
  }
  SF_CHECK(!files.empty(), "no input file: {} hold{} no regular, non-hidden file", join(inputs, ", "),
           inputs.size() == 1 ? "s" : "");
  return files;
}

// ---- document boundaries ---------------------------------------------------------------------

struct DocumentBoundary::Regex {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Regex() { pcre2_code_free(code); }
};

DocumentBoundary::DocumentBoundary(const std::string& pattern) {
  if (pattern.empty()) return;
  regex_ = std::make_unique<Regex>();
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  // No PCRE2_UTF: the pattern matches bytes, so files with invalid UTF-8 cut like any other.
  regex_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                               PCRE2_MULTILINE, &error_code, &error_offset, nullptr);
  if (regex_->code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail(fmt::format("document boundary '{}' is not a valid regular expression: {} at offset {}",
                     pattern, reinterpret_cast<const char*>(message), error_offset));
  }
  regex_->jit = pcre2_jit_compile(regex_->code, PCRE2_JIT_COMPLETE) == 0;
}

DocumentBoundary::~DocumentBoundary() = default;

std::vector<std::string_view> DocumentBoundary::split(std::string_view text,
                                                      std::string_view source) const {
  std::vector<std::string_view> pieces;
  if (!regex_) {
    if (!text.empty()) pieces.push_back(text);
    return pieces;
  }
  pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex_->code, nullptr);
  SF_CHECK(match != nullptr, "out of memory creating PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t piece_start = 0;
  size_t search_from = 0;
  while (search_from < text.size()) {
    const int rc = regex_->jit ? pcre2_jit_match(regex_->code, subject, text.size(), search_from, 0,
                                                 match, nullptr)
                               : pcre2_match(regex_->code, subject, text.size(), search_from, 0,
                                             match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(match);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail(fmt::format("{}: matching the document boundary failed at byte {}: {}", source,
                       search_from, reinterpret_cast<const char*>(message)));
    }
    const size_t match_start = pcre2_get_ovector_pointer(match)[0];
    // Cut at the start of the line the match starts in; search on from the next line, so a
    // line is cut before at most once (and an empty match cannot loop).
    const size_t newline_before = match_start == 0 ? std::string_view::npos
                                                   : text.rfind('\n', match_start - 1);
    const size_t line_start = newline_before == std::string_view::npos ? 0 : newline_before + 1;
    if (line_start > piece_start) {
      pieces.push_back(text.substr(piece_start, line_start - piece_start));
      piece_start = line_start;
    }
    const size_t newline_after = text.find('\n', match_start);
    if (newline_after == std::string_view::npos) break;
    search_from = newline_after + 1;
  }
  pcre2_match_data_free(match);
  if (piece_start < text.size()) pieces.push_back(text.substr(piece_start));
  return pieces;
}

// ---- the pipeline ----------------------------------------------------------------------------

PrepareStats prepare_corpus(const std::vector<std::string>& inputs, const PrepareOptions& options) {
  const auto started = std::chrono::steady_clock::now();
  check_options(options);
  const std::string ranks_path =
      options.tokenizer == "gpt2" ? (options.ranks_path.empty() ? default_ranks_path() : options.ranks_path)
                                  : std::string();
  const std::unique_ptr<Tokenizer> tokenizer = make_tokenizer(options.tokenizer, ranks_path);
  const int32_t eot = tokenizer->eot_id();
  const DocumentBoundary boundary(options.doc_boundary);
  const std::vector<std::string> existing_shards = prepare_out_dir(options);
  const std::vector<std::string> files = list_input_files(inputs, options.out_dir);
  // One file without a boundary is one document: say so before tokenising it.
  const auto single_document_error = [&](const std::string& file) {
    return fmt::format(
        "{} is a single document, and the validation split takes whole documents, so it cannot "
        "be split: cut it into documents with --doc-boundary REGEX (e.g. --doc-boundary "
        "'^CHAPTER ' to make one document per chapter), add more files, or pass --val-fraction 0",
        file);
  };
  if (files.size() == 1 && options.doc_boundary.empty() && options.val_fraction > 0)
    fail(single_document_error(files[0]));

  PrepareStats stats;
  stats.tokenizer = tokenizer->name();
  stats.vocab_size = tokenizer->vocab_size();
  stats.eot_id = eot;
  stats.files = static_cast<int64_t>(files.size());
  int64_t total_bytes = 0;
  for (const std::string& file : files) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(file, ec);
    SF_CHECK(!ec, "cannot get the size of input file {}: {}", file, ec.message());
    total_bytes += static_cast<int64_t>(size);
  }

  ProgressOptions bar_options;
  bar_options.output = options.progress;
  ProgressBar bar("prepare", total_bytes, "B", bar_options);
  SplitWriter train(options, "train", stats.vocab_size, stats.shards);
  SplitWriter val(options, "val", stats.vocab_size, stats.shards);
  auto write_document = [&](const Document& document) {
    SplitWriter& writer = document.val ? val : train;
    writer.append(std::span<const int32_t>(&eot, 1));  // EOT *before* each document (llm.c)
    writer.append(document.ids);
    writer.count_document();
  };

  // The latest document is held back until the next one arrives: at the end it is the fallback
  // that keeps both splits non-empty (see prepare.h).
  std::optional<Document> held;
  int64_t documents = 0;
  int64_t bytes_done = 0;
  for (size_t next_file = 0; next_file < files.size();) {
    std::vector<std::string> texts;
    std::vector<size_t> text_file;
    size_t batch_bytes = 0;
    while (next_file < files.size() && (texts.empty() || batch_bytes < kBatchBytes)) {
      texts.push_back(read_text_file(files[next_file]));
      batch_bytes += texts.back().size();
      text_file.push_back(next_file++);
    }
    struct Piece {
      std::string_view text;
      size_t file;
    };
    std::vector<Piece> pieces;
    for (size_t t = 0; t < texts.size(); ++t) {
      const auto cut = boundary.split(texts[t], files[text_file[t]]);
      if (cut.empty()) ++stats.empty_files;
      for (std::string_view piece : cut) pieces.push_back(Piece{piece, text_file[t]});
    }

    std::vector<std::vector<int32_t>> ids(pieces.size());
    std::atomic<int64_t> batch_done{0};
    std::exception_ptr error;
    const int64_t piece_count = static_cast<int64_t>(pieces.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < piece_count; ++i) {
      try {
        ids[i] = tokenizer->encode(pieces[i].text);
      } catch (...) {
#pragma omp critical(sf_prepare_error)
        if (!error) error = std::current_exception();
      }
      batch_done += static_cast<int64_t>(pieces[i].text.size());
      // The bar is driven from one thread: the one that called prepare_corpus (OpenMP's master).
      if (omp_get_thread_num() == 0) bar.update(bytes_done + batch_done.load());
    }
    if (error) std::rethrow_exception(error);

    for (size_t i = 0; i < pieces.size(); ++i) {
      Document document{std::move(ids[i]),
                        document_hashes_to_val(options.seed, documents, options.val_fraction),
                        pieces[i].file};
      ++documents;
      if (held) write_document(*held);
      held = std::move(document);
    }
    bytes_done += static_cast<int64_t>(batch_bytes);
    bar.update(bytes_done);
  }

  SF_CHECK(held.has_value(), "no text to prepare: all {} input file{} empty ({})", files.size(),
           files.size() == 1 ? " is" : "s are", join(inputs, ", "));
  if (documents < 2 && options.val_fraction > 0) fail(single_document_error(files[held->file]));
  if (options.val_fraction > 0) {
    if (val.stats().documents == 0) held->val = true;
    if (train.stats().documents == 0) held->val = false;
  }
  write_document(*held);
  train.finish();
  val.finish();
  stats.train = train.stats();
  stats.val = val.stats();

  std::set<std::string> written;
  for (const ShardInfo& shard : stats.shards) written.insert(shard.file);
  for (const std::string& name : existing_shards) {
    if (written.count(name)) continue;
    std::error_code ec;
    fs::remove(fs::path(options.out_dir) / name, ec);
    SF_CHECK(!ec, "cannot remove the stale shard {} from an earlier run in {}: {}", name,
             options.out_dir, ec.message());
    stats.removed_shards.push_back(name);
  }

  tokenizer_spec_save(tokenizer_spec_of(*tokenizer), (fs::path(options.out_dir) / "tokenizer.json").string());

  json shards = json::array();
  for (const ShardInfo& shard : stats.shards)
    shards.push_back({{"file", shard.file}, {"split", shard.split}, {"tokens", shard.tokens},
                      {"sha256", shard.sha256}});
  auto split_json = [](const SplitStats& s) {
    return json{{"documents", s.documents}, {"tokens", s.tokens}, {"shards", s.shards}};
  };
  const json description{
      {"inputs", inputs},
      {"files", stats.files},
      {"bytes", total_bytes},
      {"empty_files", stats.empty_files},
      {"tokenizer",
       {{"kind", stats.tokenizer},
        {"vocab_size", stats.vocab_size},
        {"eot_id", stats.eot_id},
        {"ranks_file", ranks_path.empty() ? json(nullptr) : json(ranks_path)}}},
      {"options",
       {{"val_fraction", options.val_fraction},
        {"shard_tokens", options.shard_tokens},
        {"doc_boundary", options.doc_boundary.empty() ? json(nullptr) : json(options.doc_boundary)},
        {"prefix", options.prefix},
        {"seed", options.seed}}},
      {"documents", "end-of-text token before each document; validation split by whole document"},
      {"train", split_json(stats.train)},
      {"val", split_json(stats.val)},
      {"checksum", "sha256 of each whole shard file (header + tokens), as sha256sum prints it"},
      {"shards", shards}};
  write_file_atomic((fs::path(options.out_dir) / "prepare.json").string(), description.dump(2) + "\n");

  bar.finish();
  stats.bytes = total_bytes;
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

}  // namespace sf
