// serve_engine_test.cpp — the serving engine (src/serve/engine.h): requests decoded together in
// a few slots (continuous batching) give each exactly what it gets alone; the queue's limit, a
// cancelled request, stop strings, max_tokens and the context's end, and draining.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>

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

TEST_F(ServeEngine, ARequestPastItsDeadlineEndsWithTimeout) {
  Engine engine(model_, tokenizer_, EngineOptions{1, 4, DecodeMode::staggered});
  Collector late;
  EngineRequest r = greedy("Call me", std::nullopt);
  r.deadline = std::chrono::steady_clock::now();  // already past
  engine.submit(r, late.sink());
  EXPECT_EQ(late.wait().finish, "timeout");
  EXPECT_TRUE(late.reply.text.empty());
}

}  // namespace
}  // namespace sf::serve
