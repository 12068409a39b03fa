// serve_engine_test.cpp — the serving engine (src/serve/engine.h): requests decoded together in
// a few slots (continuous batching) give each exactly what it gets alone; the queue's limit, a
// cancelled request, stop strings, max_tokens and the context's end, draining, and a context
// shorter than the model's (--ctx).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

#include "core/error.h"
#include "cpu/cpu_backend.h"
#include "data/byte_tokenizer.h"
#include "infer/generator.h"
#include "serve/api_error.h"
#include "serve/engine.h"
#include "support/tiny_models.h"

namespace sf::serve {
namespace {

struct Reply {
  std::string text;
  std::string finish;
  Usage usage;
  std::string error;
  int pieces = 0;
};

// A sink that collects a reply and fulfils a promise at its end.
struct Collector {
  Reply reply;
  std::promise<void> done;
  EngineSink sink() {
    return EngineSink{[this](const std::string& text) {
                        reply.text += text;
                        ++reply.pieces;
                      },
                      [this](const std::string& finish, const Usage& usage, const std::string& error) {
                        reply.finish = finish;
                        reply.usage = usage;
                        reply.error = error;
                        done.set_value();
                      }};
  }
  const Reply& wait() {
    EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    return reply;
  }
};

class ServeEngine : public ::testing::Test {
 protected:
  ServeEngine() : config_(test::byte_training_config(2)), model_(config_, backend_, DType::f32) {
    Rng rng(5);
    test::randomize_parameters(model_, rng);
  }
  EngineRequest greedy(const std::string& prompt, std::optional<int64_t> max_tokens) {
    EngineRequest r;
    r.prompt = prompt_encode(tokenizer_, prompt);
    r.max_tokens = max_tokens;
    r.sampling.temperature = 0.0;
    return r;
  }
  // What Generator produces for the prompt alone (greedy, the incremental decoder).
  std::pair<std::string, StopReason> alone(const std::string& prompt, int64_t max_tokens) {
    Generator generator(model_, tokenizer_);
    Sampler sampler(SamplingOptions{0.0, 40, 0.95, 0});
    GenerationOptions options;
    options.max_new_tokens = max_tokens;
    const GenerationResult r = generator.generate(prompt_encode(tokenizer_, prompt), options, sampler);
    return {tokenizer_.decode(r.tokens), r.stop};
  }

  ModelConfig config_;
  CpuBackend backend_;
  Model model_;
  ByteTokenizer tokenizer_;
};

TEST_F(ServeEngine, RequestsDecodedTogetherGetWhatEachGetsAlone) {
  const std::vector<std::string> prompts = {"Call me", "It was", "A", "Whale ahoy", "The sea was calm", "x"};
  const std::vector<int64_t> limits = {12, 5, 20, 9, 3, 15};
  std::vector<std::unique_ptr<Collector>> replies;
  {
    Engine engine(model_, tokenizer_, EngineOptions{2, 64, DecodeMode::staggered});
    for (size_t i = 0; i < prompts.size(); ++i) {
      replies.push_back(std::make_unique<Collector>());
      engine.submit(greedy(prompts[i], limits[i]), replies.back()->sink());
    }
    for (auto& r : replies) r->wait();
    const EngineStats stats = engine.stats();
    EXPECT_EQ(stats.requests, 6);
    EXPECT_EQ(stats.busy_slots, 0);
    EXPECT_EQ(stats.queued, 0);
  }
  int64_t generated = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto [text, stop] = alone(prompts[i], limits[i]);
    generated += replies[i]->reply.usage.completion_tokens;
    const Reply& r = replies[i]->reply;
    EXPECT_EQ(r.text, text) << "request " << i;
    EXPECT_EQ(r.finish, stop == StopReason::end_of_text ? "stop" : "length") << "request " << i;
    EXPECT_EQ(r.usage.prompt_tokens, static_cast<int64_t>(prompt_encode(tokenizer_, prompts[i]).size()));
    EXPECT_LE(r.usage.completion_tokens, limits[i]);
  }
  EXPECT_GE(generated, 40) << "the replies are too short to show anything";
}

TEST_F(ServeEngine, StopStringsMaxTokensAndTheEndOfTheContext) {
  // The reply alone, then the same request with a stop string taken from its middle.
  const auto [text, stop] = alone("Call me", 20);
  ASSERT_GE(text.size(), 6u) << "the tiny model ended too early for this test";
  const std::string marker = text.substr(3, 2);
  Engine engine(model_, tokenizer_, EngineOptions{2, 8, DecodeMode::staggered});
  Collector stopped;
  EngineRequest r = greedy("Call me", 20);
  r.stop = {marker};
  engine.submit(r, stopped.sink());
  EXPECT_EQ(stopped.wait().text, text.substr(0, text.find(marker)));
  EXPECT_EQ(stopped.reply.finish, "stop");
  // No limit: the context (32) ends it, the last token predicted from a full context.
  Collector full;
  engine.submit(greedy("0123456789", std::nullopt), full.sink());
  const Reply& f = full.wait();
  if (f.finish == "length") EXPECT_EQ(f.usage.completion_tokens, config_.max_seq_len - 10 + 1);
  else EXPECT_EQ(f.finish, "stop");  // (the model drew end-of-text first)
}

TEST_F(ServeEngine, AFullQueueIsRefusedAndACancelledRequestFreesItsSlot) {
  Engine engine(model_, tokenizer_, EngineOptions{1, 1, DecodeMode::staggered});
  // Request A holds the only slot: its first piece of text blocks the engine until released.
  std::mutex m;
  std::condition_variable cv;
  bool release = false, started = false;
  std::promise<std::string> a_done;
  EngineSink blocking{[&](const std::string&) {
                        std::unique_lock lock(m);
                        started = true;
                        cv.notify_all();
                        cv.wait(lock, [&] { return release; });
                      },
                      [&](const std::string& finish, const Usage&, const std::string&) { a_done.set_value(finish); }};
  std::shared_ptr<RequestHandle> a = engine.submit(greedy("Call me", std::nullopt), blocking);
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return started; });
  }
  Collector b;
  engine.submit(greedy("It was", 4), b.sink());  // waits in the queue (limit 1)
  try {
    Collector c;
    engine.submit(greedy("A", 4), c.sink());
    ADD_FAILURE() << "a request beyond the queue's limit was taken";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_NE(std::string(e.what()).find("busy"), std::string::npos) << e.what();
  }
  a->cancel();  // A's client went away: its slot goes to B
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  auto future = a_done.get_future();
  ASSERT_EQ(future.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  EXPECT_EQ(future.get(), "cancelled");
  EXPECT_EQ(b.wait().text, alone("It was", 4).first);
  engine.drain();
  try {
    Collector d;
    engine.submit(greedy("A", 4), d.sink());
    ADD_FAILURE() << "a request was taken while draining";
  } catch (const ApiError& e) {
    EXPECT_EQ(e.status(), 503);
    EXPECT_NE(std::string(e.what()).find("shutting down"), std::string::npos) << e.what();
  }
}

// While a request decodes, new arrivals are prefilled a --prefill-tokens budget per turn (at
// least one request), with a decoding step between turns; without a request decoding, one turn
// fills every free slot. Seen from the queue: when B (arriving together with C and D behind the
// running A) shows its first text, C and D still wait with a budget of one token, and none
// waits without a budget.
TEST_F(ServeEngine, ArrivalsArePrefilledABudgetPerTurnWhileOthersDecode) {
  for (const int64_t budget : {int64_t{1}, int64_t{1} << 20}) {
    EngineOptions options{4, 8, DecodeMode::staggered};
    options.prefill_tokens = budget;
    Engine engine(model_, tokenizer_, options);
    std::mutex m;
    std::condition_variable cv;
    bool release = false, started = false;
    std::promise<void> a_done;
    EngineSink blocking{[&](const std::string&) {  // A's first text holds the engine until released
                          std::unique_lock lock(m);
                          started = true;
                          cv.notify_all();
                          cv.wait(lock, [&] { return release; });
                        },
                        [&](const std::string&, const Usage&, const std::string&) { a_done.set_value(); }};
    engine.submit(greedy("Call me", 24), blocking);
    {
      std::unique_lock lock(m);
      cv.wait(lock, [&] { return started; });
    }
    int64_t queued_at_b = -1;
    std::promise<void> b_done;
    EngineSink b{[&](const std::string&) {
                   if (queued_at_b < 0) queued_at_b = engine.stats().queued;
                 },
                 [&](const std::string&, const Usage&, const std::string&) { b_done.set_value(); }};
    engine.submit(greedy("It was", 8), b);
    Collector c, d;
    engine.submit(greedy("A", 4), c.sink());
    engine.submit(greedy("B", 4), d.sink());
    {
      std::lock_guard lock(m);
      release = true;
    }
    cv.notify_all();
    ASSERT_EQ(b_done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    c.wait();
    d.wait();
    ASSERT_EQ(a_done.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
    if (budget == 1) EXPECT_GE(queued_at_b, 1) << "C and D were prefilled in B's turn despite the budget";
    else EXPECT_EQ(queued_at_b, 0) << "without a budget, one turn takes every waiting request";
  }
  const auto refused = [&] {
    EngineOptions options{1, 1, DecodeMode::staggered};
    options.prefill_tokens = 0;
    Engine engine(model_, tokenizer_, options);
  };
  EXPECT_THROW(refused(), Error);
}

TEST_F(ServeEngine, ARequestPastItsDeadlineEndsWithTimeout) {
  Engine engine(model_, tokenizer_, EngineOptions{1, 4, DecodeMode::staggered});
  Collector late;
  EngineRequest r = greedy("Call me", std::nullopt);
  r.deadline = std::chrono::steady_clock::now();  // already past
  engine.submit(r, late.sink());
  EXPECT_EQ(late.wait().finish, "timeout");
  EXPECT_TRUE(late.reply.text.empty());
}

// --ctx: slots of 16 positions on a model of 32. A request within them is served exactly as
// alone (the smaller caches change nothing), a reply without max_tokens ends where the 16 are
// used up, and one that does not fit is refused before it is queued; the decoder holds less.
TEST_F(ServeEngine, AShorterContextServesWhatFitsAndRefusesTheRest) {
  ASSERT_EQ(config_.max_seq_len, 32);
  Engine engine(model_, tokenizer_, EngineOptions{2, 8, DecodeMode::staggered, 16});
  EXPECT_EQ(engine.context(), 16);
  {
    Engine full(model_, tokenizer_, EngineOptions{2, 8, DecodeMode::staggered});
    EXPECT_EQ(full.context(), 32);
    EXPECT_LT(engine.decoder_bytes(), full.decoder_bytes());
  }
  const auto refused = [&](const EngineRequest& r, const std::string& param, const std::string& words) {
    try {
      Collector c;
      engine.submit(r, c.sink());
      ADD_FAILURE() << "a request beyond the context was taken (" << words << ")";
    } catch (const ApiError& e) {
      EXPECT_EQ(e.status(), 400);
      EXPECT_EQ(e.param(), param);
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  refused(greedy("0123456789abcdefg", 1), "prompt", "the prompt has 17 tokens but the server's context is 16");
  // 10 prompt tokens leave room for 16 - 10 + 1 = 7 (the last one predicted from a full context).
  refused(greedy("0123456789", 8), "max_tokens", "leaves room for 7");
  const std::string prompt = "0123456789";
  Collector within, unlimited;
  engine.submit(greedy(prompt, 7), within.sink());
  engine.submit(greedy(prompt, std::nullopt), unlimited.sink());
  const auto [text, stop] = alone(prompt, 7);
  EXPECT_EQ(within.wait().text, text);
  EXPECT_EQ(within.reply.finish, stop == StopReason::end_of_text ? "stop" : "length");
  const Reply& o = unlimited.wait();
  EXPECT_EQ(o.text, text);  // (greedy: the same tokens, up to where the context ends)
  if (o.finish == "length") EXPECT_EQ(o.usage.completion_tokens, 7);
  else EXPECT_EQ(o.finish, "stop");
}

TEST_F(ServeEngine, AContextBeyondTheModelsIsRefused) {
  for (const int64_t ctx : {33, 1000, 1, 0, -5}) {
    try {
      Engine engine(model_, tokenizer_, EngineOptions{2, 8, DecodeMode::staggered, ctx});
      ADD_FAILURE() << "--ctx " << ctx << " was taken for a model of max_seq_len 32";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(fmt::format("--ctx {}", ctx)), std::string::npos) << what;
      EXPECT_NE(what.find("max_seq_len 32"), std::string::npos) << what;
    }
  }
  Engine largest(model_, tokenizer_, EngineOptions{2, 8, DecodeMode::staggered, 32});
  EXPECT_EQ(largest.context(), 32);
}

}  // namespace
}  // namespace sf::serve
