// cuda_serve_test.cpp — the serving engine (src/serve/engine.h) on the CUDA decoder: requests
// decoded together in a few slots, free slots sitting steps out (Decoder::kIdle), each get
// exactly the text the GPU's own Generator gives them alone, with the recorded step (CUDA graph)
// the engine replays, in the staggered and the sequential schedule. The CPU version of these
// checks is tests/serve_engine_test.cpp.
// Label gpu; skips without a CUDA device.
#include <gtest/gtest.h>

#include <chrono>
#include <future>
#include <memory>

#include "cuda/cuda_backend.h"
#include "data/byte_tokenizer.h"
#include "infer/generator.h"
#include "serve/engine.h"
#include "support/tiny_models.h"

namespace sf::serve {
namespace {

struct Collector {
  std::string text, finish;
  Usage usage;
  std::promise<void> done;
  EngineSink sink() {
    return EngineSink{[this](const std::string& piece) { text += piece; },
                      [this](const std::string& f, const Usage& u, const std::string&) {
                        finish = f;
                        usage = u;
                        done.set_value();
                      }};
  }
  void wait() {
    EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(120)), std::future_status::ready);
  }
};

// BF16 working weights, as `stagformer serve --device cuda` runs a model.
TEST(CudaServe, RequestsDecodedTogetherGetWhatEachGetsAloneOnTheGpu) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);
  const ModelConfig config = test::byte_training_config(2);
  Model model(config, *gpu, DType::f32, DType::bf16);
  model.initialize();
  ByteTokenizer tokenizer;
  const std::vector<std::string> prompts = {"Call me", "It was", "A", "Whale ahoy", "The sea was calm", "x"};
  const std::vector<int64_t> limits = {12, 5, 20, 9, 3, 15};
  const auto request = [&](size_t i) {
    EngineRequest r;
    r.prompt = prompt_encode(tokenizer, prompts[i]);
    r.max_tokens = limits[i];
    r.sampling.temperature = 0.0;
    return r;
  };
  std::vector<std::unique_ptr<Collector>> replies;
  for (const DecodeMode mode : {DecodeMode::staggered, DecodeMode::sequential}) {
    replies.clear();
    {
      Engine engine(model, tokenizer, EngineOptions{2, 64, mode});
      for (size_t i = 0; i < prompts.size(); ++i) {
        replies.push_back(std::make_unique<Collector>());
        engine.submit(request(i), replies.back()->sink());
      }
      for (auto& r : replies) r->wait();
      EXPECT_EQ(engine.stats().requests, 6);
    }
    int64_t generated = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      Generator generator(model, tokenizer);
      Sampler sampler(SamplingOptions{0.0, 40, 0.95, 0});
      GenerationOptions options;
      options.max_new_tokens = limits[i];
      const GenerationResult alone = generator.generate(prompt_encode(tokenizer, prompts[i]), options, sampler);
      EXPECT_EQ(replies[i]->text, tokenizer.decode(alone.tokens)) << "request " << i;
      EXPECT_EQ(replies[i]->finish, alone.stop == StopReason::end_of_text ? "stop" : "length");
      generated += replies[i]->usage.completion_tokens;
    }
    EXPECT_GE(generated, 40) << "the replies are too short to show anything";
  }
}

}  // namespace
}  // namespace sf::serve
