// prepare.h — `stagformer prepare`: text files -> documents -> tokens -> llm.c shards with a
// validation split by document, plus tokenizer.json and prepare.json describing the result.
//
// The pipeline (docs/data.md, "prepare: text to shards", says it for users):
//   1. Inputs are files or folders; folders are walked recursively (hidden entries skipped, only
//      regular files, the output folder skipped) and each folder's files sorted by path, so the
//      order never depends on the order files were created. Inputs keep the order they are given.
//   2. Each file is one document, unless a document-boundary regex is given: then a file is cut
//      before every line in which a match starts (e.g. '^CHAPTER ' makes one document per
//      chapter). Empty documents are skipped.
//   3. Each document becomes [EOT] + encode(text) (llm.c's convention: end-of-text *before* each
//      document; "<|endoftext|>" inside the text stays ordinary text). Tokenisation runs in
//      parallel over documents (OpenMP) and keeps their order.
//   4. Document i goes to the validation split when a hash of (seed, i) falls below
//      val_fraction. The last document is the fallback that keeps both splits non-empty (with
//      val_fraction > 0 and >= 2 documents): it goes to validation if no other document did, to
//      training if no other document did, and otherwise where its hash says. Deciding this at
//      the end keeps the pipeline streaming (no second pass over the corpus).
//   5. Each split's token stream is cut into shards of exactly shard_tokens tokens (the last one
//      shorter): <out>/<prefix>_val_000000.bin, <out>/<prefix>_train_000000.bin, ...
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/progress.h"

namespace sf {

struct PrepareOptions {
  std::string tokenizer = "gpt2";  // "gpt2" or "byte"
  std::string ranks_path;          // GPT-2 ranks file; empty = default_ranks_path()
  std::string out_dir;             // created when missing
  // Fraction of documents (not tokens) that go to the validation split, in [0, 1). 5% gives a
  // few documents even for a small corpus (7 of Moby-Dick's 135 chapters) and is plenty for a
  // large one; 0 writes no validation shard.
  double val_fraction = 0.05;
  // Tokens per shard: 10M = 20 MB per uint16 shard, 40 MB of RAM per split while writing (llm.c's
  // FineWeb script uses 100M; the batch loader reads windows, so the size only matters here).
  int64_t shard_tokens = 10'000'000;
  std::string doc_boundary;  // PCRE2 pattern (multiline); empty = one document per file
  std::string prefix = "data";
  uint64_t seed = 0;  // of the train/val assignment
  ProgressOutput progress = ProgressOutput::automatic;  // the bar over input bytes (stderr)
};

struct ShardInfo {
  std::string file;   // name inside out_dir
  std::string split;  // "train" or "val"
  int64_t tokens = 0;
  std::string sha256;  // of the whole file (header + tokens), as `sha256sum` prints it
};

struct SplitStats {
  int64_t documents = 0;
  int64_t tokens = 0;  // EOT tokens included
  int64_t shards = 0;
};

struct PrepareStats {
  int64_t files = 0;
  int64_t bytes = 0;  // of all input files
  int64_t empty_files = 0;  // skipped: an empty file holds no document
  SplitStats train;
  SplitStats val;
  std::vector<ShardInfo> shards;             // in the order written: train and val interleave
  std::vector<std::string> removed_shards;   // stale shards of this prefix from an earlier run
  std::string tokenizer;                     // "gpt2" or "byte"
  int32_t vocab_size = 0;
  int32_t eot_id = 0;
  double seconds = 0;
};

// Runs the whole pipeline above and writes <out>/<prefix>_{train,val}_NNNNNN.bin,
// <out>/tokenizer.json and, last, <out>/prepare.json (its presence marks a complete run).
// Shards of this prefix left by an earlier run and not rewritten are removed; a shard of any
// other name in the output folder is an error (loaders read every *_train_*.bin of a folder, so
// two data sets would mix). Throws sf::Error naming the path for a missing input, an empty input
// set, an unreadable file, an output folder that cannot be created or written; and for a single
// document with val_fraction > 0 (suggesting --doc-boundary).
PrepareStats prepare_corpus(const std::vector<std::string>& inputs, const PrepareOptions& options);

// ---- the steps, exposed for tests ----------------------------------------------------------

// Step 1: the regular files of `inputs` in processing order. `skip_folder` (may be empty) is
// not descended into. Throws sf::Error naming a missing, unreadable or odd (not file, not
// folder) input, a file reached twice, or an input set without any file.
std::vector<std::string> list_input_files(const std::vector<std::string>& inputs,
                                          const std::string& skip_folder = "");

// Step 2: cuts text into documents before every line in which a match of a PCRE2 pattern starts
// (multiline mode, so '^' matches at line starts; bytes, not UTF-8, so any input is fine).
class DocumentBoundary {
 public:
  // Empty pattern: split() returns the whole text. Throws sf::Error on an invalid pattern,
  // naming it and the offset of the problem.
  explicit DocumentBoundary(const std::string& pattern);
  ~DocumentBoundary();
  DocumentBoundary(const DocumentBoundary&) = delete;
  DocumentBoundary& operator=(const DocumentBoundary&) = delete;

  // Non-empty pieces of `text` in order, covering it exactly (views into it). `source` names the
  // text in errors (e.g. a PCRE2 match limit). Safe to call from several threads at once.
  std::vector<std::string_view> split(std::string_view text, std::string_view source) const;

 private:
  struct Regex;
  std::unique_ptr<Regex> regex_;
};

// Step 4: whether document `index` goes to validation by its hash alone (before the fallback).
bool document_hashes_to_val(uint64_t seed, int64_t index, double val_fraction);

// The checksum written into prepare.json: SHA-256 as lowercase hex.
std::string sha256_hex(std::string_view bytes);
// SHA-256 of a file's contents (read in chunks); throws sf::Error naming an unreadable file.
std::string sha256_file_hex(const std::string& path);

}  // namespace sf
