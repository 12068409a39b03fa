// batch_loader_test.cpp — tests of BatchLoader (src/data/batch_loader.h): windows and shifted
// targets, shard crossing and skipping, epoch wrap, positions (round trip, normalisation, bad
// positions), buffer reuse, and its errors; plus prepare -> loader end to end.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "support/test_util.h"
#include "core/error.h"
#include "data/batch_loader.h"
#include "data/prepare.h"
#include "data/shards.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

using test::expect_error;

std::vector<int32_t> to_vector(const Tensor& t) {
  const int32_t* data = t.data<int32_t>();
  return std::vector<int32_t>(data, data + t.numel());
}

class BatchLoaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::fresh_temp_dir("batch_loader_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes train shards of the given sizes with random ids; returns their tokens.
  std::vector<std::vector<int32_t>> write_shards(const std::vector<int64_t>& sizes, int32_t vocab,
                                                 uint32_t seed, const std::string& split = "train") {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> id(0, vocab - 1);
    std::vector<std::vector<int32_t>> shards;
    for (size_t s = 0; s < sizes.size(); ++s) {
      std::vector<int32_t> tokens(static_cast<size_t>(sizes[s]));
      for (int32_t& token : tokens) token = id(rng);
      write_shard(dir_ / fmt::format("data_{}_{:06}.bin", split, s), tokens, vocab);
      shards.push_back(std::move(tokens));
    }
    return shards;
  }

  // The batch starting at `offset` of `shard`, as the loader must produce it.
  static void expect_batch(const Tensor& tokens, const Tensor& targets, const std::vector<int32_t>& shard,
                           int64_t offset, int64_t B, int64_t T, const std::string& where) {
    ASSERT_EQ(tokens.shape(), Shape({B, T})) << where;
    ASSERT_EQ(targets.shape(), Shape({B, T})) << where;
    const std::vector<int32_t> x = to_vector(tokens);
    const std::vector<int32_t> y = to_vector(targets);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t t = 0; t < T; ++t) {
        const size_t i = static_cast<size_t>(b * T + t);
        ASSERT_EQ(x[i], shard[static_cast<size_t>(offset) + i]) << where << " b=" << b << " t=" << t;
        ASSERT_EQ(y[i], shard[static_cast<size_t>(offset) + i + 1]) << where << " b=" << b << " t=" << t;
      }
    }
  }

  fs::path dir_;
};

TEST_F(BatchLoaderTest, WindowsTileTheShardTargetsAreShiftedAndTheEpochWraps) {
  const int64_t B = 2, T = 8;
  const auto shards = write_shards({1000}, 50257, 1);
  BatchLoader loader(dir_.string(), "train", B, T, 50257);
  EXPECT_EQ(loader.batches_per_epoch(), (1000 - 1) / 16);  // 62
  EXPECT_EQ(loader.tokens_per_epoch(), 62 * 16);
  Tensor tokens, targets;  // undefined: the loader allocates them
  for (int64_t k = 0; k < loader.batches_per_epoch(); ++k) {
    EXPECT_EQ(loader.position(), (DataPosition{0, 16 * k, 0}));
    loader.next(tokens, targets);
    expect_batch(tokens, targets, shards[0], 16 * k, B, T, fmt::format("batch {}", k));
  }
  // 62 * 16 + 17 > 1000: the tail is skipped and the next batch is the first of epoch 1.
  EXPECT_EQ(loader.position(), (DataPosition{0, 0, 1}));
  loader.next(tokens, targets);
  expect_batch(tokens, targets, shards[0], 0, B, T, "epoch 1");
}

TEST_F(BatchLoaderTest, CrossesShardsSkipsShortOnesAndReusesBuffers) {
  const int64_t B = 2, T = 8;  // window 17
  // Shard 1 (10 tokens) is too short for a window and never used; shard 2 ends exactly on one.
  const auto shards = write_shards({50, 10, 33, 16}, 1000, 2);
  BatchLoader loader(dir_.string(), "train", B, T, 1000);
  EXPECT_EQ(loader.num_shards(), 4);
  EXPECT_EQ(loader.batches_per_epoch(), 3 + 2);  // (50-1)/16 + (33-1)/16
  EXPECT_EQ(loader.tokens_per_epoch(), 5 * 16);

  Tensor tokens = Tensor::zeros({B, T}, DType::i32);
  Tensor targets = Tensor::zeros({B, T}, DType::i32);
  const int32_t* tokens_data = tokens.data<int32_t>();
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 0}, {0, 16}, {0, 32}, {2, 0}, {2, 16},
                                                             {0, 0}, {0, 16}};
  for (size_t k = 0; k < expected.size(); ++k) {
    const auto [shard, offset] = expected[k];
    const DataPosition before = loader.position();
    EXPECT_EQ(before.shard, shard) << k;
    EXPECT_EQ(before.offset, offset) << k;
    EXPECT_EQ(before.epoch, k < 5 ? 0 : 1) << k;
    loader.next(tokens, targets);
    expect_batch(tokens, targets, shards[static_cast<size_t>(shard)], offset, B, T, fmt::format("batch {}", k));
  }
  EXPECT_EQ(tokens.data<int32_t>(), tokens_data) << "a given buffer must be filled in place";

  Tensor wrong = Tensor::zeros({B, T + 1}, DType::i32);
  expect_error([&] { loader.next(wrong, targets); }, {"tokens", "I32[2, 8]"});
  Tensor floats = Tensor::zeros({B, T}, DType::f32);
  expect_error([&] { loader.next(tokens, floats); }, {"targets", "F32"});

  loader.reset();
  EXPECT_EQ(loader.position(), (DataPosition{0, 0, 0}));
}

TEST_F(BatchLoaderTest, PositionRoundTripResumesTheSameBatches) {
  const int64_t B = 3, T = 5;
  const auto shards = write_shards({200, 90, 121}, 300, 3);
  std::mt19937 rng(4);
  for (int trial = 0; trial < 5; ++trial) {
    BatchLoader first(dir_.string(), "train", B, T, 300);
    const int steps = std::uniform_int_distribution<int>(0, 40)(rng);
    Tensor x, y;
    for (int i = 0; i < steps; ++i) first.next(x, y);
    const DataPosition saved = first.position();
    std::vector<std::vector<int32_t>> continued;
    for (int i = 0; i < 4; ++i) {
      first.next(x, y);
      continued.push_back(to_vector(x));
      continued.push_back(to_vector(y));
    }

    BatchLoader resumed(dir_.string(), "train", B, T, 300);
    resumed.set_position(saved);
    EXPECT_EQ(resumed.position(), saved);
    for (int i = 0; i < 4; ++i) {
      Tensor rx, ry;
      resumed.next(rx, ry);
      EXPECT_EQ(to_vector(rx), continued[2 * i]) << "trial " << trial << " step " << i;
      EXPECT_EQ(to_vector(ry), continued[2 * i + 1]) << "trial " << trial << " step " << i;
    }
    EXPECT_EQ(resumed.position(), first.position());
  }

  // An offset with too few tokens left (e.g. saved with another batch shape) moves on, as next()
  // would: 90 - 85 < 16 -> the next shard; at the end of the last shard -> epoch + 1.
  BatchLoader loader(dir_.string(), "train", B, T, 300);
  loader.set_position({1, 85, 2});
  EXPECT_EQ(loader.position(), (DataPosition{2, 0, 2}));
  loader.set_position({2, 121, 2});
  EXPECT_EQ(loader.position(), (DataPosition{0, 0, 3}));
  loader.set_position({1, 7, 0});  // any offset with room is kept
  EXPECT_EQ(loader.position(), (DataPosition{1, 7, 0}));
  Tensor x, y;
  loader.next(x, y);
  expect_batch(x, y, shards[1], 7, B, T, "odd offset");
}

TEST_F(BatchLoaderTest, BadPositionsAreRejectedNamingTheDataFolder) {
  write_shards({100, 100}, 500, 5);
  BatchLoader loader(dir_.string(), "train", 2, 4, 500);
  const std::string folder = dir_.string();
  expect_error([&] { loader.set_position({2, 0, 0}); }, {folder, "shard 2", "2 train shards"});
  expect_error([&] { loader.set_position({-1, 0, 0}); }, {folder, "shard -1"});
  expect_error([&] { loader.set_position({0, -3, 0}); }, {folder, "offset -3"});
  expect_error([&] { loader.set_position({1, 101, 0}); }, {folder, "offset 101", "data_train_000001.bin", "100 tokens"});
  expect_error([&] { loader.set_position({0, 0, -1}); }, {folder, "epoch -1"});
  EXPECT_EQ(loader.position(), (DataPosition{0, 0, 0})) << "a rejected position must not change it";
}

TEST_F(BatchLoaderTest, ErrorsForMissingShortAndOutOfVocabularyData) {
  const std::string folder = dir_.string();
  expect_error([&] { BatchLoader(folder, "train", 2, 4, 500); }, {folder, "no train shard", "*_train_*.bin"});
  expect_error([&] { BatchLoader(folder + "/absent", "train", 2, 4, 500); }, {"absent"});
  expect_error([&] { BatchLoader(folder, "test", 2, 4, 500); }, {"'test'", "train or val"});

  write_shards({40, 64}, 500, 6);
  // B*T+1 = 65 > 64: not one batch.
  expect_error([&] { BatchLoader(folder, "train", 4, 16, 500); },
               {folder, "64 tokens", "B*T+1 = 65", "--batch"});
  BatchLoader fits(folder, "train", 3, 21, 500);  // 64 tokens = exactly one window
  EXPECT_EQ(fits.batches_per_epoch(), 1);
  expect_error([&] { BatchLoader(folder, "val", 1, 1, 500); }, {"no val shard"});

  // Ids are checked against the model's vocabulary as they are read.
  write_shard(dir_ / "data_val_000000.bin", std::vector<int32_t>{1, 2, 3, 700, 4, 5}, 1000);
  BatchLoader val(folder, "val", 1, 4, 500);
  Tensor x, y;
  expect_error([&] { val.next(x, y); }, {"data_val_000000.bin", "700", "vocabulary of 500"});
}

TEST_F(BatchLoaderTest, ReadsUint32ShardsAndValSplitIsSeparate) {
  const auto train = write_shards({300}, 100000, 7);  // vocab > 65536: uint32 shard
  const auto val = write_shards({60}, 100000, 8, "val");
  ASSERT_EQ(read_shard_header(dir_ / "data_train_000000.bin").token_bytes, 4u);
  BatchLoader train_loader(dir_.string(), "train", 4, 7, 100000);
  BatchLoader val_loader(dir_.string(), "val", 4, 7, 100000);
  EXPECT_EQ(val_loader.batches_per_epoch(), 2);  // (60-1)/28
  Tensor x, y;
  train_loader.next(x, y);
  expect_batch(x, y, train[0], 0, 4, 7, "train");
  val_loader.next(x, y);
  val_loader.next(x, y);
  expect_batch(x, y, val[0], 28, 4, 7, "val");
}

TEST_F(BatchLoaderTest, ReadsWhatPrepareWrote) {
  std::mt19937 rng(9);
  std::vector<int32_t> stream;
  for (int i = 0; i < 8; ++i) {
    std::string text(200, ' ');
    for (char& c : text) c = static_cast<char>('a' + rng() % 26);
    std::ofstream(dir_ / fmt::format("doc{}.txt", i)) << text;
    stream.push_back(256);
    for (char c : text) stream.push_back(c);
  }
  PrepareOptions options;
  options.tokenizer = "byte";
  options.out_dir = (dir_ / "data").string();
  options.val_fraction = 0;
  options.shard_tokens = 500;
  options.progress = ProgressOutput::quiet;
  prepare_corpus({dir_.string()}, options);
  BatchLoader loader(options.out_dir, "train", 2, 16, 257);
  EXPECT_EQ(loader.num_shards(), 4);  // 1608 tokens at 500 per shard
  Tensor x, y;
  loader.next(x, y);
  expect_batch(x, y, stream, 0, 2, 16, "first batch");
  EXPECT_EQ(to_vector(x)[0], 256) << "the stream starts with end-of-text";
}

}  // namespace
}  // namespace sf
