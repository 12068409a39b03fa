// batch_loader.h — training/evaluation batches from the llm.c shards of one split.
//
// The split's shards (list_shards: *_<split>_*.bin, in name order) are read as one sequence of
// windows, like llm.c's DataLoader without shuffling: a batch is B*T+1 consecutive tokens of one
// shard starting at the current position; inputs are the first B*T as [B, T] (row b holds
// tokens b*T .. b*T+T-1 of the window), targets the same shifted by one token. The position then
// advances by B*T, so consecutive batches tile each shard and every token but a shard's tail is
// an input exactly once per epoch. When a shard has fewer than B*T+1 tokens left, the loader
// moves to the next shard (the tail is skipped), and after the last shard wraps to the first one
// with epoch + 1. Shards shorter than B*T+1 provide no batch and are skipped.
//
// No shuffling (deterministic, as llm.c by default): `prepare` already spreads documents over
// the shards in corpus order, and a run resumed from a saved position sees exactly the batches it
// would have seen without the interruption.
//
// Shards are read in windows through ShardReader (only the current shard is open), so 100M-token
// shards are never loaded whole. Every id is checked against the model's vocabulary.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/shards.h"

namespace sf {

// Where the next batch starts: a shard index of the split, a token offset in it, and how many
// times the split has been wrapped around.
struct DataPosition {
  int64_t shard = 0;
  int64_t offset = 0;
  int64_t epoch = 0;
  bool operator==(const DataPosition&) const = default;
};

class BatchLoader {
 public:
  // All shards of `split` ("train" or "val") in `data_dir`; their headers are validated now and
  // ids are checked against vocab_size as they are read. Throws sf::Error naming the folder and
  // the file pattern when the split has no shard, and saying how many tokens the longest shard
  // has and how many B*T+1 needs when no shard is long enough for one batch.
  BatchLoader(const std::string& data_dir, const std::string& split, int64_t batch, int64_t seq,
              int32_t vocab_size);

  // Fills the next batch and advances. `tokens` and `targets` are either undefined (default
  // constructed: the loader allocates CPU I32 [B, T] tensors into them) or contiguous CPU I32
  // [B, T] tensors that are overwritten in place, so a training loop can reuse its buffers;
  // anything else is an error.
  void next(Tensor& tokens, Tensor& targets);

  // The position of the next batch (always one at which B*T+1 tokens are available).
  DataPosition position() const { return position_; }
  // Continues from `position` (for --resume). The shard must exist and the offset lie within it
  // (0 <= offset <= its token count); an offset too close to the end moves on to the next
  // shard, as next() would. Throws sf::Error naming the data folder otherwise.
  void set_position(const DataPosition& position);
  // Back to the first batch of epoch 0.
  void reset();

  // Tokens used as inputs in one pass over the split: batches_per_epoch() * B * T.
  int64_t tokens_per_epoch() const { return batches_per_epoch_ * batch_ * seq_; }
  // Distinct batches in one pass over the split (an evaluation iterates them all, or a maximum).
  int64_t batches_per_epoch() const { return batches_per_epoch_; }

  int64_t batch() const { return batch_; }
  int64_t seq() const { return seq_; }
  int64_t num_shards() const { return static_cast<int64_t>(shards_.size()); }
  const std::string& data_dir() const { return data_dir_; }
  const std::string& split() const { return split_; }

 private:
  int64_t window() const { return batch_ * seq_ + 1; }
  // Moves `position_` forward to the first place at or after it where a window fits.
  void normalize();
  const ShardReader& reader_for(int64_t shard);

  std::string data_dir_;
  std::string split_;
  int64_t batch_;
  int64_t seq_;
  int32_t vocab_size_;
  std::vector<std::filesystem::path> shards_;
  std::vector<int64_t> shard_tokens_;
  int64_t batches_per_epoch_ = 0;
  DataPosition position_;
  std::optional<ShardReader> reader_;  // the current shard's
  int64_t reader_shard_ = -1;
};

}  // namespace sf
