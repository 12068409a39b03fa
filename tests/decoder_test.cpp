// decoder_test.cpp — incremental decoding reproduces the teacher-forced forward, for every
// variant and schedule; concurrent and sequential schedules agree bit for bit; recurrent
// decoding is pinned to its definition.
//
// Tolerance (fp32): logits of prefill + token-by-token decoding vs the full forward, max |diff|
// < 2e-5 relative to the logits' scale (support/gradcheck.h's relative error with a 1e-3
// floor). The two computations sum in different orders (blocked BLAS vs. fixed-order dot
// products, a softmax over a cache vs. a masked row), so they agree to a few fp32 ulps per
// operation; measured ~1e-6. In fp64 the same comparison must hold to 1e-12.
#include <gtest/gtest.h>

#include <cstring>

#include "cpu/cpu_backend.h"
#include "infer/decoder.h"
#include "support/gradcheck.h"
#include "support/test_util.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

struct Case {
  std::string name;
  ModelConfig config;
};

std::vector<Case> decode_cases() {
  std::vector<Case> cases;
  for (const test::Variant& v : test::tiny_variants()) {
    ModelConfig c = v.config;
    c.max_seq_len = 12;
    c.validate(v.name);
    cases.push_back({v.name, c});
  }
  ModelConfig w3 = cases[1].config;  // separate p=2 with a window of 3 and a longer context
  w3.cross_window = 3;
  cases.push_back({"window3", w3});
  return cases;
}

// Logits rows [T, V] of the forward over `ids` (batch 1), as F64.
Tensor forward_logits(Model& model, const std::vector<int32_t>& ids) {
  Tensor tokens = Tensor::zeros({1, static_cast<int64_t>(ids.size())}, DType::i32);
  std::copy(ids.begin(), ids.end(), tokens.data<int32_t>());
  model.forward(tokens);
  return test::convert(model.logits().view({static_cast<int64_t>(ids.size()), -1}), DType::f64);
}

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class Decode : public ::testing::TestWithParam<Case> {};

// Decodes `ids` with `prompt_len` tokens of prefill and the rest step by step, for two
// sequences of different prompt lengths in one batch, and compares every prediction with the
// teacher-forced forward.
void check_against_forward(const ModelConfig& config, DType dtype, DecodeMode mode, double tolerance) {
  CpuBackend backend;
  Model model(config, backend, dtype);
  Rng rng(13);
  test::randomize_parameters(model, rng);
  const int64_t T = config.max_seq_len;
  std::vector<std::vector<int32_t>> ids(2);
  for (auto& seq : ids)
    for (int64_t t = 0; t < T; ++t) seq.push_back(static_cast<int32_t>(rng.below(config.vocab_size)));
  const std::vector<Tensor> expected = {forward_logits(model, ids[0]), forward_logits(model, ids[1])};
  for (const int64_t prompt0 : {1L, 4L}) {
    const int64_t prompt1 = prompt0 == 1 ? 5 : 1;  // different lengths in one batch
    const int64_t prompt_len[2] = {prompt0, prompt1};
    Decoder decoder(model, 2, mode);
    for (int64_t b = 0; b < 2; ++b)
      decoder.prefill(b, std::span(ids[b].data(), static_cast<size_t>(prompt_len[b])));
    const int64_t V = config.vocab_size;
    for (int64_t step = 0;; ++step) {
      for (int64_t b = 0; b < 2; ++b) {
        const int64_t position = prompt_len[b] - 1 + step;  // the logits predict position + 1
        Tensor got = decoder.logits().slice(0, b, 1);
        Tensor want = expected[b].slice(0, position, 1);
        EXPECT_LT(test::max_relative_error(got, want), tolerance)
            << to_string(mode) << " sequence " << b << " prompt " << prompt_len[b] << " position " << position;
      }
      if (prompt_len[0] + step >= T || prompt_len[1] + step >= T) break;
      const int32_t next[2] = {ids[0][prompt_len[0] + step], ids[1][prompt_len[1] + step]};
      decoder.step(next);
      (void)V;
    }
  }
}

TEST_P(Decode, StaggeredMatchesTeacherForcedForward) {
  check_against_forward(GetParam().config, DType::f32, DecodeMode::staggered, 2e-5);
}

TEST_P(Decode, SequentialMatchesTeacherForcedForwardInDoublePrecision) {
  check_against_forward(GetParam().config, DType::f64, DecodeMode::sequential, 1e-12);
}

TEST_P(Decode, ConcurrentAndSequentialSchedulesAreBitIdentical) {
  const ModelConfig& config = GetParam().config;
  CpuBackend backend;
  Model model(config, backend, DType::f32);
  Rng rng(29);
  test::randomize_parameters(model, rng);
  // The staggered decoder runs on 4 threads, the sequential one on 1.
  Decoder staggered(model, 3, DecodeMode::staggered);
  Decoder sequential(model, 3, DecodeMode::sequential);
  for (int64_t b = 0; b < 3; ++b) {
    std::vector<int32_t> prompt(static_cast<size_t>(b + 1));
    for (auto& t : prompt) t = static_cast<int32_t>(rng.below(config.vocab_size));
    test::with_threads(4, [&] { staggered.prefill(b, prompt); });
    test::with_threads(1, [&] { sequential.prefill(b, prompt); });
  }
  for (int64_t step = 0; step + 3 < config.max_seq_len; ++step) {
    int32_t tokens[3];
    for (auto& t : tokens) t = static_cast<int32_t>(rng.below(config.vocab_size));
    test::with_threads(4, [&] { staggered.step(tokens); });
    test::with_threads(1, [&] { sequential.step(tokens); });
    ASSERT_EQ(std::memcmp(staggered.logits().raw(), sequential.logits().raw(),
                          sequential.logits().nbytes()),
              0)
        << "step " << step;
  }
}

// Idle sequences (Decoder::kIdle, a server's free slots) change nothing for the others, and a
// sequence prefilled after idling decodes as in a fresh decoder: row by row, bit for bit, against
// decoders of batch 1. Sequence 1 idles from the start and is prefilled mid-way; sequence 2
// decodes two tokens and then idles, after which feeding it a token is refused. On the way the
// decoder steps 3, 1 and 2 sequences (Decoder::step: only those up to the last one fed).
TEST_P(Decode, IdleSequencesChangeNothingForTheOthers) {
  const ModelConfig& config = GetParam().config;
  CpuBackend backend;
  Model model(config, backend, DType::f32);
  Rng rng(31);
  test::randomize_parameters(model, rng);
  auto random_ids = [&](size_t n) {
    std::vector<int32_t> ids(n);
    for (auto& t : ids) t = static_cast<int32_t>(rng.below(config.vocab_size));
    return ids;
  };
  Decoder batch(model, 3, DecodeMode::staggered);
  Decoder alone0(model, 1, DecodeMode::staggered), alone1(model, 1, DecodeMode::staggered);
  const int64_t V = config.vocab_size;
  auto same_row = [&](const Decoder& a, int64_t row, const Decoder& b, const std::string& what) {
    EXPECT_EQ(std::memcmp(a.logits().data<float>() + row * V, b.logits().data<float>(), V * sizeof(float)), 0)
        << what;
  };
  const std::vector<int32_t> p0 = random_ids(2), p1 = random_ids(3), p2 = random_ids(1);
  batch.prefill(0, p0);
  alone0.prefill(0, p0);
  batch.prefill(2, p2);
  constexpr int32_t idle = Decoder::kIdle;
  for (int64_t step = 0; step + 3 < config.max_seq_len; ++step) {
    if (step == 3) {  // sequence 1 joins while sequence 0 decodes
      batch.prefill(1, p1);
      alone1.prefill(0, p1);
      same_row(batch, 1, alone1, "sequence 1's prefill after idle steps");
    }
    const std::vector<int32_t> t = random_ids(2);
    const int32_t tokens[3] = {t[0], step >= 3 ? t[1] : idle, step < 2 ? t[0] : idle};
    batch.step(tokens);
    // The step ran the sequences up to the last one fed (widths 3, then 1, then 2 once
    // sequence 1 has joined): leaving and joining the width changes nothing either.
    EXPECT_EQ(batch.state().width(), step < 2 ? 3 : step < 3 ? 1 : 2) << "step " << step;
    alone0.step(std::span(&tokens[0], 1));
    same_row(batch, 0, alone0, "sequence 0 at step " + std::to_string(step));
    if (step >= 3) {
      alone1.step(std::span(&tokens[1], 1));
      same_row(batch, 1, alone1, "sequence 1 at step " + std::to_string(step));
    }
  }
  EXPECT_EQ(batch.length(2), 0);
  const int32_t resume[3] = {1, 1, 1};
  try {
    batch.step(resume);
    ADD_FAILURE() << "an idle sequence was fed a token without a prefill";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sequence 2 has not been prefilled"), std::string::npos) << e.what();
  }
}

// Where steps are not recorded (the CPU), a step runs exactly the sequences up to the last one
// fed, not a power of two of them: 3 of 5 sequences run 3 rows, and a prefill beyond them
// widens the step to that sequence.
TEST(DecodeWidth, OnTheCpuAStepRunsExactlyTheSequencesUpToTheLastFed) {
  ModelConfig config = test::tiny_variants()[1].config;
  config.max_seq_len = 12;
  CpuBackend backend;
  Model model(config, backend, DType::f32);
  Rng rng(3);
  test::randomize_parameters(model, rng);
  Decoder decoder(model, 5, DecodeMode::staggered);
  const std::vector<int32_t> prompt = {1, 2};
  for (int64_t b = 0; b < 3; ++b) decoder.prefill(b, prompt);
  const int32_t idle = Decoder::kIdle;
  const int32_t three[5] = {3, 4, 5, idle, idle};
  decoder.step(three);
  EXPECT_EQ(decoder.state().width(), 3);
  decoder.prefill(4, prompt);
  EXPECT_EQ(decoder.state().width(), 5);
  const int32_t two[5] = {6, 7, idle, idle, idle};
  decoder.step(two);
  EXPECT_EQ(decoder.state().width(), 2);
}

INSTANTIATE_TEST_SUITE_P(Variants, Decode, ::testing::ValuesIn(decode_cases()),
                         [](const auto& info) { return info.param.name; });

// Recurrent decoding is the two-pass model whose memory at every generated position j >= n is
// the last stack's own output at j (instead of the previous stack's). The reference builds that
// by iterating the teacher-forced forward: each pass fixes one more position of the memory.
TEST(RecurrentDecode, MemoryAtGeneratedPositionsIsTheSinglePassOutput) {
  for (const int64_t p : {2L, 3L}) {
    ModelConfig c = test::tiny_config();
    c.n_stacks = p;
    c.weights = WeightSharing::shared;
    c.max_seq_len = 10;
    c.validate("recurrent");
    CpuBackend backend;
    Model model(c, backend, DType::f64);
    Rng rng(31);
    test::randomize_parameters(model, rng);
    const int64_t n = 3, T = c.max_seq_len, D = c.d_model;
    std::vector<int32_t> ids(static_cast<size_t>(T));
    for (auto& t : ids) t = static_cast<int32_t>(rng.below(c.vocab_size));
    Tensor tokens = Tensor::zeros({1, T}, DType::i32);
    std::copy(ids.begin(), ids.end(), tokens.data<int32_t>());

    // Fixed point: memory rows j >= n of stack p-1 come from the last stack's output.
    Tensor last_output = Tensor::zeros({T, D}, DType::f64);
    Tensor reference;
    ForwardHooks hooks;
    hooks.after_stack = [&](int64_t s, Tensor& out) {
      if (s != p - 2) return;
      std::memcpy(out.data<double>() + n * D, last_output.data<double>() + n * D,
                  sizeof(double) * (T - n) * D);
    };
    model.forward(tokens);
    std::memcpy(last_output.raw(), model.stack_output(p - 1).raw(), last_output.nbytes());
    for (int64_t iteration = 0; iteration < T - n; ++iteration) {
      model.forward(tokens, Tensor(), &hooks);
      std::memcpy(last_output.raw(), model.stack_output(p - 1).raw(), last_output.nbytes());
    }
    reference = test::convert(model.logits().view({T, -1}), DType::f64);
    const Tensor two_pass = forward_logits(model, ids);

    Decoder decoder(model, 1, DecodeMode::recurrent);
    decoder.prefill(0, std::span(ids.data(), static_cast<size_t>(n)));
    for (int64_t position = n - 1; position < T; ++position) {
      Tensor got = decoder.logits();
      EXPECT_LT(test::max_relative_error(got, reference.slice(0, position, 1)), 1e-6)
          << "p " << p << " position " << position;
      if (position <= n) {
        // Up to the first decode step the memory is still the two-pass model's.
        EXPECT_LT(test::max_relative_error(got, two_pass.slice(0, position, 1)), 1e-6);
      } else {
        EXPECT_GT(test::max_relative_error(got, two_pass.slice(0, position, 1)), 1e-4)
            << "recurrent decoding should differ from the two-pass model here";
      }
      if (position + 1 < T) {
        const int32_t next = ids[position + 1];
        decoder.step(std::span(&next, 1));
      }
    }
  }
}

TEST(DecoderErrors, ClearMessages) {
  ModelConfig c = test::tiny_config();
  c.n_stacks = 2;
  c.max_seq_len = 4;
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  model.initialize();
  EXPECT_THROW(Decoder(model, 1, DecodeMode::recurrent), Error);  // separate weights
  Decoder decoder(model, 1, DecodeMode::staggered);
  const int32_t one = 1;
  EXPECT_THROW(decoder.step(std::span(&one, 1)), Error);  // not prefilled
  const std::vector<int32_t> too_long(5, 1);
  try {
    decoder.prefill(0, too_long);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the prompt has 5 tokens but the model's context is 4"),
              std::string::npos);
  }
  const std::vector<int32_t> bad{1, 99};
  EXPECT_THROW(decoder.prefill(0, bad), Error);
  decoder.prefill(0, std::vector<int32_t>{1, 2, 3});
  const int32_t out_of_vocab = 11;
  EXPECT_THROW(decoder.step(std::span(&out_of_vocab, 1)), Error);
  decoder.step(std::span(&one, 1));
  EXPECT_THROW(decoder.step(std::span(&one, 1)), Error);  // context full
  EXPECT_THROW(decode_mode_from_string("parallel"), Error);
}

}  // namespace
}  // namespace sf
