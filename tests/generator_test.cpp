// generator_test.cpp — full-recompute generation on tiny saved models (greedy output equals a
// step-by-step argmax of Model::forward computed here; end-of-text; context limit; prompt
// errors; model loading errors) and the UTF-8 streaming of token bytes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <limits>

#include "support/test_util.h"
#include "core/error.h"
#include "cpu/cpu_backend.h"
#include "data/byte_tokenizer.h"
#include "data/tokenizer_files.h"
#include "infer/generator.h"
#include "infer/utf8_stream.h"
#include "model/model_io.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

using test::error_of;

fs::path temp_dir(const std::string& name) { return test::fresh_temp_dir("generator_" + name); }

// Byte tokenizer (257 ids) over a model vocabulary of 320: ids 257..319 are padding, as when
// GPT-2's 50257 ids are rounded up to 50304.
constexpr int64_t kModelVocab = 320;
constexpr int64_t kContext = 24;

ModelConfig small_config(int64_t stacks, int64_t window = 0) {
  ModelConfig c;
  c.vocab_size = kModelVocab;
  c.d_model = 16;
  c.n_heads = 2;
  c.ffn_hidden = 24;
  c.max_seq_len = kContext;
  c.n_stacks = stacks;
  c.layers_per_stack = 2;
  c.cross_window = window;
  c.seed = 5;
  c.validate("test config");
  return c;
}

// Saves a randomly initialised model (strong random weights: far from uniform logits) with the
// byte tokenizer's tokenizer.json, as a run folder of `stagformer train` holds them.
fs::path save_model(const std::string& name, const ModelConfig& config, uint64_t seed) {
  CpuBackend backend;
  Model model(config, backend, DType::f32);
  Rng rng(seed);
  test::randomize_parameters(model, rng);
  const fs::path dir = temp_dir(name);
  model_save(model, dir.string());
  tokenizer_spec_save(tokenizer_spec_of(ByteTokenizer()), (dir / "tokenizer.json").string());
  return dir;
}

// The reference: greedy decoding by hand, one Model::forward over the whole context per step,
// argmax over the ids the tokenizer can print (the generator masks padding ids). Stops at
// end-of-text unless `skip_eot`, where end-of-text is excluded from the argmax instead.
struct Reference {
  std::vector<int32_t> tokens;
  bool hit_eot = false;
};
Reference greedy_reference(Model& model, std::vector<int32_t> context, int64_t n, int32_t eot,
                           int32_t printable, bool skip_eot = false) {
  Reference ref;
  while (static_cast<int64_t>(ref.tokens.size()) < n &&
         static_cast<int64_t>(context.size()) <= model.config().max_seq_len) {
    const int64_t T = static_cast<int64_t>(context.size());
    Tensor tokens = Tensor::zeros({1, T}, DType::i32);
    std::copy(context.begin(), context.end(), tokens.data<int32_t>());
    model.forward(tokens);
    const float* last = model.logits().data<float>() + (T - 1) * model.config().vocab_size;
    int32_t best = -1;
    for (int32_t id = 0; id < printable; ++id) {
      if (skip_eot && id == eot) continue;
      if (best < 0 || last[id] > last[best]) best = id;
    }
    if (best == eot) {
      ref.hit_eot = true;
      break;
    }
    ref.tokens.push_back(best);
    context.push_back(best);
  }
  return ref;
}

// A byte tokenizer whose end-of-text is another id, so a test can choose which token ends a
// generation.
class RelabelledEotTokenizer final : public Tokenizer {
 public:
  explicit RelabelledEotTokenizer(int32_t eot) : eot_(eot) {}
  std::vector<int32_t> encode(std::string_view text) const override { return bytes_.encode(text); }
  std::string decode_token(int32_t id) const override { return bytes_.decode_token(id); }
  int32_t vocab_size() const override { return bytes_.vocab_size(); }
  int32_t eot_id() const override { return eot_; }
  std::string name() const override { return "byte-relabelled"; }

 private:
  ByteTokenizer bytes_;
  int32_t eot_;
};

const SamplingOptions kGreedy{.temperature = 0.0, .top_k = 40, .top_p = 0.95, .seed = 1};

TEST(Generator, GreedyEqualsStepByStepArgmaxOfForward) {
  const std::vector<std::pair<std::string, ModelConfig>> variants{
      {"baseline", small_config(1)}, {"stag2", small_config(2)}, {"stag3_w2", small_config(3, 2)}};
  for (const auto& [name, config] : variants) {
    const fs::path dir = save_model("greedy_" + name, config, 11);
    CpuBackend backend;
    LoadedModel loaded = load_model_for_inference(dir.string(), backend);
    EXPECT_EQ(loaded.tokenizer->name(), "byte");
    EXPECT_EQ(loaded.tokenizer_file, (dir / "tokenizer.json").string());

    // The reference runs on its own copy of the model, loaded independently.
    Model reference_model(model_load_config(dir.string()), backend, DType::f32);
    model_load_weights(reference_model, model_files(dir.string()).weights);

    const std::vector<int32_t> prompt = prompt_encode(*loaded.tokenizer, "Hi, stag");
    ASSERT_EQ(prompt.size(), 8u);
    const Reference ref =
        greedy_reference(reference_model, prompt, 12, ByteTokenizer::kEndOfTextId, 257);

    Generator generator(*loaded.model, *loaded.tokenizer);
    // Every decoder (the incremental ones and the full recompute) gives the greedy reference.
    for (const std::optional<DecodeMode> decode :
         {std::optional<DecodeMode>(DecodeMode::sequential), std::optional<DecodeMode>()}) {
      Sampler s(kGreedy);
      GenerationOptions o;
      o.max_new_tokens = 12;
      o.decode = decode;
      EXPECT_EQ(generator.generate(prompt, o, s).tokens, ref.tokens)
          << name << " " << (decode ? to_string(*decode) : "full");
    }
    Sampler sampler(kGreedy);
    std::vector<int32_t> streamed;
    const GenerationResult r = generator.generate(  // the default: staggered
        prompt, {.max_new_tokens = 12}, sampler, [&](int32_t id) { streamed.push_back(id); });
    EXPECT_EQ(r.tokens, ref.tokens) << name;
    EXPECT_EQ(streamed, r.tokens) << "the callback sees every token, in order";
    EXPECT_EQ(r.stop, ref.hit_eot ? StopReason::end_of_text : StopReason::length);
    EXPECT_GE(r.seconds, r.first_token_seconds);
    EXPECT_GT(r.first_token_seconds, 0.0);
    // Random weights: the greedy output is not a constant token (the test could not fail).
    if (r.tokens.size() >= 4) {
      EXPECT_FALSE(std::all_of(r.tokens.begin(), r.tokens.end(),
                               [&](int32_t id) { return id == r.tokens[0]; }));
    }
    fs::remove_all(dir);
  }
}

TEST(Generator, StopsAtEndOfTextUnlessIgnored) {
  const ModelConfig config = small_config(2);
  const fs::path dir = save_model("eot", config, 13);
  CpuBackend backend;
  LoadedModel loaded = load_model_for_inference(dir.string(), backend);
  const std::vector<int32_t> prompt{'a', 'b', 'c'};
  const Reference plain = greedy_reference(*loaded.model, prompt, 8, -1, 257);
  ASSERT_EQ(plain.tokens.size(), 8u);
  // Make the 4th greedy token the end-of-text id (if it did not appear before).
  const int32_t eot = plain.tokens[3];
  const auto first = std::find(plain.tokens.begin(), plain.tokens.end(), eot) - plain.tokens.begin();
  RelabelledEotTokenizer tokenizer(eot);
  Generator generator(*loaded.model, tokenizer);
  Sampler sampler(kGreedy);
  const GenerationResult r = generator.generate(prompt, {.max_new_tokens = 8}, sampler);
  EXPECT_EQ(r.stop, StopReason::end_of_text);
  EXPECT_EQ(r.tokens, std::vector<int32_t>(plain.tokens.begin(), plain.tokens.begin() + first));

  // ignore_eos: exactly n tokens, end-of-text never drawn, otherwise still the argmax.
  const GenerationResult all =
      generator.generate(prompt, {.max_new_tokens = 8, .ignore_eos = true}, sampler);
  EXPECT_EQ(all.stop, StopReason::length);
  ASSERT_EQ(all.tokens.size(), 8u);
  EXPECT_EQ(std::count(all.tokens.begin(), all.tokens.end(), eot), 0);
  EXPECT_EQ(all.tokens, greedy_reference(*loaded.model, prompt, 8, eot, 257, true).tokens);
  fs::remove_all(dir);
}

TEST(Generator, ContextLimitAndLengths) {
  const fs::path dir = save_model("context", small_config(2, 3), 17);
  CpuBackend backend;
  LoadedModel loaded = load_model_for_inference(dir.string(), backend);
  Generator generator(*loaded.model, *loaded.tokenizer);
  Sampler sampler({.temperature = 1.0, .top_k = 0, .top_p = 1.0, .seed = 3});
  std::vector<int32_t> prompt(kContext - 4);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>('a' + i % 26);
  // Unlimited: the context fills up; the last token is predicted from a full context, so
  // max_seq_len - prompt + 1 tokens come out.
  GenerationResult r = generator.generate(prompt, {.max_new_tokens = -1, .ignore_eos = true}, sampler);
  EXPECT_EQ(r.stop, StopReason::context_full);
  EXPECT_EQ(r.tokens.size(), 5u);
  // Asking for more than fits stops at the same place.
  r = generator.generate(prompt, {.max_new_tokens = 100, .ignore_eos = true}, sampler);
  EXPECT_EQ(r.stop, StopReason::context_full);
  EXPECT_EQ(r.tokens.size(), 5u);
  r = generator.generate(prompt, {.max_new_tokens = 3, .ignore_eos = true}, sampler);
  EXPECT_EQ(r.stop, StopReason::length);
  EXPECT_EQ(r.tokens.size(), 3u);
  r = generator.generate(prompt, {.max_new_tokens = 0}, sampler);
  EXPECT_TRUE(r.tokens.empty());
  // A prompt of exactly max_seq_len tokens still yields one token.
  prompt.resize(kContext, 'z');
  r = generator.generate(prompt, {.max_new_tokens = 10, .ignore_eos = true}, sampler);
  EXPECT_EQ(r.tokens.size(), 1u);
  EXPECT_EQ(r.stop, StopReason::context_full);
  fs::remove_all(dir);
}

TEST(Generator, SamplingIsDeterministicAndNeverDrawsPaddingIds) {
  const fs::path dir = save_model("padding", small_config(2), 19);
  CpuBackend backend;
  LoadedModel loaded = load_model_for_inference(dir.string(), backend);
  Generator generator(*loaded.model, *loaded.tokenizer);
  auto run = [&](uint64_t seed) {
    // A hot, unfiltered distribution: without the mask the 63 padding ids would be drawn often.
    Sampler sampler({.temperature = 3.0, .top_k = 0, .top_p = 1.0, .seed = seed});
    return generator.generate({'x'}, {.max_new_tokens = 20, .ignore_eos = true}, sampler).tokens;
  };
  const std::vector<int32_t> a = run(7);
  ASSERT_EQ(a.size(), 20u);
  EXPECT_EQ(a, run(7));
  EXPECT_NE(a, run(8));
  for (uint64_t seed = 1; seed <= 5; ++seed)
    for (int32_t id : run(seed)) {
      EXPECT_GE(id, 0);
      EXPECT_LT(id, 256) << "padding ids and (ignored) end-of-text are masked";
    }
  fs::remove_all(dir);
}

TEST(Generator, PromptErrors) {
  const fs::path dir = save_model("errors", small_config(1), 23);
  CpuBackend backend;
  LoadedModel loaded = load_model_for_inference(dir.string(), backend);
  Generator generator(*loaded.model, *loaded.tokenizer);
  Sampler sampler(kGreedy);
  auto generate = [&](const std::vector<int32_t>& prompt) {
    return error_of([&] { generator.generate(prompt, {.max_new_tokens = 2}, sampler); });
  };
  EXPECT_NE(generate({}).find("the prompt is empty"), std::string::npos);
  EXPECT_NE(generate(std::vector<int32_t>(kContext + 1, 'q'))
                .find("the prompt has 25 tokens but the model's context is 24"),
            std::string::npos);
  EXPECT_NE(generate({'a', 320}).find("prompt token 320 (position 1) is outside the model's "
                                      "vocabulary [0, 320)"),
            std::string::npos);
  EXPECT_NE(generate({-1}).find("outside the model's vocabulary"), std::string::npos);
  EXPECT_NE(generate({'a', 'b', 300}).find("padding id"), std::string::npos);
  EXPECT_EQ(generate({256, 'a'}), "") << "end-of-text is a valid prompt token";

  // Prompt text: empty text starts after end-of-text; "<|endoftext|>" is the special id.
  EXPECT_EQ(prompt_encode(*loaded.tokenizer, ""), std::vector<int32_t>{256});
  EXPECT_EQ(prompt_encode(*loaded.tokenizer, "a<|endoftext|>b"),
            (std::vector<int32_t>{'a', 256, 'b'}));
  fs::remove_all(dir);
}

TEST(Generator, LoadingErrors) {
  const fs::path dir = save_model("loading", small_config(1), 29);
  CpuBackend backend;
  // The .safetensors file form of MODEL finds the tokenizer.json beside it.
  LoadedModel by_file = load_model_for_inference((dir / "model.safetensors").string(), backend);
  EXPECT_EQ(by_file.tokenizer->vocab_size(), 257);

  fs::remove(dir / "tokenizer.json");
  const std::string missing = error_of([&] { load_model_for_inference(dir.string(), backend); });
  EXPECT_NE(missing.find("tokenizer.json"), std::string::npos) << missing;
  EXPECT_NE(missing.find("--tokenizer"), std::string::npos) << missing;
  // A kind given explicitly needs no file.
  EXPECT_EQ(load_model_for_inference(dir.string(), backend, "byte").tokenizer->name(), "byte");
  fs::remove_all(dir);

  // A tokenizer with more ids than the model: 257 byte ids vs vocab_size 200.
  ModelConfig small = small_config(1);
  small.vocab_size = 200;
  const fs::path dir2 = save_model("small_vocab", small, 31);
  const std::string too_many = error_of([&] { load_model_for_inference(dir2.string(), backend); });
  EXPECT_NE(too_many.find("has 257 ids but the model's vocab_size is 200"), std::string::npos)
      << too_many;
  fs::remove_all(dir2);

  EXPECT_NE(error_of([&] { load_model_for_inference("/nonexistent/model", backend); })
                .find("/nonexistent/model"),
            std::string::npos);
}

// ---- UTF-8 streaming ------------------------------------------------------------------------

bool is_valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto b = static_cast<uint8_t>(s[i]);
    size_t n = b < 0x80 ? 1 : (b >= 0xC2 && b <= 0xDF) ? 2 : (b >= 0xE0 && b <= 0xEF) ? 3
                            : (b >= 0xF0 && b <= 0xF4) ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<uint8_t>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

const std::string kMultilingual = "héllo wörld — €5, 中文字符, emoji 😀👍🏽 and ASCII.";

TEST(Utf8Stream, SplitCharactersAreHeldUntilComplete) {
  Utf8Stream s;
  EXPECT_EQ(s.push("ab\xE2\x82"), "ab");  // € = E2 82 AC, cut after two bytes
  EXPECT_EQ(s.pending(), 2u);
  EXPECT_EQ(s.push("\xAC"), "\xE2\x82\xAC");
  EXPECT_EQ(s.push("\xF0"), "");  // 😀 = F0 9F 98 80, one byte at a time
  EXPECT_EQ(s.push("\x9F"), "");
  EXPECT_EQ(s.push("\x98"), "");
  EXPECT_EQ(s.push("\x80!"), "\xF0\x9F\x98\x80!");
  EXPECT_EQ(s.pending(), 0u);
  // An incomplete sequence at the end comes out at flush.
  EXPECT_EQ(s.push("x\xE4\xB8"), "x");
  EXPECT_EQ(s.flush(), "\xE4\xB8");
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(s.flush(), "");
}

TEST(Utf8Stream, EverySplitReassemblesAndEachChunkIsValid) {
  // Every pair of cut points over a multilingual text: chunks are valid UTF-8 and concatenate to
  // the input.
  const std::string& text = kMultilingual;
  for (size_t a = 0; a <= text.size(); ++a)
    for (size_t b = a; b <= text.size(); b += 3) {
      Utf8Stream s;
      std::string out;
      for (const std::string_view piece : {std::string_view(text).substr(0, a),
                                           std::string_view(text).substr(a, b - a),
                                           std::string_view(text).substr(b)}) {
        const std::string chunk = s.push(piece);
        ASSERT_TRUE(is_valid_utf8(chunk)) << "cut at " << a << ", " << b;
        out += chunk;
      }
      out += s.flush();
      ASSERT_EQ(out, text);
    }
}

TEST(Utf8Stream, TokenBytesOfATokenizerStreamCleanly) {
  // The byte tokenizer splits every multi-byte character over several tokens; GPT-2 BPE splits
  // some (emoji), when its ranks file is available.
  std::vector<std::unique_ptr<Tokenizer>> tokenizers;
  tokenizers.push_back(std::make_unique<ByteTokenizer>());
  try {
    tokenizers.push_back(make_tokenizer("gpt2", default_ranks_path()));
  } catch (const Error&) {
    // no ranks file on this machine: the byte tokenizer covers the property
  }
  for (const auto& tokenizer : tokenizers) {
    Utf8Stream s;
    std::string out;
    int held = 0;
    for (int32_t id : tokenizer->encode(kMultilingual)) {
      const std::string chunk = s.push(tokenizer->decode_token(id));
      EXPECT_TRUE(is_valid_utf8(chunk)) << tokenizer->name();
      held += s.pending() > 0;
      out += chunk;
    }
    out += s.flush();
    EXPECT_EQ(out, kMultilingual) << tokenizer->name();
    EXPECT_GT(held, 0) << tokenizer->name() << ": some token must end inside a character";
  }
}

TEST(Utf8Stream, BytesThatCanNeverBeValidPassThrough) {
  Utf8Stream s;
  EXPECT_EQ(s.push("\x80"), "\x80");            // stray continuation byte
  EXPECT_EQ(s.push("\xFF"), "\xFF");            // never valid
  EXPECT_EQ(s.push("\xC0"), "\xC0");            // overlong lead
  EXPECT_EQ(s.push("\xE0\x80"), "\xE0\x80");    // E0 must be followed by A0..BF
  EXPECT_EQ(s.push("\xED\xA0"), "\xED\xA0");    // a UTF-16 surrogate
  EXPECT_EQ(s.push("\xF4\x90"), "\xF4\x90");    // beyond U+10FFFF
  EXPECT_EQ(s.push("\xE2" "A"), "\xE2" "A");    // lead byte followed by ASCII
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(utf8_incomplete_tail("abc\xF0\x9F"), 2u);
  EXPECT_EQ(utf8_incomplete_tail("abc"), 0u);
  EXPECT_EQ(utf8_incomplete_tail(""), 0u);
}

}  // namespace
}  // namespace sf
