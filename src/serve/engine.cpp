// engine.cpp — the serving engine's thread: admission, decode steps, sampling, text (engine.h).
#include "serve/engine.h"

#include <fmt/format.h>

#include <limits>
#include <random>

#include "infer/decoder.h"
#include "infer/utf8_stream.h"
#include "serve/api_error.h"
#include "serve/openai_request.h"
#include "serve/stop_strings.h"

namespace sf::serve {

using Clock = std::chrono::steady_clock;

struct Engine::Job {
  EngineRequest request;
  EngineSink sink;
  std::shared_ptr<RequestHandle> handle;
};

struct Engine::Slot {
  std::unique_ptr<Job> job;  // null: free
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<StopMatcher> stops;
  Utf8Stream utf8;
  int32_t next = 0;  // the token the next step feeds
  int64_t generated = 0;
  bool replied = false;  // some text was released
};

Engine::Engine(Model& model, const Tokenizer& tokenizer, const EngineOptions& options)
    : model_(model), tokenizer_(tokenizer), options_(options) {
  SF_CHECK(options.slots >= 1, "serve: --slots must be >= 1, got {}", options.slots);
  SF_CHECK(options.queue_limit >= 0, "serve: the queue limit must be >= 0, got {}", options.queue_limit);
  SF_CHECK(options.prefill_tokens >= 1, "serve: --prefill-tokens must be >= 1, got {}", options.prefill_tokens);
  SF_CHECK(tokenizer.vocab_size() <= model.config().vocab_size,
           "the tokenizer '{}' has {} ids but the model's vocab_size is {}: they do not belong together",
           tokenizer.name(), tokenizer.vocab_size(), model.config().vocab_size);
  const int64_t limit = model.config().max_seq_len;
  const int64_t context = options.context.value_or(limit);
  // At least 2: a free slot's row runs at position 1 (Decoder::kIdle).
  SF_CHECK(!options.context || (context >= 2 && context <= limit),
           "serve: --ctx {} is outside [2, {}]: a slot's context can be at most the model's (max_seq_len {})",
           context, limit, limit);
  SF_CHECK(limit >= 2, "serve: the model's context ({}) must hold at least 2 positions", limit);
  decoder_ = std::make_unique<Decoder>(model, options.slots, options.decode, context);
  slots_.resize(static_cast<size_t>(options.slots));
  row_.resize(static_cast<size_t>(model.config().vocab_size));
  counters_.slots = options.slots;
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() {
  drain();
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

// (The decoder is made in the constructor and its sizes never change: any thread may ask.)
int64_t Engine::context() const { return decoder_->context(); }
int64_t Engine::decoder_bytes() const { return decoder_->state().bytes(); }

std::shared_ptr<RequestHandle> Engine::submit(EngineRequest request, EngineSink sink) {
  // The HTTP layer checks this too, naming its own field; here it guards the decoder (a prompt
  // longer than the slots' context would fail only at its prefill).
  check_fits_context(static_cast<int64_t>(request.prompt.size()), request.max_tokens, context(), "prompt");
  auto job = std::make_unique<Job>();
  job->request = std::move(request);
  job->sink = std::move(sink);
  job->handle = std::make_shared<RequestHandle>();
  std::shared_ptr<RequestHandle> handle = job->handle;
  {
    std::lock_guard lock(mutex_);
    if (draining_) throw ApiError(503, "the server is shutting down", "", "server_error");
    if (static_cast<int64_t>(queue_.size()) >= options_.queue_limit)
      throw ApiError(503,
                     fmt::format("the server is busy: {} requests are waiting (the limit); try again later",
                                 queue_.size()),
                     "", "server_error");
    queue_.push_back(std::move(job));
    ++counters_.requests;
  }
  wake_.notify_all();
  return handle;
}

void Engine::drain() {
  std::unique_lock lock(mutex_);
  draining_ = true;
  idle_.wait(lock, [&] { return queue_.empty() && busy_ == 0 && finishing_ == 0; });
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s = counters_;
  s.queued = static_cast<int64_t>(queue_.size());
  s.busy_slots = busy_;
  return s;
}

void Engine::emit(Slot& slot, std::string text) {
  if (!slot.replied && slot.job->request.drop_leading_space && !text.empty() && text[0] == ' ')
    text.erase(0, 1);
  if (text.empty()) return;
  slot.replied = true;
  if (slot.job->sink.on_text) slot.job->sink.on_text(text);
}

void Engine::finish(Slot& slot, const std::string& reason, const std::string& error) {
  if (reason == "stop" || reason == "length") {
    // What is still held (an incomplete character, a possible stop-string start) is reply text.
    emit(slot, slot.stops->feed(slot.utf8.flush()));
    emit(slot, slot.stops->flush());
  }
  std::unique_ptr<Job> job = std::move(slot.job);
  const Usage usage{static_cast<int64_t>(job->request.prompt.size()), slot.generated};
  slot = Slot{};
  // The slot counts as free before the sink hears the end (stats() agree with what a client
  // saw); drain() also waits for the sink.
  {
    std::lock_guard lock(mutex_);
    --busy_;
    ++finishing_;
  }
  if (job->sink.on_done) job->sink.on_done(reason, usage, error);
  {
    std::lock_guard lock(mutex_);
    --finishing_;
  }
  idle_.notify_all();
}

void Engine::admit(Slot& slot, std::unique_ptr<Job> job) {
  const int64_t b = &slot - slots_.data();
  slot.job = std::move(job);
  const EngineRequest& r = slot.job->request;
  slot.sampler = std::make_unique<Sampler>(r.sampling);
  slot.stops = std::make_unique<StopMatcher>(r.stop);
  const auto start = Clock::now();
  decoder_->prefill(b, r.prompt);
  {
    std::lock_guard lock(mutex_);
    counters_.prompt_tokens += static_cast<int64_t>(r.prompt.size());
    counters_.decode_seconds += std::chrono::duration<double>(Clock::now() - start).count();
  }
  // Its first token now, from the prefill's logits row (a later prefill writes only its own
  // row): a request's time to first token does not wait for the other prompts of this turn.
  advance(slot, b);
}

void Engine::advance(Slot& slot, int64_t row) {
  const EngineRequest& r = slot.job->request;
  const int64_t vocab = model_.config().vocab_size;
  const Tensor& logits = decoder_->logits();
  // The row as F32 (an F64 model's logits are rounded; the server runs F32 or BF16 models), the
  // padding ids beyond the tokenizer masked: they have no text.
  if (logits.dtype() == DType::f64) {
    const double* source = logits.data<double>() + row * vocab;
    for (int64_t i = 0; i < vocab; ++i) row_[static_cast<size_t>(i)] = static_cast<float>(source[i]);
  } else {
    const float* source = logits.data<float>() + row * vocab;
    std::copy(source, source + vocab, row_.begin());
  }
  for (int64_t i = tokenizer_.vocab_size(); i < vocab; ++i)
    row_[static_cast<size_t>(i)] = -std::numeric_limits<float>::infinity();
  const int32_t token = slot.sampler->sample(row_.data(), vocab);
  if (token == tokenizer_.eot_id()) return finish(slot, "stop");
  ++slot.generated;
  {
    std::lock_guard lock(mutex_);
    ++counters_.generated_tokens;
  }
  emit(slot, slot.stops->feed(slot.utf8.push(tokenizer_.decode_token(token))));
  if (slot.stops->stopped()) return finish(slot, "stop");
  if (r.max_tokens && slot.generated >= *r.max_tokens) return finish(slot, "length");
  // The token just drawn was predicted from a full context: it cannot be fed.
  if (decoder_->length(row) >= context()) return finish(slot, "length");
  slot.next = token;
}

void Engine::run() {
  std::vector<int32_t> tokens(slots_.size(), Decoder::kIdle);
  while (true) {
    std::vector<std::pair<Slot*, std::unique_ptr<Job>>> admitted;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty() || busy_ > 0; });
      if (stopping_ && queue_.empty() && busy_ == 0) break;
      // Prefills hold up the running requests' next token: while any is decoding, a turn
      // admits prompts up to options_.prefill_tokens (at least one request).
      const int64_t budget = busy_ > 0 ? options_.prefill_tokens : std::numeric_limits<int64_t>::max();
      int64_t prompt_tokens = 0;
      for (Slot& slot : slots_) {
        if (queue_.empty()) break;
        if (slot.job) continue;
        const auto prompt = static_cast<int64_t>(queue_.front()->request.prompt.size());
        if (!admitted.empty() && prompt_tokens + prompt > budget) break;
        prompt_tokens += prompt;
        admitted.emplace_back(&slot, std::move(queue_.front()));
        queue_.pop_front();
        ++busy_;
      }
    }
    const auto now = Clock::now();
    for (auto& [slot, job] : admitted) {
      if (job->handle->cancelled() || now >= job->request.deadline) {
        slot->job = std::move(job);
        finish(*slot, slot->job->handle->cancelled() ? "cancelled" : "timeout");
        continue;
      }
      try {
        admit(*slot, std::move(job));
      } catch (const std::exception& e) {
        if (slot->job) finish(*slot, "error", e.what());  // (unless it had ended already)
      }
    }
    // Requests whose client went away or whose time is up end here; the others go on.
    for (Slot& slot : slots_)
      if (slot.job && (slot.job->handle->cancelled() || now >= slot.job->request.deadline))
        finish(slot, slot.job->handle->cancelled() ? "cancelled" : "timeout");
    try {
      bool any = false;
      for (size_t b = 0; b < slots_.size(); ++b) {
        tokens[b] = slots_[b].job ? slots_[b].next : Decoder::kIdle;
        any = any || slots_[b].job != nullptr;
      }
      if (!any) continue;
      const auto start = Clock::now();
      decoder_->step(tokens);
      {
        std::lock_guard lock(mutex_);
        counters_.decode_seconds += std::chrono::duration<double>(Clock::now() - start).count();
      }
      for (size_t b = 0; b < slots_.size(); ++b)
        if (slots_[b].job && tokens[b] != Decoder::kIdle) advance(slots_[b], static_cast<int64_t>(b));
    } catch (const std::exception& e) {
      // A failed prefill or step (a device error): every running request ends with it.
      for (Slot& slot : slots_)
        if (slot.job) finish(slot, "error", e.what());
    }
  }
}

}  // namespace sf::serve
