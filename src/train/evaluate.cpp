// evaluate.cpp — evaluation loops and the unigram reference loss.
#include "train/evaluate.h"

#include <cmath>

#include "data/shards.h"

namespace sf {

namespace {

EvalResult finish(double loss_sum, int64_t tokens, int64_t batches) {
  EvalResult r;
  r.tokens = tokens;
  r.batches = batches;
  r.loss = tokens > 0 ? loss_sum / static_cast<double>(tokens) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

}  // namespace

EvalResult evaluate_loader(Model& model, BatchLoader& loader, int64_t max_batches,
                           ProgressBar* progress) {
  loader.reset();
  int64_t n = loader.batches_per_epoch();
  if (max_batches > 0) n = std::min(n, max_batches);
  if (progress) progress->set_total(n * loader.batch() * loader.seq());
  Tensor tokens, targets;
  double loss_sum = 0.0;
  int64_t counted = 0;
  for (int64_t i = 0; i < n; ++i) {
    loader.next(tokens, targets);
    const double loss = model.forward(tokens, targets);
    loss_sum += loss * static_cast<double>(model.counted_targets());
    counted += model.counted_targets();
    if (progress) progress->advance(tokens.numel());
  }
  loader.reset();
  return finish(loss_sum, counted, n);
}

EvalResult evaluate_tokens(Model& model, const std::vector<int32_t>& ids, int64_t seq,
                           ProgressBar* progress) {
  SF_CHECK(seq >= 1, "evaluate: window length must be >= 1, got {}", seq);
  SF_CHECK(ids.size() >= 2, "evaluate: need at least 2 tokens, got {}", ids.size());
  double loss_sum = 0.0;
  int64_t counted = 0, batches = 0;
  const int64_t total = static_cast<int64_t>(ids.size());
  if (progress) progress->set_total(total - 1);
  for (int64_t start = 0; start + 1 < total; start += seq) {
    const int64_t T = std::min(seq, total - 1 - start);
    Tensor tokens = Tensor::zeros({1, T}, DType::i32), targets = Tensor::zeros({1, T}, DType::i32);
    for (int64_t t = 0; t < T; ++t) {
      tokens.data<int32_t>()[t] = ids[start + t];
      targets.data<int32_t>()[t] = ids[start + t + 1];
    }
    const double loss = model.forward(tokens, targets);
    loss_sum += loss * static_cast<double>(model.counted_targets());
    counted += model.counted_targets();
    ++batches;
    if (progress) progress->advance(T);
  }
  return finish(loss_sum, counted, batches);
}

double unigram_cross_entropy(const std::string& data_dir, int32_t vocab_size) {
  std::vector<double> counts(static_cast<size_t>(vocab_size), 1.0);  // add-one smoothing
  double total = static_cast<double>(vocab_size);
  for (const auto& shard : list_shards(data_dir, "train"))
    for (int32_t id : read_shard(shard, vocab_size)) {
      counts[id] += 1.0;
      total += 1.0;
    }
  double nll = 0.0;
  int64_t n = 0;
  for (const auto& shard : list_shards(data_dir, "val"))
    for (int32_t id : read_shard(shard, vocab_size)) {
      nll -= std::log(counts[id] / total);
      ++n;
    }
  SF_CHECK(n > 0, "{}: no validation tokens for the unigram reference", data_dir);
  return nll / static_cast<double>(n);
}

}  // namespace sf
