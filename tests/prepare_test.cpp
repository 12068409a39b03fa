// prepare_test.cpp — tests of `stagformer prepare` (src/data/prepare.h): input order, documents
// and end-of-text, the validation split by document, document boundaries, shard rollover,
// prepare.json, errors; and of the progress bar's formatting helpers (src/core/progress.h).
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "core/error.h"
#include "core/progress.h"
#include "data/prepare.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "data/tokenizer_files.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

constexpr int32_t kByteEot = 256;

using test::expect_error;

class PrepareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = test::fresh_temp_dir("prepare_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }
  void TearDown() override { fs::remove_all(root_); }

  static void write_text(const fs::path& path, const std::string& bytes) {
    fs::create_directories(path.parent_path());
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  static std::string read_bytes(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  }
  // Random bytes, any value (invalid UTF-8 included), at least one byte.
  static std::string random_bytes(std::mt19937& rng, size_t max_length) {
    std::uniform_int_distribution<size_t> length(1, max_length);
    std::uniform_int_distribution<int> byte(0, 255);
    std::string text(length(rng), '\0');
    for (char& c : text) c = static_cast<char>(byte(rng));
    return text;
  }

  PrepareOptions byte_options(const std::string& out_name) const {
    PrepareOptions options;
    options.tokenizer = "byte";
    options.out_dir = (root_ / out_name).string();
    options.progress = ProgressOutput::quiet;
    return options;
  }

  // The whole token stream of one split (its shards concatenated in order).
  static std::vector<int32_t> split_stream(const fs::path& folder, const std::string& split) {
    std::vector<int32_t> stream;
    for (const fs::path& shard : list_shards(folder, split)) {
      const std::vector<int32_t> tokens = read_shard(shard);
      stream.insert(stream.end(), tokens.begin(), tokens.end());
    }
    return stream;
  }
  // Byte-tokenizer stream -> documents: each must start with EOT; returns the texts after it.
  static std::vector<std::string> byte_documents(const std::vector<int32_t>& stream) {
    std::vector<std::string> documents;
    if (!stream.empty() && stream[0] != kByteEot) {
      ADD_FAILURE() << "stream must start with end-of-text, starts with " << stream[0];
      return documents;
    }
    for (size_t i = 0; i < stream.size(); ++i) {
      if (stream[i] == kByteEot) {
        documents.emplace_back();
      } else {
        documents.back() += static_cast<char>(stream[i]);
      }
    }
    return documents;
  }

  fs::path root_;
};

// ---- input order and document structure --------------------------------------------------

TEST_F(PrepareTest, FolderIsWalkedSortedSkippingHiddenAndEachFileIsOneDocumentAfterEot) {
  std::mt19937 rng(11);
  const fs::path in = root_ / "in";
  // Created in an order that is not the sorted order.
  const std::vector<std::string> names = {"sub/b.txt", "c.txt", "a.txt", "sub/deeper/d.txt"};
  std::map<std::string, std::string> contents;
  for (const std::string& name : names) {
    contents[name] = random_bytes(rng, 300);
    write_text(in / name, contents[name]);
  }
  write_text(in / "b_empty.txt", "");  // listed, but holds no document
  write_text(in / ".hidden.txt", "hidden file");
  write_text(in / ".git" / "objects.txt", "hidden folder");

  PrepareOptions options = byte_options("out");
  options.val_fraction = 0;
  const PrepareStats stats = prepare_corpus({in.string()}, options);

  // Byte order of paths: "a.txt" < "c.txt" < "sub/b.txt" < "sub/deeper/d.txt".
  const std::vector<std::string> order = {"a.txt", "c.txt", "sub/b.txt", "sub/deeper/d.txt"};
  std::vector<int32_t> expected;
  int64_t bytes = 0;
  for (const std::string& name : order) {
    expected.push_back(kByteEot);
    for (unsigned char c : contents[name]) expected.push_back(c);
    bytes += static_cast<int64_t>(contents[name].size());
  }
  EXPECT_EQ(split_stream(options.out_dir, "train"), expected);
  EXPECT_TRUE(list_shards(options.out_dir, "val").empty());
  EXPECT_EQ(stats.files, 5);
  EXPECT_EQ(stats.empty_files, 1);
  EXPECT_EQ(stats.bytes, bytes);
  EXPECT_EQ(stats.train.documents, 4);
  EXPECT_EQ(stats.train.tokens, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(stats.val.documents, 0);

  const std::vector<std::string> listed = list_input_files({in.string()});
  const std::vector<std::string> all = {"a.txt", "b_empty.txt", "c.txt", "sub/b.txt", "sub/deeper/d.txt"};
  ASSERT_EQ(listed.size(), all.size());
  for (size_t i = 0; i < all.size(); ++i) EXPECT_EQ(listed[i], (in / all[i]).string());
}

TEST_F(PrepareTest, OutputDoesNotDependOnTheOrderFilesWereCreated) {
  std::mt19937 rng(12);
  std::vector<std::pair<std::string, std::string>> files;
  for (int i = 0; i < 30; ++i)
    files.emplace_back(fmt::format("f{:02}_{}.txt", (i * 7) % 30, i % 3 ? "x" : "y"), random_bytes(rng, 200));
  for (const auto& [name, text] : files) write_text(root_ / "forward" / name, text);
  for (auto it = files.rbegin(); it != files.rend(); ++it) write_text(root_ / "backward" / it->first, it->second);

  PrepareOptions a = byte_options("out_a");
  PrepareOptions b = byte_options("out_b");
  a.val_fraction = b.val_fraction = 0.2;
  const PrepareStats stats_a = prepare_corpus({(root_ / "forward").string()}, a);
  const PrepareStats stats_b = prepare_corpus({(root_ / "backward").string()}, b);
  ASSERT_EQ(stats_a.shards.size(), stats_b.shards.size());
  for (size_t i = 0; i < stats_a.shards.size(); ++i) {
    EXPECT_EQ(stats_a.shards[i].file, stats_b.shards[i].file);
    EXPECT_EQ(stats_a.shards[i].sha256, stats_b.shards[i].sha256);
    EXPECT_EQ(read_bytes(fs::path(a.out_dir) / stats_a.shards[i].file),
              read_bytes(fs::path(b.out_dir) / stats_b.shards[i].file));
  }
  EXPECT_GT(stats_a.val.documents, 0);
}

TEST_F(PrepareTest, InputsKeepTheirOrderAndTheOutputFolderIsNotReadAsInput) {
  write_text(root_ / "in" / "z.txt", "zzz");
  write_text(root_ / "in" / "a.txt", "aa");
  PrepareOptions options = byte_options("in/out");  // inside the input folder
  options.val_fraction = 0;
  // z.txt named first on purpose: explicit inputs are not reordered.
  prepare_corpus({(root_ / "in" / "z.txt").string(), (root_ / "in" / "a.txt").string()}, options);
  const std::vector<int32_t> expected = {kByteEot, 'z', 'z', 'z', kByteEot, 'a', 'a'};
  EXPECT_EQ(split_stream(options.out_dir, "train"), expected);
  // Walking the folder twice: the shards written into in/out the first time are not input.
  fs::remove(root_ / "in" / "z.txt");
  prepare_corpus({(root_ / "in").string()}, options);
  prepare_corpus({(root_ / "in").string()}, options);
  EXPECT_EQ(split_stream(options.out_dir, "train"), (std::vector<int32_t>{kByteEot, 'a', 'a'}));
}

// ---- the validation split ----------------------------------------------------------------

TEST_F(PrepareTest, ValidationTakesWholeDocumentsChosenByTheSeededHash) {
  std::mt19937 rng(13);
  std::vector<std::string> texts;
  for (int i = 0; i < 60; ++i) {
    texts.push_back(random_bytes(rng, 120));
    write_text(root_ / "in" / fmt::format("doc{:03}.txt", i), texts.back());
  }
  for (uint64_t seed : {0ULL, 99ULL}) {
    PrepareOptions options = byte_options(fmt::format("out_{}", seed));
    options.val_fraction = 0.3;
    options.seed = seed;
    options.shard_tokens = 500;  // documents straddle shards: the split must still be by document
    const PrepareStats stats = prepare_corpus({(root_ / "in").string()}, options);

    std::vector<std::string> expected_train, expected_val;
    for (int i = 0; i < 60; ++i) {
      bool to_val = document_hashes_to_val(seed, i, 0.3);
      if (i == 59 && expected_val.empty()) to_val = true;     // the fallback (prepare.h)
      if (i == 59 && expected_train.empty()) to_val = false;
      (to_val ? expected_val : expected_train).push_back(texts[i]);
    }
    EXPECT_EQ(byte_documents(split_stream(options.out_dir, "train")), expected_train) << "seed " << seed;
    EXPECT_EQ(byte_documents(split_stream(options.out_dir, "val")), expected_val) << "seed " << seed;
    EXPECT_EQ(stats.val.documents, static_cast<int64_t>(expected_val.size()));
    EXPECT_EQ(stats.train.documents, static_cast<int64_t>(expected_train.size()));
    // 60 documents at 30%: a binomial count with mean 18 and sd 3.5.
    EXPECT_GE(stats.val.documents, 7);
    EXPECT_LE(stats.val.documents, 29);
  }
}

TEST(PrepareSplit, HashFractionMatchesValFractionAndDependsOnSeed) {
  for (double fraction : {0.01, 0.05, 0.3, 0.9}) {
    int64_t val = 0;
    const int64_t n = 200000;
    for (int64_t i = 0; i < n; ++i) val += document_hashes_to_val(7, i, fraction);
    // Binomial sd at n = 2e5 is at most 0.0011: 0.005 is > 4 sd.
    EXPECT_NEAR(static_cast<double>(val) / n, fraction, 0.005) << "fraction " << fraction;
  }
  int differ = 0;
  for (int64_t i = 0; i < 1000; ++i)
    differ += document_hashes_to_val(1, i, 0.5) != document_hashes_to_val(2, i, 0.5);
  EXPECT_GT(differ, 400);  // independent streams: ~500 differ
  for (int64_t i = 0; i < 100; ++i) EXPECT_FALSE(document_hashes_to_val(3, i, 0.0));
}

TEST_F(PrepareTest, TwoDocumentsAlwaysGiveOneTrainAndOneValidationDocument) {
  write_text(root_ / "in" / "a.txt", "first document");
  write_text(root_ / "in" / "b.txt", "second document");
  for (double fraction : {0.0001, 0.9999}) {
    for (uint64_t seed = 0; seed < 4; ++seed) {
      PrepareOptions options = byte_options("out");
      options.val_fraction = fraction;
      options.seed = seed;
      const PrepareStats stats = prepare_corpus({(root_ / "in").string()}, options);
      EXPECT_EQ(stats.train.documents, 1) << fraction << " " << seed;
      EXPECT_EQ(stats.val.documents, 1) << fraction << " " << seed;
      // The first document follows its hash; the last one is the fallback.
      const bool first_to_val = document_hashes_to_val(seed, 0, fraction);
      EXPECT_EQ(byte_documents(split_stream(options.out_dir, "val")),
                std::vector<std::string>{first_to_val ? "first document" : "second document"});
    }
  }
}

TEST_F(PrepareTest, SingleDocumentCannotBeSplitButWorksWithoutValidation) {
  write_text(root_ / "book.txt", "one long book");
  PrepareOptions options = byte_options("out");
  expect_error([&] { prepare_corpus({(root_ / "book.txt").string()}, options); },
               {"book.txt", "single document", "--doc-boundary", "--val-fraction 0"});
  EXPECT_TRUE(list_shards(options.out_dir, "train").empty()) << "nothing may be written on error";
  // Found only after reading: a boundary that never matches, or other files that are empty.
  PrepareOptions no_match = options;
  no_match.doc_boundary = "^CHAPTER ";
  expect_error([&] { prepare_corpus({(root_ / "book.txt").string()}, no_match); },
               {"book.txt", "single document"});
  write_text(root_ / "empty.txt", "");
  expect_error([&] { prepare_corpus({(root_ / "empty.txt").string(), (root_ / "book.txt").string()}, options); },
               {"book.txt", "single document"});
  EXPECT_TRUE(list_shards(options.out_dir, "train").empty()) << "nothing may be written on error";
  options.val_fraction = 0;
  const PrepareStats stats = prepare_corpus({(root_ / "book.txt").string()}, options);
  EXPECT_EQ(stats.train.documents, 1);
  EXPECT_EQ(stats.train.tokens, 14);
}

// ---- document boundaries -----------------------------------------------------------------

TEST(PrepareBoundary, CutsBeforeEveryLineWhereAMatchStarts) {
  const DocumentBoundary chapters("^CHAPTER ");
  const std::string text = "Preface\nCHAPTER 1\nCall me\nnot a CHAPTER here\nCHAPTER 2\nEnd";
  const auto pieces = chapters.split(text, "t");
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], "Preface\n");
  EXPECT_EQ(pieces[1], "CHAPTER 1\nCall me\nnot a CHAPTER here\n");
  EXPECT_EQ(pieces[2], "CHAPTER 2\nEnd");

  // A match that starts mid-line cuts at the start of its line; a text starting with a match
  // makes no empty first piece; two matches in one line cut once.
  const DocumentBoundary word("[Ss]ection");
  const auto cut = word.split("Section one section\nbody\nthe section two\n", "t");
  ASSERT_EQ(cut.size(), 2u);
  EXPECT_EQ(cut[0], "Section one section\nbody\n");
  EXPECT_EQ(cut[1], "the section two\n");

  // An empty-matching pattern cuts before every line (and terminates).
  const auto lines = DocumentBoundary("^").split("a\nb\n\nc", "t");
  EXPECT_EQ(lines, (std::vector<std::string_view>{"a\n", "b\n", "\n", "c"}));

  // No pattern: the whole text; empty text: no piece.
  EXPECT_EQ(DocumentBoundary("").split("x\ny", "t"), std::vector<std::string_view>{"x\ny"});
  EXPECT_TRUE(DocumentBoundary("^X").split("", "t").empty());

  // Bytes that are not UTF-8 are matched as bytes.
  const std::string binary = std::string("\xff\xfe junk\n") + "CHAPTER \x80\n";
  EXPECT_EQ(chapters.split(binary, "t").size(), 2u);

  expect_error([] { DocumentBoundary bad("CHAPTER ("); }, {"CHAPTER (", "not a valid regular expression"});
}

TEST_F(PrepareTest, DocBoundarySplitsASingleBookIntoChapterDocuments) {
  std::mt19937 rng(14);
  std::string book = "Title page\n";
  std::vector<std::string> documents{book};
  for (int chapter = 1; chapter <= 40; ++chapter) {
    std::string text = fmt::format("CHAPTER {}.\n", chapter);
    for (int line = 0; line < 3; ++line) {
      std::string body = random_bytes(rng, 40);
      std::replace(body.begin(), body.end(), '\n', ' ');
      text += body + "\n";
    }
    documents.push_back(text);
    book += text;
  }
  write_text(root_ / "book.txt", book);
  PrepareOptions options = byte_options("out");
  options.doc_boundary = "^CHAPTER ";
  options.val_fraction = 0.1;
  const PrepareStats stats = prepare_corpus({(root_ / "book.txt").string()}, options);
  EXPECT_EQ(stats.train.documents + stats.val.documents, 41);
  EXPECT_GE(stats.val.documents, 1);
  std::vector<std::string> train = byte_documents(split_stream(options.out_dir, "train"));
  std::vector<std::string> val = byte_documents(split_stream(options.out_dir, "val"));
  // Merge back by the assignment: every chapter intact, in order, in exactly one split.
  size_t t = 0, v = 0;
  for (size_t i = 0; i < documents.size(); ++i) {
    const bool to_val = v < val.size() && val[v] == documents[i];
    const bool to_train = t < train.size() && train[t] == documents[i];
    ASSERT_TRUE(to_val != to_train) << "document " << i << " is in " << (to_val ? "both" : "neither");
    to_val ? ++v : ++t;
  }
  EXPECT_EQ(t, train.size());
  EXPECT_EQ(v, val.size());
}

// ---- shards, metadata ----------------------------------------------------------------------

TEST_F(PrepareTest, ShardsRollOverAtShardTokensAndPrepareJsonDescribesThem) {
  std::mt19937 rng(15);
  std::string all;
  for (int i = 0; i < 12; ++i) write_text(root_ / "in" / fmt::format("{:02}.txt", i), random_bytes(rng, 90));
  PrepareOptions options = byte_options("out");
  options.shard_tokens = 64;
  options.val_fraction = 0.25;
  options.seed = 5;
  options.prefix = "tiny";
  const PrepareStats stats = prepare_corpus({(root_ / "in").string()}, options);

  for (const std::string split : {"train", "val"}) {
    const SplitStats& s = split == "train" ? stats.train : stats.val;
    const auto shards = list_shards(options.out_dir, split);
    ASSERT_EQ(static_cast<int64_t>(shards.size()), s.shards);
    EXPECT_EQ(s.shards, (s.tokens + 63) / 64) << split;
    for (size_t i = 0; i < shards.size(); ++i) {
      EXPECT_EQ(shards[i].filename().string(), fmt::format("tiny_{}_{:06}.bin", split, i));
      const int64_t n = read_shard_header(shards[i]).num_tokens;
      EXPECT_EQ(n, i + 1 < shards.size() ? 64 : s.tokens - 64 * static_cast<int64_t>(i)) << shards[i];
    }
    EXPECT_EQ(static_cast<int64_t>(split_stream(options.out_dir, split).size()), s.tokens);
  }

  std::ifstream file(fs::path(options.out_dir) / "prepare.json");
  const nlohmann::json j = nlohmann::json::parse(file);
  EXPECT_EQ(j["inputs"], nlohmann::json::array({(root_ / "in").string()}));
  EXPECT_EQ(j["files"], 12);
  EXPECT_EQ(j["bytes"], stats.bytes);
  EXPECT_EQ(j["tokenizer"]["kind"], "byte");
  EXPECT_EQ(j["tokenizer"]["vocab_size"], 257);
  EXPECT_EQ(j["tokenizer"]["eot_id"], 256);
  EXPECT_TRUE(j["tokenizer"]["ranks_file"].is_null());
  EXPECT_EQ(j["options"]["shard_tokens"], 64);
  EXPECT_EQ(j["options"]["val_fraction"], 0.25);
  EXPECT_EQ(j["options"]["seed"], 5);
  EXPECT_EQ(j["options"]["prefix"], "tiny");
  EXPECT_TRUE(j["options"]["doc_boundary"].is_null());
  EXPECT_EQ(j["train"]["documents"], stats.train.documents);
  EXPECT_EQ(j["train"]["tokens"], stats.train.tokens);
  EXPECT_EQ(j["val"]["documents"], stats.val.documents);
  EXPECT_EQ(j["val"]["tokens"], stats.val.tokens);
  EXPECT_EQ(stats.train.documents + stats.val.documents, 12);
  ASSERT_EQ(j["shards"].size(), static_cast<size_t>(stats.train.shards + stats.val.shards));
  for (const auto& shard : j["shards"]) {
    const fs::path path = fs::path(options.out_dir) / shard["file"].get<std::string>();
    EXPECT_EQ(shard["sha256"], sha256_file_hex(path.string())) << path;
    EXPECT_EQ(shard["tokens"], read_shard_header(path).num_tokens);
    EXPECT_NE(path.filename().string().find("_" + shard["split"].get<std::string>() + "_"), std::string::npos);
  }

  const TokenizerSpec spec = tokenizer_spec_load((fs::path(options.out_dir) / "tokenizer.json").string());
  EXPECT_EQ(spec.kind, "byte");
  EXPECT_EQ(spec.vocab_size, 257);
  EXPECT_EQ(spec.eot_id, 256);
}

TEST_F(PrepareTest, RerunRemovesStaleShardsOfItsPrefixAndRefusesForeignShards) {
  std::mt19937 rng(16);
  for (int i = 0; i < 6; ++i) write_text(root_ / "in" / fmt::format("{}.txt", i), random_bytes(rng, 100));
  PrepareOptions options = byte_options("out");
  options.shard_tokens = 50;
  const PrepareStats first = prepare_corpus({(root_ / "in").string()}, options);
  ASSERT_GT(first.train.shards, 2);
  options.shard_tokens = 1000000;
  const PrepareStats second = prepare_corpus({(root_ / "in").string()}, options);
  EXPECT_EQ(second.train.shards, 1);
  EXPECT_EQ(list_shards(options.out_dir, "train").size(), 1u);
  EXPECT_EQ(second.removed_shards.size(),
            static_cast<size_t>(first.train.shards + first.val.shards - 2));
  EXPECT_EQ(split_stream(options.out_dir, "train").size(), static_cast<size_t>(first.train.tokens));

  write_shard(fs::path(options.out_dir) / "other_train_000000.bin", std::vector<int32_t>{1, 2, 3}, 257);
  expect_error([&] { prepare_corpus({(root_ / "in").string()}, options); },
               {"other_train_000000.bin", options.out_dir, "mix"});
}

TEST_F(PrepareTest, Gpt2TokenizerWritesEncodedDocumentsInvalidUtf8Included) {
  std::string ranks;
  try {
    ranks = default_ranks_path();
  } catch (const Error&) {
    GTEST_SKIP() << "GPT-2 ranks file not found (scripts/setup.sh fetches it)";
  }
  const std::string a = "Call me Ishmael. Some years ago <|endoftext|> never mind how long.\n";
  const std::string b = std::string("Invalid UTF-8: \xff\xfe\xc3 and caf\xc3\xa9 \xe2\x82 end");
  write_text(root_ / "in" / "a.txt", a);
  write_text(root_ / "in" / "b.txt", b);
  PrepareOptions options;
  options.tokenizer = "gpt2";
  options.out_dir = (root_ / "out").string();
  options.val_fraction = 0;
  options.progress = ProgressOutput::quiet;
  const PrepareStats stats = prepare_corpus({(root_ / "in").string()}, options);

  const auto tokenizer = make_tokenizer("gpt2", ranks);
  std::vector<int32_t> expected{50256};
  for (int32_t id : tokenizer->encode(a)) expected.push_back(id);
  expected.push_back(50256);
  for (int32_t id : tokenizer->encode(b)) expected.push_back(id);
  const std::vector<int32_t> stream = split_stream(options.out_dir, "train");
  EXPECT_EQ(stream, expected);
  // "<|endoftext|>" in the text stays text: the only EOTs are the two separators.
  EXPECT_EQ(std::count(stream.begin(), stream.end(), 50256), 2);
  EXPECT_EQ(read_shard_header(list_shards(options.out_dir, "train")[0]).token_bytes, 2u);
  EXPECT_EQ(stats.vocab_size, 50257);
  EXPECT_EQ(tokenizer_spec_load((fs::path(options.out_dir) / "tokenizer.json").string()).kind, "gpt2");
  std::vector<int32_t> text_ids;
  std::copy_if(stream.begin(), stream.end(), std::back_inserter(text_ids), [](int32_t id) { return id != 50256; });
  EXPECT_EQ(tokenizer->decode(text_ids), a + b);
}

// ---- errors --------------------------------------------------------------------------------

TEST_F(PrepareTest, ErrorsNameThePath) {
  write_text(root_ / "in" / "a.txt", "aaa");
  write_text(root_ / "in" / "b.txt", "bbb");
  const std::string in = (root_ / "in").string();
  PrepareOptions options = byte_options("out");

  const std::string missing = (root_ / "nope.txt").string();
  expect_error([&] { prepare_corpus({in, missing}, options); }, {missing, "does not exist"});
  expect_error([&] { prepare_corpus({}, options); }, {"no input"});

  fs::create_directories(root_ / "empty" / "sub");
  write_text(root_ / "empty" / ".only_hidden", "x");
  const std::string empty = (root_ / "empty").string();
  expect_error([&] { prepare_corpus({empty}, options); }, {empty, "no regular, non-hidden file"});

  write_text(root_ / "blank" / "1.txt", "");
  write_text(root_ / "blank" / "2.txt", "");
  expect_error([&] { prepare_corpus({(root_ / "blank").string()}, options); }, {"empty", "blank"});

  expect_error([&] { prepare_corpus({in, (root_ / "in" / "a.txt").string()}, options); },
               {"a.txt", "given twice"});

  PrepareOptions file_out = byte_options("in/a.txt");
  expect_error([&] { prepare_corpus({in}, file_out); }, {file_out.out_dir, "not a folder"});

  PrepareOptions bad = options;
  bad.val_fraction = 1.0;
  expect_error([&] { prepare_corpus({in}, bad); }, {"validation fraction 1"});
  bad = options;
  bad.shard_tokens = 0;
  expect_error([&] { prepare_corpus({in}, bad); }, {"shard size 0"});
  bad = options;
  bad.prefix = "my_val_set";
  expect_error([&] { prepare_corpus({in}, bad); }, {"my_val_set"});
  bad = options;
  bad.tokenizer = "sentencepiece";
  expect_error([&] { prepare_corpus({in}, bad); }, {"sentencepiece"});
  bad = options;
  bad.tokenizer = "gpt2";
  bad.ranks_path = (root_ / "missing.tiktoken").string();
  expect_error([&] { prepare_corpus({in}, bad); }, {"missing.tiktoken"});

  if (::geteuid() != 0) {  // root reads and writes everything: these two need an ordinary user
    fs::permissions(root_ / "in" / "b.txt", fs::perms::none);
    expect_error([&] { prepare_corpus({in}, options); }, {"b.txt", "cannot read"});
    fs::permissions(root_ / "in" / "b.txt", fs::perms::owner_all);
    fs::create_directories(root_ / "locked");
    fs::permissions(root_ / "locked", fs::perms::owner_read | fs::perms::owner_exec);
    PrepareOptions locked = byte_options("locked");
    expect_error([&] { prepare_corpus({in}, locked); }, {locked.out_dir, "not writable"});
    PrepareOptions below = byte_options("locked/sub");
    expect_error([&] { prepare_corpus({in}, below); }, {below.out_dir, "cannot create"});
    fs::permissions(root_ / "locked", fs::perms::owner_all);
  }
}

TEST(PrepareChecksum, Sha256MatchesKnownVectors) {
  EXPECT_EQ(sha256_hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// ---- progress bar formatting -------------------------------------------------------------

TEST(ProgressFormat, HumanUnits) {
  EXPECT_EQ(format_human_count(0), "0");
  EXPECT_EQ(format_human_count(999), "999");
  EXPECT_EQ(format_human_count(1000), "1.00k");
  EXPECT_EQ(format_human_count(1234), "1.23k");
  EXPECT_EQ(format_human_count(12345), "12.3k");
  EXPECT_EQ(format_human_count(123456), "123k");
  EXPECT_EQ(format_human_count(999499), "999k");
  EXPECT_EQ(format_human_count(999500), "1.00M");
  EXPECT_EQ(format_human_count(1234567), "1.23M");
  EXPECT_EQ(format_human_count(2700000), "2.70M");
  EXPECT_EQ(format_human_count(5'000'000'000), "5.00G");
  EXPECT_EQ(format_human_count(-1500), "-1.50k");
  EXPECT_EQ(format_human_rate(3.5), "3.50");
  EXPECT_EQ(format_human_rate(45), "45.0");
  EXPECT_EQ(format_human_rate(512.3), "512");
  EXPECT_EQ(format_human_rate(9.996), "10.0");
  EXPECT_EQ(format_human_rate(99.96), "100");
  EXPECT_EQ(format_human_rate(512300), "512k");
  EXPECT_EQ(format_human_rate(2.5e12), "2.50T");
  EXPECT_EQ(format_human_rate(std::nan("")), "?");
  EXPECT_EQ(format_human_rate(INFINITY), "?");
}

TEST(ProgressFormat, DurationsEtaAndBar) {
  EXPECT_EQ(format_duration(0), "0:00");
  EXPECT_EQ(format_duration(3.2), "0:03");
  EXPECT_EQ(format_duration(59.6), "1:00");
  EXPECT_EQ(format_duration(754), "12:34");
  EXPECT_EQ(format_duration(3723), "1:02:03");
  EXPECT_EQ(format_duration(-1), "?:??");
  EXPECT_EQ(format_duration(INFINITY), "?:??");
  EXPECT_DOUBLE_EQ(eta_seconds(45, 100, 5.0), 11.0);
  EXPECT_DOUBLE_EQ(eta_seconds(100, 100, 5.0), 0.0);
  EXPECT_EQ(eta_seconds(45, 0, 5.0), -1);     // unknown total
  EXPECT_EQ(eta_seconds(45, 100, 0.0), -1);   // no rate yet
  EXPECT_EQ(eta_seconds(101, 100, 5.0), -1);  // past the total
  EXPECT_EQ(format_bar(0.45, 10), "####......");
  EXPECT_EQ(format_bar(0.999, 10), "#########.");
  EXPECT_EQ(format_bar(1.5, 4), "####");
  EXPECT_EQ(format_bar(-1, 3), "...");
  EXPECT_EQ(format_bar(std::nan(""), 3), "...");
}

TEST(ProgressFormat, WholeLines) {
  ProgressSnapshot s;
  s.label = "train";
  s.done = 1230000;
  s.total = 2700000;
  s.unit = "tok";
  s.elapsed_seconds = 2.4;  // rate 512.5k/s, 1.47M left -> 2.87 s
  s.fields = {{"loss", "3.21"}};
  EXPECT_EQ(format_progress_line(s, 30),
            "train [#############.................]  45% 1.23M/2.70M tok  512k tok/s  loss 3.21  ETA 0:03");
  s.total = 0;
  s.elapsed_seconds = 65;
  s.fields.clear();
  EXPECT_EQ(format_progress_line(s, 30), "train 1.23M tok  18.9k tok/s  1:05");
  ProgressSnapshot bytes{"prepare", 1204997, 1204997, "B", 0.5, {}, true};
  EXPECT_EQ(format_progress_line(bytes, 4), "prepare [####] 100% 1.20MB/1.20MB  2.41MB/s  in 0:01");
}

// Captures what a ProgressBar prints into a temporary file.
std::string run_bar(ProgressOutput output, double interval, int updates, bool finish) {
  std::FILE* stream = std::tmpfile();
  {
    ProgressOptions options;
    options.output = output;
    options.stream = stream;
    options.terminal_interval_seconds = interval;
    options.plain_interval_seconds = interval;
    ProgressBar bar("work", 1000, "step", options);
    bar.set_field("loss", "9.99");
    for (int i = 1; i <= updates; ++i) bar.advance(10);
    bar.set_field("loss", "1.25");
    if (finish) {
      bar.finish();
      bar.finish();  // once only
    }
  }
  std::rewind(stream);
  std::string text;
  for (int c; (c = std::fgetc(stream)) != EOF;) text += static_cast<char>(c);
  std::fclose(stream);
  return text;
}

TEST(ProgressBarOutput, PlainLogsAreThrottledAndEndWithOneFinalLine) {
  const std::string quiet_log = run_bar(ProgressOutput::plain, 1e9, 50, true);
  EXPECT_EQ(std::count(quiet_log.begin(), quiet_log.end(), '\n'), 1) << quiet_log;
  EXPECT_NE(quiet_log.find("work [###############...............]  50% 500/1.00k step"),
            std::string::npos) << quiet_log;
  EXPECT_NE(quiet_log.find("loss 1.25  in 0:00\n"), std::string::npos) << quiet_log;
  EXPECT_EQ(quiet_log.find('\r'), std::string::npos);

  const std::string every = run_bar(ProgressOutput::plain, 0, 5, true);
  EXPECT_EQ(std::count(every.begin(), every.end(), '\n'), 6) << every;
  EXPECT_NE(every.find(" 10/1.00k step"), std::string::npos) << every;

  EXPECT_EQ(run_bar(ProgressOutput::quiet, 0, 5, true), "");
  EXPECT_EQ(run_bar(ProgressOutput::plain, 1e9, 5, false), "");  // no finish: nothing to say
}

TEST(ProgressBarOutput, TerminalRedrawsOneLineAndEndsIt) {
  const std::string screen = run_bar(ProgressOutput::terminal, 1e9, 20, true);
  // First update draws at once, later ones are throttled; finish draws the final line.
  EXPECT_EQ(std::count(screen.begin(), screen.end(), '\r'), 2) << screen;
  EXPECT_EQ(screen.back(), '\n');
  EXPECT_NE(screen.find("\033[K"), std::string::npos);
  EXPECT_NE(screen.find("200/1.00k step"), std::string::npos) << screen;
  // Destroyed mid-work (an exception): the open line is ended so the next message starts clean.
  const std::string interrupted = run_bar(ProgressOutput::terminal, 1e9, 3, false);
  EXPECT_EQ(std::count(interrupted.begin(), interrupted.end(), '\n'), 1);
  EXPECT_EQ(interrupted.find("in 0:"), std::string::npos);
}

}  // namespace
}  // namespace sf
