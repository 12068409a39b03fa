// batch_loader.cpp — sequential B*T+1 windows over a split's shards, with resumable positions.
#include "data/batch_loader.h"

#include <algorithm>

#include "core/error.h"

namespace sf {

BatchLoader::BatchLoader(const std::string& data_dir, const std::string& split, int64_t batch,
                         int64_t seq, int32_t vocab_size)
    : data_dir_(data_dir), split_(split), batch_(batch), seq_(seq), vocab_size_(vocab_size) {
  SF_CHECK(split == "train" || split == "val", "data split '{}': expected train or val", split);
  SF_CHECK(batch >= 1 && seq >= 1, "batch size {} and sequence length {} must be positive", batch, seq);
  SF_CHECK(vocab_size >= 1, "vocabulary size {} must be positive", vocab_size);
  shards_ = list_shards(data_dir, split);
  SF_CHECK(!shards_.empty(),
           "data folder {} has no {} shard (files named *_{}_*.bin or *_{}.bin; run `stagformer "
           "prepare` to make them)",
           data_dir, split, split, split);
  int64_t longest = 0;
  for (const auto& path : shards_) {
    const int64_t tokens = read_shard_header(path).num_tokens;
    shard_tokens_.push_back(tokens);
    longest = std::max(longest, tokens);
    // Batch k of a shard starts at k*B*T and needs B*T+1 tokens.
    if (tokens >= window()) batches_per_epoch_ += (tokens - 1) / (batch_ * seq_);
  }
  SF_CHECK(batches_per_epoch_ > 0,
           "data folder {}: no {} shard is long enough for one batch: the longest of {} has {} "
           "tokens, and batch {} x sequence {} needs B*T+1 = {} consecutive tokens of one shard "
           "(use a smaller --batch or --seq, or prepare more data)",
           data_dir, split, shards_.size(), longest, batch_, seq_, window());
  reset();
}

void BatchLoader::reset() {
  position_ = DataPosition{};
  normalize();  // skips leading shards too short for a batch (epoch stays 0: nothing was read)
}

void BatchLoader::normalize() {
  // Terminates: at least one shard holds a window (checked in the constructor).
  while (position_.offset + window() > shard_tokens_[static_cast<size_t>(position_.shard)]) {
    position_.offset = 0;
    if (++position_.shard == num_shards()) {
      position_.shard = 0;
      ++position_.epoch;
    }
  }
}

void BatchLoader::set_position(const DataPosition& p) {
  SF_CHECK(p.epoch >= 0, "data folder {}: position epoch {} is negative", data_dir_, p.epoch);
  SF_CHECK(p.shard >= 0 && p.shard < num_shards(),
           "data folder {}: position names {} shard {}, but the folder has {} {} shard{} (was the "
           "data prepared again since the checkpoint?)",
           data_dir_, split_, p.shard, num_shards(), split_, num_shards() == 1 ? "" : "s");
  const int64_t tokens = shard_tokens_[static_cast<size_t>(p.shard)];
  SF_CHECK(p.offset >= 0 && p.offset <= tokens,
           "data folder {}: position offset {} is outside shard {} ({} tokens)", data_dir_,
           p.offset, shards_[static_cast<size_t>(p.shard)].filename().string(), tokens);
  position_ = p;
  normalize();
}

const ShardReader& BatchLoader::reader_for(int64_t shard) {
  if (reader_shard_ != shard) {
    reader_.reset();  // close the previous shard first: only one is open at a time
    reader_.emplace(shards_[static_cast<size_t>(shard)], vocab_size_);
    reader_shard_ = shard;
    // The header was validated at construction; a changed file means the data moved under us.
    SF_CHECK(reader_->num_tokens() == shard_tokens_[static_cast<size_t>(shard)],
             "shard {} changed since the loader opened the data folder ({} tokens, now {})",
             reader_->path().string(), shard_tokens_[static_cast<size_t>(shard)],
             reader_->num_tokens());
  }
  return *reader_;
}

namespace {

void prepare_output(Tensor& tensor, int64_t batch, int64_t seq, const char* what) {
  if (!tensor.defined()) {
    tensor = Tensor::zeros({batch, seq}, DType::i32);
    return;
  }
  SF_CHECK(tensor.device() == Device::cpu && tensor.dtype() == DType::i32 &&
               tensor.shape() == Shape({batch, seq}) && tensor.is_contiguous(),
           "batch {} must be a contiguous CPU I32[{}, {}] tensor (or undefined), got {}", what,
           batch, seq, tensor.describe());
}

}  // namespace

void BatchLoader::next(Tensor& tokens, Tensor& targets) {
  prepare_output(tokens, batch_, seq_, "tokens");
  prepare_output(targets, batch_, seq_, "targets");
  const std::vector<int32_t> window_tokens = reader_for(position_.shard).read(position_.offset, window());
  const int64_t count = batch_ * seq_;
  std::copy_n(window_tokens.begin(), count, tokens.data<int32_t>());
  std::copy_n(window_tokens.begin() + 1, count, targets.data<int32_t>());
  position_.offset += count;
  normalize();
}

}  // namespace sf
