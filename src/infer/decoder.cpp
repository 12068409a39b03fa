// decoder.cpp — input checks, sequence lengths, the step's indices and the logits' read-back
// around a DecodingState.
#include "infer/decoder.h"

#include <algorithm>

namespace sf {

namespace {

// The width of a step whose last sequence not idle is `last` (-1: none). Where steps are
// recorded (one recording per width), the smallest of 1, 2, 4, ... and the batch that holds it:
// the recordings stay few. Elsewhere (the CPU) exactly the sequences up to `last`.
int64_t width_for(int64_t last, int64_t batch, bool recorded) {
  if (!recorded) return std::clamp<int64_t>(last + 1, 1, batch);
  int64_t width = 1;
  while (width <= last) width *= 2;
  return std::min(width, batch);
}

}  // namespace

Decoder::Decoder(Model& model, int64_t batch, DecodeMode mode, int64_t context)
    : model_(model),
      schedule_(model.config(), mode),
      state_(model, batch, schedule_.plan(), context),
      length_(static_cast<size_t>(batch), 0) {
  model.sync_compute_weights();  // mixed precision: the working copies the decoder reads
  const DType dt = model.compute_dtype();
  const DType host_dt = dt == DType::f64 ? DType::f64 : DType::f32;
  if (dt != host_dt) logits_device_ = model.backend().zeros({batch, model.config().vocab_size}, host_dt);
  logits_host_ = Tensor::zeros({batch, model.config().vocab_size}, host_dt);
}

void Decoder::read_logits(int64_t first_row, int64_t rows) {
  Backend& be = model_.backend();
  Tensor host = logits_host_.slice(0, first_row, rows);
  const Tensor logits = state_.logits().slice(0, first_row, rows);
  if (!logits_device_.defined()) {
    be.copy(host, logits);
    return;
  }
  Tensor converted = logits_device_.slice(0, first_row, rows);
  be.convert(converted, logits);
  be.copy(host, converted);
}

void Decoder::prefill(int64_t b, std::span<const int32_t> prompt) {
  const ModelConfig& c = model_.config();
  SF_CHECK(b >= 0 && b < batch(), "prefill: sequence {} outside the batch of {}", b, batch());
  const int64_t n = static_cast<int64_t>(prompt.size());
  SF_CHECK(n >= 1, "prefill: empty prompt");
  SF_CHECK(n <= context(), "the prompt has {} tokens but the {} context is {}", n,
           context() == c.max_seq_len ? "model's" : "decoder's", context());
  Tensor tokens = Tensor::zeros({n}, DType::i32);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t id = prompt[static_cast<size_t>(i)];
    SF_CHECK(id >= 0 && id < c.vocab_size,
             "prefill: token id {} at position {} is outside the vocabulary [0, {})", id, i,
             c.vocab_size);
    tokens.data<int32_t>()[i] = id;
  }
  length_[static_cast<size_t>(b)] = 0;  // a failure below leaves the sequence unprefilled
  if (b >= state_.width())  // (keeps the others)
    state_.set_width(width_for(b, batch(), model_.backend().can_record()));
  state_.prefill(b, tokens);
  length_[static_cast<size_t>(b)] = n;
  read_logits(b, 1);
}

void Decoder::step(std::span<const int32_t> tokens) {
  const ModelConfig& c = model_.config();
  SF_CHECK(static_cast<int64_t>(tokens.size()) == batch(), "step: {} tokens for a batch of {}",
           tokens.size(), batch());
  for (int64_t b = 0; b < batch(); ++b) {
    const int64_t length = length_[static_cast<size_t>(b)];
    const int32_t id = tokens[static_cast<size_t>(b)];
    if (id == kIdle) continue;
    SF_CHECK(length >= 1, "step: sequence {} has not been prefilled (or was idle since)", b);
    SF_CHECK(length < context(), "step: sequence {} is full (its context of {} positions is used up)", b,
             context());
    SF_CHECK(id >= 0 && id < c.vocab_size,
             "step: token id {} of sequence {} is outside the vocabulary [0, {})", id, b,
             c.vocab_size);
  }
  // The step runs the sequences up to the last one fed (a width, width_for); those beyond are
  // idle, and their state would be dropped by the idle rule anyway.
  int64_t last = -1;
  for (int64_t b = 0; b < batch(); ++b)
    if (tokens[static_cast<size_t>(b)] != kIdle) last = b;
  const int64_t width = width_for(last, batch(), model_.backend().can_record());
  for (int64_t b = width; b < batch(); ++b) length_[static_cast<size_t>(b)] = 0;
  state_.set_width(width);
  StepIndices& indices = state_.indices();
  for (int64_t b = 0; b < width; ++b) {
    const int32_t id = tokens[static_cast<size_t>(b)];
    // An idle row: token 0 at position 1 (its own caches' first slots; nothing of another
    // sequence), then it counts as not prefilled.
    if (id == kIdle) length_[static_cast<size_t>(b)] = 0;
    indices.set(b, id == kIdle ? 0 : id, id == kIdle ? 1 : length_[static_cast<size_t>(b)]);
  }
  indices.upload(model_.backend());
  state_.step();
  for (int64_t b = 0; b < width; ++b)
    if (tokens[static_cast<size_t>(b)] != kIdle) ++length_[static_cast<size_t>(b)];
  read_logits(0, width);
}

}  // namespace sf
