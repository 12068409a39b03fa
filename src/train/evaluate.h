// evaluate.h — loss and perplexity of a model on held-out data, and the unigram reference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/progress.h"
#include "data/batch_loader.h"
#include "model/model.h"

namespace sf {

struct EvalResult {
  double loss = 0.0;        // mean cross-entropy, nats per predicted token
  double perplexity = 0.0;  // exp(loss)
  int64_t tokens = 0;       // predicted tokens counted
  int64_t batches = 0;
};

// Mean loss over the first `max_batches` batches of `loader` (all of them when max_batches <= 0),
// from the loader's first position; the loader is reset before and after. `progress` (optional)
// is told the tokens scored and their total.
EvalResult evaluate_loader(Model& model, BatchLoader& loader, int64_t max_batches,
                           ProgressBar* progress = nullptr);

// Mean loss over a token stream scored in non-overlapping windows of `seq` tokens, one window
// per forward (each token after the first predicted exactly once; the last window may be
// shorter). Windows do not see earlier windows: this is the standard "strided, stride = seq"
// evaluation, slightly pessimistic at window starts. `progress` as for evaluate_loader.
EvalResult evaluate_tokens(Model& model, const std::vector<int32_t>& tokens, int64_t seq,
                           ProgressBar* progress = nullptr);

// Cross-entropy of the validation tokens of `data_dir` under a unigram model fitted on its
// training tokens (add-one smoothing over `vocab_size` ids): the loss a model that ignores
// context would reach. Every trained model must beat it clearly.
double unigram_cross_entropy(const std::string& data_dir, int32_t vocab_size);

}  // namespace sf
