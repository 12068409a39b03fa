// engine.h — the serving engine: one decoder of N sequences (the slots) that keeps stepping
// while requests come and go (continuous batching), fed from a bounded queue.
//
// One thread owns the model and the decoder. Each turn it admits queued requests into free
// slots (prefilling each prompt and sampling its first token at once: a new request joins while
// the others decode), then runs one decode step for every busy slot together (free slots sit
// out: Decoder::kIdle, though their rows still run, which on a CPU costs what a busy row does),
// samples each slot's next token with its own sampler, and hands the text to the request's sink.
// Text is released at UTF-8 character boundaries and before any possible stop string
// (stop_strings.h), so streamed pieces concatenate to the whole reply. A request ends at
// end-of-text or a stop string ("stop"), at max_tokens or a full context ("length"), or when
// cancelled (a client that went away, a timeout): its slot is free for the next turn.
//
// Each slot holds `context` positions (prompt and reply; `--ctx`, at most the model's
// max_seq_len): the decoder's caches are allocated for that many, so a server that needs less
// than the model's context holds less memory, and a request that does not fit is refused (400)
// before it is queued.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer.h"
#include "infer/decode_schedule.h"
#include "infer/sampler.h"
#include "model/model.h"
#include "serve/openai_response.h"

namespace sf {
class Decoder;
}

namespace sf::serve {

struct EngineOptions {
  // Positional, the later options optional: `EngineOptions{slots, queue, mode}` (a constructor
  // rather than an aggregate, which would warn of every option left out).
  EngineOptions(int64_t slots = 4, int64_t queue_limit = 64, DecodeMode decode = DecodeMode::staggered,
                std::optional<int64_t> context = std::nullopt)
      : slots(slots), queue_limit(queue_limit), decode(decode), context(context) {}

  int64_t slots;        // sequences decoded together
  int64_t queue_limit;  // waiting requests beyond which submit() refuses (503)
  DecodeMode decode;
  // Positions each slot may use, prompt and reply (`--ctx`): in [2, max_seq_len] (a free slot's
  // row runs at position 1); none: the model's max_seq_len.
  std::optional<int64_t> context;
  // Prompt tokens prefilled per turn while other requests are decoding (`--prefill-tokens`; at
  // least one request a turn, however long its prompt): new arrivals then delay the running
  // streams' next token by about this many tokens' prefill, not by every waiting prompt at once.
  // With no request decoding, every free slot is filled in one turn.
  int64_t prefill_tokens = 128;
};

struct EngineRequest {
  std::vector<int32_t> prompt;        // checked: non-empty, in the tokenizer's vocabulary, fits
  std::optional<int64_t> max_tokens;  // none: until end-of-text, a stop string or a full context
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool drop_leading_space = false;    // the chat template's reply (chat_template.h)
  std::chrono::steady_clock::time_point deadline = std::chrono::steady_clock::time_point::max();
};

// What a request hears, on the engine's thread: text as it is ready, then the end once.
struct EngineSink {
  std::function<void(const std::string& text)> on_text;
  // finish_reason: "stop" or "length"; or "cancelled" / "timeout" (nothing more is sent), or
  // "error" with a message.
  std::function<void(const std::string& finish_reason, const Usage& usage, const std::string& error)> on_done;
};

// A submitted request: cancel() ends it at the engine's next turn (its sink hears "cancelled").
class RequestHandle {
 public:
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

 private:
  std::atomic<bool> cancelled_{false};
};

struct EngineStats {
  int64_t requests = 0, prompt_tokens = 0, generated_tokens = 0;
  int64_t queued = 0, busy_slots = 0, slots = 0;
  double decode_seconds = 0.0;  // time spent in prefills and steps
};

class Engine {
 public:
  // Keeps references: the model and tokenizer outlive the engine. Starts the engine thread.
  Engine(Model& model, const Tokenizer& tokenizer, const EngineOptions& options);
  ~Engine();  // drains (see drain()) and joins
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a request; throws ApiError 400 when it does not fit context() (param "prompt" or
  // "max_tokens": check_fits_context), 503 when the queue is full or the engine is draining.
  std::shared_ptr<RequestHandle> submit(EngineRequest request, EngineSink sink);
  // Refuses new requests and returns once every queued and running one has ended.
  void drain();
  EngineStats stats() const;
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const Model& model() const { return model_; }
  // Positions each slot may use (prompt and reply): the limit requests are checked against.
  int64_t context() const;
  // Memory the decoder holds (its caches, buffers and activations), in bytes.
  int64_t decoder_bytes() const;

 private:
  struct Job;
  struct Slot;
  void run();
  // Prefills the request's prompt into the slot and samples its first token.
  void admit(Slot& slot, std::unique_ptr<Job> job);
  // Samples the slot's next token from the decoder's logits row and acts on it.
  void advance(Slot& slot, int64_t row);
  // Hands text to the request's sink (the chat reply's leading space dropped).
  void emit(Slot& slot, std::string text);
  // Ends the slot's request: its held text released when it ended normally ("stop", "length"),
  // its sink told, the slot freed.
  void finish(Slot& slot, const std::string& reason, const std::string& error = "");

  Model& model_;
  const Tokenizer& tokenizer_;
  EngineOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_, idle_;
  std::deque<std::unique_ptr<Job>> queue_;
  bool draining_ = false, stopping_ = false;
  int64_t busy_ = 0;       // slots with a request
  int64_t finishing_ = 0;  // ends being told to their sinks
  EngineStats counters_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<Slot> slots_;
  std::vector<float> row_;  // one logits row, masked and sampled
  std::thread thread_;
};

}  // namespace sf::serve
