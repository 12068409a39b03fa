// shards_test.cpp — tests of llm.c token shards: write/read round trips in both formats, byte
// layout identical to llm.c's Python writer, rejection of corrupt files, windows, split listing.
#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "core/error.h"
#include "data/shards.h"

namespace sf {
namespace {

namespace fs = std::filesystem;
using test::expect_error;

class ShardsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    directory_ = fs::temp_directory_path() /
                 ("sf_shards_test_" + std::to_string(::getpid()) + "_" +
                  ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(directory_);
    fs::create_directories(directory_);
  }
  void TearDown() override { fs::remove_all(directory_); }

  static std::vector<int32_t> random_tokens(size_t count, int32_t vocab_size, uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> id(0, vocab_size - 1);
    std::vector<int32_t> tokens(count);
    for (int32_t& token : tokens) token = id(rng);
    return tokens;
  }

  static std::string read_bytes(const fs::path& path) {
    std::ifstream file(path, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  }
  static void write_bytes(const fs::path& path, const std::string& bytes) {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }

  // Expects `action` to throw sf::Error whose message contains every fragment.
  fs::path directory_;
};

// The bytes llm.c's Python writer (dev/data/data_common.py write_datafile) produces:
// np.zeros(256, int32) header with [0]=magic, [1]=version, [2]=len(tokens), then the tokens as
// little-endian uint16 (version 1) or uint32 (version 7). Built here byte by byte.
std::string llmc_shard_bytes(int32_t magic, int32_t version, const std::vector<uint32_t>& tokens, int token_bytes) {
  std::string bytes(1024, '\0');
  auto put32 = [&](size_t offset, uint32_t value) {
    for (int b = 0; b < 4; ++b) bytes[offset + b] = static_cast<char>((value >> (8 * b)) & 0xff);
  };
  put32(0, static_cast<uint32_t>(magic));
  put32(4, static_cast<uint32_t>(version));
  put32(8, static_cast<uint32_t>(tokens.size()));
  for (uint32_t token : tokens)
    for (int b = 0; b < token_bytes; ++b) bytes.push_back(static_cast<char>((token >> (8 * b)) & 0xff));
  return bytes;
}

TEST_F(ShardsTest, Uint16RoundTripHasLlmcLayout) {
  const int32_t vocab = 50257;
  std::vector<int32_t> tokens = random_tokens(10007, vocab, 1);
  fs::path path = directory_ / "demo_train_000000.bin";
  write_shard(path, tokens, vocab);

  ShardHeader header = read_shard_header(path);
  EXPECT_EQ(header.magic, 20240520);
  EXPECT_EQ(header.version, 1);
  EXPECT_EQ(header.num_tokens, 10007);
  EXPECT_EQ(header.token_bytes, 2u);
  EXPECT_EQ(fs::file_size(path), 1024u + 2u * 10007u);
  EXPECT_EQ(read_shard(path, vocab), tokens);
  EXPECT_EQ(read_shard(path), tokens);

  std::vector<uint32_t> unsigned_tokens(tokens.begin(), tokens.end());
  EXPECT_EQ(read_bytes(path), llmc_shard_bytes(20240520, 1, unsigned_tokens, 2));
  // Nothing but the shard is left in the folder (the temporary was renamed).
  EXPECT_EQ(std::distance(fs::directory_iterator(directory_), fs::directory_iterator()), 1);
}

TEST_F(ShardsTest, Uint32RoundTripHasLlmcLayout) {
  const int32_t vocab = 128256;  // Llama 3
  std::vector<int32_t> tokens = random_tokens(5003, vocab, 2);
  ASSERT_GT(*std::max_element(tokens.begin(), tokens.end()), 65535);
  fs::path path = directory_ / "demo_val_000000.bin";
  write_shard(path, tokens, vocab);

  ShardHeader header = read_shard_header(path);
  EXPECT_EQ(header.magic, 20240801);
  EXPECT_EQ(header.version, 7);
  EXPECT_EQ(header.num_tokens, 5003);
  EXPECT_EQ(header.token_bytes, 4u);
  EXPECT_EQ(fs::file_size(path), 1024u + 4u * 5003u);
  EXPECT_EQ(read_shard(path, vocab), tokens);
  std::vector<uint32_t> unsigned_tokens(tokens.begin(), tokens.end());
  EXPECT_EQ(read_bytes(path), llmc_shard_bytes(20240801, 7, unsigned_tokens, 4));
}

TEST_F(ShardsTest, TokenWidthSwitchesAbove65536) {
  fs::path narrow = directory_ / "narrow.bin", wide = directory_ / "wide.bin";
  write_shard(narrow, std::vector<int32_t>{0, 65535, 7}, 65536);
  EXPECT_EQ(read_shard_header(narrow).token_bytes, 2u);
  EXPECT_EQ(read_shard(narrow, 65536), (std::vector<int32_t>{0, 65535, 7}));
  write_shard(wide, std::vector<int32_t>{65536, 3}, 65537);
  EXPECT_EQ(read_shard_header(wide).token_bytes, 4u);
  EXPECT_EQ(read_shard(wide, 65537), (std::vector<int32_t>{65536, 3}));
}

TEST_F(ShardsTest, ReadsShardsLaidOutByLlmcPythonWriter) {
  std::mt19937 rng(5);
  std::vector<uint32_t> gpt2_tokens(3001);
  for (uint32_t& token : gpt2_tokens) token = rng() % 50257;
  gpt2_tokens[0] = 50256;  // llm.c starts every document with end-of-text
  fs::path v1 = directory_ / "fineweb_val_000000.bin";
  write_bytes(v1, llmc_shard_bytes(20240520, 1, gpt2_tokens, 2));
  std::vector<int32_t> read_v1 = read_shard(v1, 50257);
  EXPECT_EQ(std::vector<uint32_t>(read_v1.begin(), read_v1.end()), gpt2_tokens);

  std::vector<uint32_t> llama_tokens(2999);
  for (uint32_t& token : llama_tokens) token = rng() % 128256;
  fs::path v7 = directory_ / "fineweb_val_000001.bin";
  write_bytes(v7, llmc_shard_bytes(20240801, 7, llama_tokens, 4));
  std::vector<int32_t> read_v7 = read_shard(v7, 128256);
  EXPECT_EQ(std::vector<uint32_t>(read_v7.begin(), read_v7.end()), llama_tokens);
}

TEST_F(ShardsTest, EmptyShard) {
  fs::path path = directory_ / "empty.bin";
  write_shard(path, std::vector<int32_t>{}, 257);
  EXPECT_EQ(fs::file_size(path), 1024u);
  EXPECT_TRUE(read_shard(path, 257).empty());
}

TEST_F(ShardsTest, OverwriteReplacesContents) {
  fs::path path = directory_ / "x_train_000000.bin";
  write_shard(path, random_tokens(100, 257, 3), 257);
  std::vector<int32_t> second = random_tokens(50, 257, 4);
  write_shard(path, second, 257);
  EXPECT_EQ(read_shard(path, 257), second);
}

TEST_F(ShardsTest, WriterRejectsIdsOutsideVocabularyAndLeavesNoFile) {
  fs::path path = directory_ / "bad.bin";
  std::vector<int32_t> tokens = random_tokens(3000, 257, 6);
  tokens[2345] = 257;
  expect_error([&] { write_shard(path, tokens, 257); }, {path.string(), "2345", "257"});
  tokens[2345] = -4;
  expect_error([&] { write_shard(path, tokens, 257); }, {path.string(), "2345", "-4"});
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(directory_), fs::directory_iterator()), 0);
}

TEST_F(ShardsTest, RejectsBadMagicAndVersion) {
  std::vector<uint32_t> tokens = {1, 2, 3, 4};
  fs::path path = directory_ / "corrupt.bin";
  write_bytes(path, llmc_shard_bytes(20240521, 1, tokens, 2));
  expect_error([&] { read_shard(path); }, {path.string(), "20240521/1"});
  write_bytes(path, llmc_shard_bytes(20240520, 7, tokens, 2));  // uint16 magic, uint32 version
  expect_error([&] { read_shard(path); }, {path.string(), "20240520/7"});
  write_bytes(path, llmc_shard_bytes(20240801, 2, tokens, 4));
  expect_error([&] { read_shard_header(path); }, {path.string(), "20240801/2"});
}

TEST_F(ShardsTest, RejectsTruncatedAndOversizedFiles) {
  std::vector<uint32_t> tokens = {10, 20, 30, 40, 50};
  fs::path path = directory_ / "sized.bin";
  std::string good = llmc_shard_bytes(20240520, 1, tokens, 2);  // 1034 bytes
  write_bytes(path, good.substr(0, good.size() - 1));
  expect_error([&] { read_shard(path); }, {path.string(), "1034", "1033", "truncated"});
  write_bytes(path, good + "xy");
  expect_error([&] { read_shard(path); }, {path.string(), "1034", "1036", "extra"});
  write_bytes(path, good.substr(0, 100));  // not even a header
  expect_error([&] { read_shard(path); }, {path.string(), "100"});
  expect_error([&] { read_shard(directory_ / "absent.bin"); }, {"absent.bin"});
}

TEST_F(ShardsTest, ReaderRejectsIdsOutsideVocabulary) {
  std::vector<uint32_t> tokens(600, 5);
  tokens[517] = 300;
  fs::path path = directory_ / "ids.bin";
  write_bytes(path, llmc_shard_bytes(20240520, 1, tokens, 2));
  expect_error([&] { read_shard(path, 257); }, {path.string(), "517", "300", "257"});
  EXPECT_EQ(read_shard(path, 301).at(517), 300);  // fine with a large enough vocabulary
}

TEST_F(ShardsTest, ReaderReadsWindows) {
  std::vector<int32_t> tokens = random_tokens(4000, 50257, 8);
  fs::path path = directory_ / "windows.bin";
  write_shard(path, tokens, 50257);
  ShardReader reader(path, 50257);
  EXPECT_EQ(reader.num_tokens(), 4000);
  std::mt19937 rng(9);
  for (int trial = 0; trial < 50; ++trial) {
    int64_t start = rng() % 4000;
    int64_t count = rng() % (4000 - start + 1);
    std::vector<int32_t> window = reader.read(start, count);
    ASSERT_EQ(window, std::vector<int32_t>(tokens.begin() + start, tokens.begin() + start + count));
  }
  expect_error([&] { reader.read(3990, 11); }, {path.string(), "4000"});
  expect_error([&] { reader.read(-1, 2); }, {path.string()});
  ShardReader moved = std::move(reader);
  EXPECT_EQ(moved.read(0, 3), std::vector<int32_t>(tokens.begin(), tokens.begin() + 3));
}

TEST_F(ShardsTest, ListsSplitsSortedByName) {
  for (const char* name : {"fineweb_train_000002.bin", "fineweb_train_000000.bin", "fineweb_val_000000.bin",
                           "fineweb_train_000001.bin", "tiny_shakespeare_train.bin", "tiny_shakespeare_val.bin",
                           "notes.txt", "fineweb_train_000003.bin.tmp.123", "trainer.bin", "mytrain_1.bin"})
    write_bytes(directory_ / name, "x");
  fs::create_directories(directory_ / "folder_train_000009.bin");  // a folder, not a shard

  std::vector<fs::path> train = list_shards(directory_, "train");
  std::vector<std::string> train_names;
  for (const fs::path& path : train) train_names.push_back(path.filename().string());
  EXPECT_EQ(train_names, (std::vector<std::string>{"fineweb_train_000000.bin", "fineweb_train_000001.bin",
                                                   "fineweb_train_000002.bin", "tiny_shakespeare_train.bin"}));
  std::vector<fs::path> val = list_shards(directory_, "val");
  ASSERT_EQ(val.size(), 2u);
  EXPECT_EQ(val[0].filename(), "fineweb_val_000000.bin");
  EXPECT_EQ(val[1].filename(), "tiny_shakespeare_val.bin");
  EXPECT_EQ(val[0].parent_path(), directory_);
  EXPECT_TRUE(list_shards(directory_, "test").empty());
  expect_error([&] { list_shards(directory_ / "missing", "train"); }, {"missing"});
}

}  // namespace
}  // namespace sf
