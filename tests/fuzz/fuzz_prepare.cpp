// fuzz_prepare.cpp — fuzzes `stagformer prepare` on a text file a user might be given
// (prepare_corpus, data/prepare.h): the first input byte picks the tokenizer (byte, or GPT-2
// with a small ranks file), the document boundary, the validation fraction and the shard size
// (kPrepareVariants in fuzz_formats.h); the rest is the text file. Output goes to one scratch
// folder per process. A successful run must write shards that read back with the counts it
// reports, and with no validation split the training shards must decode to
// "<|endoftext|>" + document for every document, in order.
//
// fuzz-dict: text   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include <omp.h>

#include <fstream>
#include <memory>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "data/tokenizer_files.h"
#include "fuzz_formats.h"
#include "fuzz_util.h"

namespace {

std::string ranks_path, input_path, out_dir;
const sf::Tokenizer* byte_tokenizer = nullptr;
const sf::Tokenizer* gpt2_tokenizer = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  omp_set_num_threads(1);
  try {
    std::ifstream full(sf::default_ranks_path(), std::ios::binary);
    std::string small, line;
    for (size_t i = 0; i < sf::fuzz::kPrepareRanksLines && std::getline(full, line); ++i)
      small += line + "\n";
    ranks_path = sf::fuzz::scratch_path("prepare/ranks.tiktoken");
    sf::fuzz::write_bytes(ranks_path, small);
    byte_tokenizer = new sf::ByteTokenizer;
    gpt2_tokenizer = new sf::BpeTokenizer(ranks_path);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fuzz_prepare: setup failed: %s\n", e.what());
    std::exit(2);
  }
  input_path = sf::fuzz::scratch_path("prepare/in/input.txt");
  out_dir = sf::fuzz::scratch_path("prepare/out/.keep");
  out_dir = std::filesystem::path(out_dir).parent_path().string();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const sf::fuzz::PrepareVariant& variant =
      sf::fuzz::kPrepareVariants[data[0] % sf::fuzz::kPrepareVariants.size()];
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  sf::fuzz::write_bytes(input_path, text);

  sf::PrepareOptions options;
  options.tokenizer = variant.tokenizer;
  options.ranks_path = ranks_path;
  options.out_dir = out_dir;
  options.val_fraction = variant.val_fraction;
  options.shard_tokens = variant.shard_tokens;
  options.doc_boundary = variant.doc_boundary;
  options.progress = sf::ProgressOutput::quiet;
  sf::PrepareStats stats;
  if (!sf::fuzz::run_loader("prepare_corpus",
                            [&] { stats = sf::prepare_corpus({input_path}, options); }))
    return 0;

  const sf::Tokenizer& tokenizer =
      variant.tokenizer == std::string("byte") ? *byte_tokenizer : *gpt2_tokenizer;
  std::vector<std::string_view> documents;
  sf::fuzz::run_loader("DocumentBoundary", [&] {
    documents = sf::DocumentBoundary(variant.doc_boundary).split(text, "input");
  });
  sf::fuzz::require(
      stats.train.documents + stats.val.documents == static_cast<int64_t>(documents.size()),
      "prepare counts one document per DocumentBoundary piece");
  if (variant.val_fraction > 0 && documents.size() >= 2)
    sf::fuzz::require(stats.train.documents > 0 && stats.val.documents > 0,
                      "with val_fraction > 0 and >= 2 documents both splits are non-empty");
  int64_t shard_tokens = 0;
  std::vector<int32_t> train_ids;
  sf::fuzz::run_loader("reading the shards back", [&] {
    for (const sf::ShardInfo& shard : stats.shards) {
      const std::vector<int32_t> ids =
          sf::read_shard(std::filesystem::path(out_dir) / shard.file, tokenizer.vocab_size());
      sf::fuzz::require(static_cast<int64_t>(ids.size()) == shard.tokens,
                        "a shard holds the tokens prepare reports");
      sf::fuzz::require(static_cast<int64_t>(ids.size()) <= variant.shard_tokens,
                        "no shard is larger than shard_tokens");
      shard_tokens += shard.tokens;
      if (shard.split == "train") train_ids.insert(train_ids.end(), ids.begin(), ids.end());
    }
  });
  sf::fuzz::require(shard_tokens == stats.train.tokens + stats.val.tokens,
                    "the shards hold train.tokens + val.tokens tokens");
  if (variant.val_fraction == 0) {
    std::string expected;
    for (std::string_view d : documents)
      expected += std::string(sf::kEndOfTextText) + std::string(d);
    sf::fuzz::require(tokenizer.decode(train_ids) == expected,
                      "the training shards decode to <|endoftext|> + document, for every document");
  }
  return 0;
}
