// cuda_decode_test.cpp — incremental decoding on the CUDA backend against the CPU decoder, for
// every variant and schedule; the recorded step (CUDA graph) against direct launches; staggered
// against sequential on the GPU.
//
// Every variant of tests/support/tiny_models.h at realistic shapes (head_dim 64, d_model 256),
// plus a window of 3, decodes two sequences of different prompt lengths (1, and 5: longer than
// windows 1-3) in one batch, prefill then 19 steps, and every prediction is compared with the
// CPU decoder's on the same weights. Tolerances (norm-wise relative error of each logits row):
//   * F32 (random weights of std 0.5, attention far from uniform): 1e-4. Both sides compute in
//     fp32; only summation orders differ (~1e-7 per operation over a few dozen operations).
//     Recurrent decoding feeds each step's output back as the next step's memory, and with these
//     strong weights the recurrence amplifies rounding step after step: the CPU decoder's own
//     fp32 logits drift from its fp64 ones by up to 8e-4 after 19 steps (measured; the
//     staggered schedule stays below 3e-5). So each prediction may differ from the CPU's by
//     max(1e-4, 4 x the CPU fp32 decoder's distance from the fp64 one at that prediction): the
//     GPU must be as close to the truth as fp32 allows, not closer than fp32 itself is.
//   * BF16 (the standard initialisation; the CPU reference reads the same bf16-rounded weights
//     in fp32): 3e-2. Every activation the GPU keeps is rounded to bf16 (relative 2^-9 = 2e-3 per
//     rounding, ~10 roundings per layer, 4 layers, partly cancelling); measured below 1e-2. A
//     wrong index, mask, slot or hand-off gives O(1) errors.
// Label gpu; skips without a CUDA device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>

#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "cuda/step_program.h"
#include "infer/decoder.h"
#include "support/device_tensors.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"
#include "train/adamw.h"

namespace sf {
namespace {

struct Case {
  std::string name;
  ModelConfig config;
  DecodeMode mode;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

std::vector<Case> decode_cases() {
  std::vector<Case> cases;
  std::vector<test::Variant> variants = test::tiny_variants();
  ModelConfig w3 = variants[1].config;
  w3.cross_window = 3;
  variants.push_back({"window3", w3});
  for (const test::Variant& v : variants) {
    ModelConfig c = test::realistic_config(v.config);
    c.max_seq_len = 24;
    c.validate(v.name);
    cases.push_back({v.name, c, DecodeMode::staggered});
    if (DecodeSchedule::unsupported(c, DecodeMode::recurrent).empty())
      cases.push_back({v.name + "_recurrent", c, DecodeMode::recurrent});
  }
  return cases;
}

// Copies every master parameter of `from` into `to`, rounded to `dtype` and back (BF16: the
// values the GPU's working copies hold, so that only activations round differently).
void copy_parameters(Model& from, Model& to, DType dtype) {
  for (Parameter& p : to.params().all()) {
    const Parameter& src = from.params().get(p.name);
    Tensor host = Tensor::zeros(src.value.shape(), DType::f32);
    from.backend().copy(host, src.value);
    to.backend().copy(p.value, test::rounded_f32(host, dtype));
  }
  to.params().invalidate_working_copies();
}

struct Decoded {
  std::vector<Tensor> logits;  // every prediction, [2, V] F32 each
};

// Prefills sequence 0 with 1 token and sequence 1 with 5, then steps until the context is full.
Decoded decode(Model& model, DecodeMode mode, bool recording = true) {
  Decoder decoder(model, 2, mode);
  decoder.set_step_recording(recording);
  Rng rng(23);
  const int64_t T = model.config().max_seq_len, V = model.config().vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(2 * T));
  for (auto& t : ids) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(V)));
  decoder.prefill(0, std::span(ids.data(), 1));
  decoder.prefill(1, std::span(ids.data() + T, 5));
  Decoded run;
  run.logits.push_back(test::convert(decoder.logits(), DType::f32));
  for (int64_t step = 0; 5 + step < T; ++step) {
    const int32_t next[2] = {ids[static_cast<size_t>(1 + step)], ids[static_cast<size_t>(T + 5 + step)]};
    decoder.step(next);
    run.logits.push_back(test::convert(decoder.logits(), DType::f32));
  }
  if (recording && model.backend().can_record()) {
    EXPECT_GT(decoder.state().replayed_steps(), 0);
  }
  return run;
}

class CudaDecode : public ::testing::TestWithParam<Case> {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
    gpu_ = make_cuda_backend(0);
  }
  // The CPU decoder's predictions and the GPU's (compute dtype `dt`) on the same weights.
  void compare(DType dt, double tolerance) {
    const Case& c = GetParam();
    Model reference(c.config, cpu_);
    Rng rng(41);
    if (dt == DType::f32) test::randomize_parameters(reference, rng);
    else reference.initialize();
    Model model(c.config, *gpu_, DType::f32, dt);
    copy_parameters(reference, model, dt);
    if (dt == DType::bf16) copy_parameters(model, reference, dt);  // the rounded values
    const Decoded want = decode(reference, c.mode), got = decode(model, c.mode);
    ASSERT_EQ(got.logits.size(), want.logits.size());
    // F32: the fp64 decoder on the same weights, for fp32's own error at each prediction.
    Decoded truth;
    if (dt == DType::f32) {
      Model exact(c.config, cpu_, DType::f64);
      for (Parameter& p : exact.params().all())
        cpu_.copy(p.value, test::convert(reference.params().get(p.name).value, DType::f64));
      truth = decode(exact, c.mode);
    }
    double worst = 0.0;
    for (size_t k = 0; k < want.logits.size(); ++k)
      for (int64_t b = 0; b < 2; ++b) {
        const double e = test::norm_relative_error(got.logits[k].slice(0, b, 1),
                                                   want.logits[k].slice(0, b, 1));
        double allowed = tolerance;
        if (dt == DType::f32)
          allowed = std::max(tolerance, 4 * test::norm_relative_error(
                                                want.logits[k].slice(0, b, 1),
                                                truth.logits[k].slice(0, b, 1)));
        worst = std::max(worst, e);
        EXPECT_LT(e, allowed) << c.name << " " << dtype_name(dt) << " prediction " << k
                              << " sequence " << b;
      }
    RecordProperty("worst_" + std::string(dtype_name(dt)), std::to_string(worst));
    std::printf("%s %s: worst relative error %.3g\n", c.name.c_str(), std::string(dtype_name(dt)).c_str(), worst);
  }
  CpuBackend cpu_;
  std::unique_ptr<Backend> gpu_;
};

TEST_P(CudaDecode, F32MatchesTheCpuDecoder) { compare(DType::f32, 1e-4); }
TEST_P(CudaDecode, Bf16MatchesTheCpuDecoder) { compare(DType::bf16, 3e-2); }

// The recorded step replays exactly what direct launches compute, and the staggered schedule
// (the stacks' products in one launch, shared weights as one product over all rows) exactly
// what the sequential one does. With SF_STEP_PROGRAM=1 the recorded step runs its products and
// attention steps as persistent programs (step_program.h), the direct one as kernels.
TEST_P(CudaDecode, RecordedAndSequentialStepsAreBitIdentical) {
  const Case& c = GetParam();
  Model model(c.config, *gpu_, DType::f32, DType::bf16);
  model.initialize();
  const int64_t programs_before = cuda::step_programs_launched();
  const Decoded recorded = decode(model, c.mode, true);
  if (cuda::step_programs_enabled()) {
    EXPECT_GT(cuda::step_programs_launched(), programs_before) << "the recorded step used no program";
  }
  const Decoded direct = decode(model, c.mode, false);
  const DecodeMode other = c.mode == DecodeMode::staggered ? DecodeMode::sequential : c.mode;
  const Decoded sequential = decode(model, other, true);
  for (size_t k = 0; k < recorded.logits.size(); ++k) {
    const Tensor& a = recorded.logits[k];
    EXPECT_EQ(std::memcmp(a.raw(), direct.logits[k].raw(), a.nbytes()), 0) << "prediction " << k;
    EXPECT_EQ(std::memcmp(a.raw(), sequential.logits[k].raw(), a.nbytes()), 0) << "prediction " << k;
  }
}

// Products of 4 MB and more stream their weights through shared memory (linear_stream.cu); with
// SF_STEP_PROGRAM=1 a recorded step runs them as instructions of a program whose blocks stream
// the tiles across the instructions' boundaries (step_program.cu). Either way the recorded step
// equals direct launches bit for bit, and the staggered schedule the sequential one. A 2x1
// StagFormer of d_model 2048 (projections of 8 MB, so every product of its layers streams) with
// a small vocabulary; the tiny models of the other tests stream nothing.
TEST(CudaDecodeStreamed, RecordedStepsEqualDirectLaunchesBitForBit) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  std::unique_ptr<Backend> gpu = make_cuda_backend(0);
  ModelConfig c;
  c.vocab_size = 512;
  c.d_model = 2048;
  c.n_heads = 32;
  c.ffn_hidden = 2048;
  c.max_seq_len = 24;
  c.n_stacks = 2;
  c.layers_per_stack = 1;
  c.validate("streamed test model");
  Model model(c, *gpu, DType::f32, DType::bf16);
  model.initialize();
  const int64_t programs_before = cuda::step_programs_launched();
  const Decoded recorded = decode(model, DecodeMode::staggered, true);
  if (cuda::step_programs_enabled()) {
    EXPECT_GT(cuda::step_programs_launched(), programs_before) << "the recorded step used no program";
  }
  const Decoded direct = decode(model, DecodeMode::staggered, false);
  const Decoded sequential = decode(model, DecodeMode::sequential, true);
  ASSERT_EQ(recorded.logits.size(), direct.logits.size());
  for (size_t k = 0; k < recorded.logits.size(); ++k) {
    const Tensor& a = recorded.logits[k];
    EXPECT_EQ(std::memcmp(a.raw(), direct.logits[k].raw(), a.nbytes()), 0) << "prediction " << k;
    EXPECT_EQ(std::memcmp(a.raw(), sequential.logits[k].raw(), a.nbytes()), 0) << "prediction " << k;
  }
}

// A step of fewer sequences than the decoder holds (Decoder::step runs those up to the last one
// fed: a width, with a recording of its own) computes what a decoder of one sequence computes,
// bit for bit, while sequences leave and join: sequence 1 decodes two tokens and leaves (width
// 2, then 1), a new prompt joins in its slot at step 3 (width 2 again). Two sequences keep a
// step's products at most 6 rows (p <= 3), where every row sums alike whatever the rows beside
// it; with more rows a shared-weight product goes to cuBLAS, whose sums depend on the shape.
TEST_P(CudaDecode, StepsOfTheFirstSequencesEqualDecodingAlone) {
  const Case& c = GetParam();
  Model model(c.config, *gpu_, DType::f32, DType::bf16);
  model.initialize();
  Rng rng(37);
  auto random_ids = [&](size_t n) {
    std::vector<int32_t> ids(n);
    for (auto& t : ids) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(c.config.vocab_size)));
    return ids;
  };
  Decoder batch(model, 2, c.mode), alone0(model, 1, c.mode), alone1(model, 1, c.mode);
  const int64_t V = c.config.vocab_size;
  auto same_row = [&](const Decoder& a, int64_t row, const Decoder& b, const std::string& what) {
    EXPECT_EQ(std::memcmp(a.logits().data<float>() + row * V, b.logits().data<float>(), V * sizeof(float)), 0)
        << what;
  };
  const std::vector<int32_t> p0 = random_ids(2), p1 = random_ids(5), leaving = random_ids(1);
  batch.prefill(0, p0);
  alone0.prefill(0, p0);
  batch.prefill(1, leaving);
  constexpr int32_t idle = Decoder::kIdle;
  for (int64_t step = 0; step + 6 < c.config.max_seq_len; ++step) {
    if (step == 3) {
      batch.prefill(1, p1);
      alone1.prefill(0, p1);
      same_row(batch, 1, alone1, "sequence 1's prefill");
    }
    const std::vector<int32_t> t = random_ids(2);
    const int32_t tokens[2] = {t[0], step < 2 || step >= 3 ? t[1] : idle};
    batch.step(tokens);
    EXPECT_EQ(batch.state().width(), step == 2 ? 1 : 2) << "step " << step;
    alone0.step(std::span(&tokens[0], 1));
    same_row(batch, 0, alone0, "sequence 0 at step " + std::to_string(step));
    if (step >= 3) {
      alone1.step(std::span(&tokens[1], 1));
      same_row(batch, 1, alone1, "sequence 1 at step " + std::to_string(step));
    }
  }
  EXPECT_GT(batch.state().replayed_steps(), 0);
}

// On a briefly trained model (not random weights: the logits have the margins a real model's
// have), the GPU's greedy choice equals the CPU's at every step where the CPU's margin between
// its best and second-best logit exceeds what BF16 may move them. The BF16 logits are within
// 3e-2 of the CPU's norm-wise (CudaDecode.Bf16MatchesTheCpuDecoder), so no single logit moves
// by more than e = 3e-2 * ||cpu logits||_2 and the order of two logits 2e apart cannot change.
// Both decoders are fed the CPU's greedy tokens (teacher forcing), so a step below the margin
// does not end the comparison: 64 steps, and at least half of them must be checked.
TEST(CudaDecodeGreedy, TrainedModelPicksTheCpusTokensWhereTheMarginAllows) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  ModelConfig c = test::byte_training_config(2);
  c.d_model = 64;
  c.n_heads = 4;
  c.n_kv_heads = 4;
  c.ffn_hidden = 128;
  c.max_seq_len = 80;
  c.validate("greedy");
  CpuBackend cpu;
  Model reference(c, cpu);
  reference.initialize();
  // 400 AdamW steps on windows of a short text repeated: learnt nearly by heart, so most
  // predictions are confident.
  std::string text;
  for (int i = 0; i < 4; ++i) text += "call me ishmael. some years ago, never mind how long precisely, i went to sea. ";
  {
    AdamWConfig opt;
    AdamW adamw(cpu, reference.params(), opt);
    Rng rng(5);
    const int64_t B = 4, T = 32;
    Tensor tokens = Tensor::zeros({B, T}, DType::i32), targets = Tensor::zeros({B, T}, DType::i32);
    for (int step = 0; step < 400; ++step) {
      for (int64_t b = 0; b < B; ++b) {
        const size_t start = static_cast<size_t>(rng.below(text.size() - T - 1));
        for (int64_t t = 0; t < T; ++t) {
          tokens.data<int32_t>()[b * T + t] = static_cast<unsigned char>(text[start + t]);
          targets.data<int32_t>()[b * T + t] = static_cast<unsigned char>(text[start + t + 1]);
        }
      }
      reference.params().zero_grad(cpu);
      reference.forward(tokens, targets);
      reference.backward();
      adamw.step(1e-2);
    }
  }
  auto gpu = make_cuda_backend(0);
  Model model(c, *gpu, DType::f32, DType::bf16);
  copy_parameters(reference, model, DType::bf16);
  copy_parameters(model, reference, DType::bf16);  // the CPU reads the same rounded weights
  Decoder on_cpu(reference, 1, DecodeMode::staggered), on_gpu(model, 1, DecodeMode::staggered);
  std::vector<int32_t> prompt;
  for (char ch : std::string("call me ")) prompt.push_back(static_cast<unsigned char>(ch));
  on_cpu.prefill(0, prompt);
  on_gpu.prefill(0, prompt);
  int checked = 0;
  for (int step = 0; step < 64; ++step) {
    const Tensor& want = on_cpu.logits();
    const Tensor& got = on_gpu.logits();
    const float* w = want.data<float>();
    const float* g = got.data<float>();
    int64_t best = 0, gpu_best = 0;
    double norm = 0.0;
    for (int64_t v = 0; v < c.vocab_size; ++v) {
      norm += static_cast<double>(w[v]) * w[v];
      if (w[v] > w[best]) best = v;
      if (g[v] > g[gpu_best]) gpu_best = v;
    }
    double second = -INFINITY;
    for (int64_t v = 0; v < c.vocab_size; ++v)
      if (v != best) second = std::max(second, static_cast<double>(w[v]));
    const double movable = 3e-2 * std::sqrt(norm);
    if (w[best] - second > 2 * movable) {
      ++checked;
      EXPECT_EQ(gpu_best, best) << "step " << step << ": CPU margin " << w[best] - second
                                << ", BF16 may move a logit by " << movable;
    }
    const int32_t next = static_cast<int32_t>(best);
    on_cpu.step(std::span(&next, 1));
    on_gpu.step(std::span(&next, 1));
  }
  EXPECT_GE(checked, 32) << "too few steps with a margin above the BF16 tolerance";
  std::printf("greedy: %d of 64 steps checked\n", checked);
}

// A batch whose caches cannot fit (2^21 sequences of 24 positions: hundreds of GiB) is refused
// with one error naming the caches, the sizes and what to lower; the memory taken before the
// failure is given back, and the backend decodes afterwards.
TEST(CudaDecodeMemory, ABatchThatCannotFitIsRefusedByName) {
  if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  auto gpu = make_cuda_backend(0);
  const Case c = decode_cases().front();
  Model model(c.config, *gpu, DType::f32, DType::bf16);
  model.initialize();
  try {
    Decoder decoder(model, int64_t(1) << 21, DecodeMode::staggered);
    ADD_FAILURE() << "caches for 2^21 sequences were allocated";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("key/value caches for 2097152 sequences of 24 positions"), std::string::npos)
        << what;
    EXPECT_NE(what.find("out of memory"), std::string::npos) << what;
    EXPECT_NE(what.find("fewer sequences"), std::string::npos) << what;
  }
  const Decoded after = decode(model, DecodeMode::staggered);
  EXPECT_EQ(after.logits.size(), 20u);
}

INSTANTIATE_TEST_SUITE_P(Variants, CudaDecode, ::testing::ValuesIn(decode_cases()),
                         [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace sf
