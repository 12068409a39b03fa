// cuda_model_test.cpp — the whole model on the CUDA backend against the CPU reference: loss and
// every parameter gradient of every variant, in F32 and in BF16 mixed precision, at tiny and at
// realistic shapes; a training run on the GPU against the same run on the CPU.
//
// Tolerances (norm-wise relative error per gradient tensor, ||gpu - cpu|| / ||cpu||):
//   * F32 compute: 1e-4 for gradients, 1e-5 for the loss. Every kernel is fp32 on both sides
//     (no TF32), so only summation order differs; gradients pass through a dozen kernels.
//   * BF16 mixed precision (realistic shapes, standard initialisation): 5e-2 for gradients,
//     1e-2 for the loss. Every activation and activation gradient is rounded to bf16 (8
//     significant bits, relative error up to 2^-9 = 2e-3 per rounding); a gradient goes through
//     ~10 roundings per layer, partly cancelling. Measured on an H100: worst gradient 1.1e-2 to
//     1.6e-2, loss under 1e-4. A wrong kernel (missing term, wrong index, wrong mask) gives O(1)
//     errors. (At the tiny sizes with std-0.5 random weights bf16 alone moves gradients by
//     10-40%, so bf16 is checked at the realistic sizes.)
// Label gpu; skips without a CUDA device.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <memory>

#include "cpu/cpu_backend.h"
#include "cuda/cuda_backend.h"
#include "model/model.h"
#include "support/device_tensors.h"
#include "support/gradcheck.h"
#include "support/tiny_data.h"
#include "support/tiny_models.h"
#include "train/adamw.h"
#include "train/trainer.h"

namespace sf {
namespace {

struct Batch {
  Tensor tokens, targets;
};

Batch random_batch(const ModelConfig& c, int64_t B, int64_t T, Rng& rng) {
  Batch b{test::random_ids({B, T}, c.vocab_size, rng), test::random_ids({B, T}, c.vocab_size, rng)};
  b.targets.data<int32_t>()[1] = -1;  // an ignored target
  return b;
}

double squared_difference(const Tensor& a, const Tensor& b) {
  double sum = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = test::value_at(a, i) - test::value_at(b, i);
    sum += d * d;
  }
  return std::isfinite(sum) ? sum : std::numeric_limits<double>::infinity();
}

// Copies every master parameter of `from` into `to` (any backends; same config).
void copy_parameters(Model& from, Model& to) {
  for (Parameter& p : to.params().all()) {
    const Parameter& src = from.params().get(p.name);
    Tensor host = Tensor::zeros(src.value.shape(), DType::f32);
    from.backend().copy(host, src.value);
    to.backend().copy(p.value, host);
  }
}

struct Comparison {
  double loss_error = 0.0;
  double worst_gradient_error = 0.0;
  std::string worst_gradient;
};

// Loss and gradients of the same model and batch on the CPU (F32) and on the GPU.
Comparison compare_with_cpu(const ModelConfig& c, DType compute, const Batch& batch, bool randomize,
                            bool recompute = false) {
  CpuBackend cpu;
  auto gpu = make_cuda_backend(0);
  Model reference(c, cpu);
  Rng rng(99);
  if (randomize) test::randomize_parameters(reference, rng);
  else reference.initialize();
  Model model(c, *gpu, DType::f32, compute);
  model.set_activation_recomputation(recompute);
  copy_parameters(reference, model);

  reference.params().zero_grad(cpu);
  model.params().zero_grad(*gpu);
  const double loss_ref = reference.forward(batch.tokens, batch.targets);
  reference.backward();
  const double loss = model.forward(batch.tokens, batch.targets);
  model.backward();

  Comparison r;
  r.loss_error = std::fabs(loss - loss_ref) / std::fabs(loss_ref);
  // Some gradients are exactly zero in exact arithmetic (cross-attention q, k and their norm
  // with window 1: one visible key, softmax = 1) and rounding noise on the GPU; they are
  // compared against 1e-3 of the largest gradient norm instead of their own zero norm.
  double largest = 0.0;
  for (const Parameter& p : reference.params().all())
    largest = std::max(largest, std::sqrt(cpu.sum_squares(p.grad)));
  for (const Parameter& p : reference.params().all()) {
    const Tensor g = test::to_host_f32(*gpu, model.params().get(p.name).grad);
    const double own = std::sqrt(cpu.sum_squares(p.grad));
    const double err = own >= 1e-3 * largest
                           ? test::norm_relative_error(g, p.grad)
                           : std::sqrt(squared_difference(g, p.grad)) / (1e-3 * largest);
    if (err > r.worst_gradient_error || std::isnan(err)) {
      r.worst_gradient_error = err;
      r.worst_gradient = p.name;
    }
  }
  return r;
}

class CudaModel : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!cuda_device_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(CudaModel, EveryVariantF32MatchesTheCpu) {
  Rng rng(5);
  for (const auto& v : test::tiny_variants()) {
    const Batch batch = random_batch(v.config, 2, 7, rng);
    const Comparison r = compare_with_cpu(v.config, DType::f32, batch, true);
    EXPECT_LT(r.loss_error, 1e-5) << v.name;
    EXPECT_LT(r.worst_gradient_error, 1e-4) << v.name << ": " << r.worst_gradient;
  }
}

// Every variant at head_dim 64 and sequences past one attention tile (the tensor-core attention
// path), with the standard initialisation, in F32 and BF16.
TEST_F(CudaModel, EveryVariantAtRealisticShapesMatchesTheCpu) {
  Rng rng(7);
  for (const auto& v : test::tiny_variants()) {
    const ModelConfig c = test::realistic_config(v.config);
    const Batch batch = random_batch(c, 2, 150, rng);
    for (DType compute : {DType::f32, DType::bf16}) {
      const Comparison r = compare_with_cpu(c, compute, batch, false);
      const bool bf16 = compute == DType::bf16;
      EXPECT_LT(r.loss_error, bf16 ? 1e-2 : 1e-5) << v.name;
      EXPECT_LT(r.worst_gradient_error, bf16 ? 5e-2 : 1e-4) << v.name << ": " << r.worst_gradient;
      std::printf("[%s d256 T150] %-26s loss rel err %.2e, worst gradient rel err %.2e (%s)\n",
                  bf16 ? "bf16" : "f32", v.name.c_str(), r.loss_error, r.worst_gradient_error,
                  r.worst_gradient.c_str());
    }
  }
}

// Activation recomputation on the GPU against the CPU without it: every variant in F32, and the
// 2-stack variants at realistic shapes in BF16 (the same tolerances as without recomputation).
TEST_F(CudaModel, RecomputationMatchesTheCpu) {
  Rng rng(13);
  for (const auto& v : test::tiny_variants()) {
    const Comparison r = compare_with_cpu(v.config, DType::f32, random_batch(v.config, 2, 7, rng),
                                          true, true);
    EXPECT_LT(r.loss_error, 1e-5) << v.name;
    EXPECT_LT(r.worst_gradient_error, 1e-4) << v.name << ": " << r.worst_gradient;
    if (v.config.n_stacks < 2) continue;
    const ModelConfig c = test::realistic_config(v.config);
    const Comparison b = compare_with_cpu(c, DType::bf16, random_batch(c, 2, 150, rng), false, true);
    EXPECT_LT(b.loss_error, 1e-2) << v.name;
    EXPECT_LT(b.worst_gradient_error, 5e-2) << v.name << ": " << b.worst_gradient;
  }
}

// Training micro-batches replayed from a recording (CUDA graphs) give the losses and gradients
// of the same micro-batches run directly: new tokens every step (the recording reads the
// buffers, not captured values), a change of shape in between (the recordings are dropped and
// made again), F32 (tiny model) and BF16 (head_dim 64, the tensor-core attention). The recorded
// steps overwrite the gradients with their first micro-batch (products with beta = 0, a
// zeroing of the rest only), the direct ones zero them all and add.
TEST_F(CudaModel, RecordedStepsMatchDirectOnes) {
  auto gpu = make_cuda_backend(0);
  ASSERT_TRUE(gpu->can_record());
  for (DType compute : {DType::f32, DType::bf16}) {
    ModelConfig c = test::tiny_variants()[1].config;  // separate_p2
    if (compute == DType::bf16) c = test::realistic_config(c);
    Model direct(c, *gpu, DType::f32, compute), recorded(c, *gpu, DType::f32, compute);
    direct.initialize();
    copy_parameters(direct, recorded);
    direct.set_step_recording(false);
    Rng rng(21);
    const int64_t T0 = compute == DType::bf16 ? 150 : 7;
    for (int64_t T : {T0, T0, T0, T0 - 3, T0 - 3, T0 - 3, T0}) {
      // Two micro-batches: the direct model zeroes and adds twice; the recorded one overwrites
      // whatever its gradients hold (GradientStart::overwrite), then adds.
      direct.params().zero_grad(*gpu);
      for (Parameter& p : recorded.params().all()) gpu->fill(p.grad, 1000.0 + static_cast<double>(T));
      for (int micro = 0; micro < 2; ++micro) {
        const Batch batch = random_batch(c, 2, T, rng);
        direct.forward_backward_async(batch.tokens, batch.targets, 0.5);
        recorded.forward_backward_async(batch.tokens, batch.targets, 0.5,
                                        micro == 0 ? GradientStart::overwrite : GradientStart::accumulate);
      }
      const double tol = compute == DType::bf16 ? 1e-3 : 1e-6;
      EXPECT_NEAR(recorded.loss(), direct.loss(), tol * std::fabs(direct.loss())) << "T=" << T;
      for (const Parameter& p : direct.params().all()) {
        const Tensor a = test::to_host_f32(*gpu, p.grad);
        const Tensor b = test::to_host_f32(*gpu, recorded.params().get(p.name).grad);
        EXPECT_LT(test::norm_relative_error(b, a), compute == DType::bf16 ? 1e-2 : 1e-5)
            << dtype_name(compute) << " " << p.name << " T=" << T;
      }
    }
    // The recordings really ran. Per shape, each kind of micro-batch runs directly once with the
    // gradient writes known (the very first backward, which learns them, comes before): at the
    // first T0, 3 replays (the second accumulate, the third overwrite and accumulate); at
    // T0 - 3, 4 (two each after one direct); at the last T0, none. A recording that fails falls
    // back to running directly, right but slow, and would show here.
    EXPECT_EQ(recorded.replayed_steps(), 7) << dtype_name(compute);
    EXPECT_EQ(direct.replayed_steps(), 0);
  }
}

// Mixed precision: the optimizer step writes the BF16 working copies itself and the next forward
// skips its conversion pass. The fused copies are exactly those an explicit refresh makes (same
// bits, same logits); the skip really happens and lasts one forward (an edit of a master that
// breaks the contract is missed by the next forward only); invalidate_working_copies() after an
// edit makes the next forward pick it up.
TEST_F(CudaModel, OptimizerStepRefreshesTheWorkingCopies) {
  auto gpu = make_cuda_backend(0);
  const ModelConfig c = test::realistic_config(test::tiny_variants()[1].config);  // separate_p2
  Model model(c, *gpu, DType::f32, DType::bf16);
  model.initialize();
  AdamW optimizer(*gpu, model.params());
  Rng rng(41);
  const Batch batch = random_batch(c, 2, 64, rng);
  auto working = [&] {  // every working copy, on the host
    std::vector<Tensor> out;
    for (const Tensor& w : model.params().working_storages()) out.push_back(test::to_host_f32(*gpu, w));
    return out;
  };
  auto same = [](const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
    for (size_t i = 0; i < a.size(); ++i)
      if (test::max_abs_difference(a[i], b[i]) != 0.0) return false;
    return true;
  };
  auto train_step = [&] {
    model.params().zero_grad(*gpu);
    model.forward(batch.tokens, batch.targets);
    model.backward();
    optimizer.step(1e-3, 0.8);
  };
  Parameter& norm = model.params().get("final_norm.weight");

  // 1. The fused copies are the rounded masters, bit for bit, and give the same forward.
  train_step();
  const std::vector<Tensor> fused = working();
  for (size_t i = 0; i < fused.size(); ++i) {
    const Tensor master = test::to_host_f32(*gpu, model.params().storages()[i]);
    EXPECT_EQ(test::max_abs_difference(fused[i], test::rounded_f32(master, DType::bf16)), 0.0)
        << "allocation " << i;
  }
  const double loss_fused = model.forward(batch.tokens, batch.targets);  // skips the refresh
  const Tensor logits_fused = test::to_host_f32(*gpu, model.logits());
  model.sync_compute_weights();
  EXPECT_TRUE(same(working(), fused)) << "an explicit refresh changed the fused copies";
  const double loss_synced = model.forward(batch.tokens, batch.targets);
  EXPECT_EQ(test::max_abs_difference(test::to_host_f32(*gpu, model.logits()), logits_fused), 0.0);
  EXPECT_NEAR(loss_fused, loss_synced, 1e-12 * std::fabs(loss_synced));  // fp64 atomics' order

  // 2. The forward after a step skips the refresh, once: an edit without invalidate (breaking
  // the contract on purpose) is missed by that forward and picked up by the next.
  train_step();
  const std::vector<Tensor> after_step = working();
  gpu->scale(norm.value, 2.0);
  model.forward(batch.tokens, batch.targets);
  EXPECT_TRUE(same(working(), after_step)) << "the forward after a step converted the masters";
  model.forward(batch.tokens, batch.targets);
  EXPECT_EQ(test::max_abs_difference(test::to_host_f32(*gpu, norm.working),
                                     test::rounded_f32(test::to_host_f32(*gpu, norm.value),
                                                       DType::bf16)),
            0.0)
      << "the second forward after a step must refresh";

  // 3. The contract: an edit between a step and the next forward, then invalidate: picked up.
  train_step();
  gpu->scale(norm.value, 0.5);
  model.params().invalidate_working_copies();
  const double loss_edited = model.forward(batch.tokens, batch.targets);
  const Tensor logits_edited = test::to_host_f32(*gpu, model.logits());
  EXPECT_EQ(test::max_abs_difference(test::to_host_f32(*gpu, norm.working),
                                     test::rounded_f32(test::to_host_f32(*gpu, norm.value),
                                                       DType::bf16)),
            0.0)
      << "the edit was not picked up";
  model.sync_compute_weights();
  const double loss_reference = model.forward(batch.tokens, batch.targets);
  EXPECT_EQ(test::max_abs_difference(test::to_host_f32(*gpu, model.logits()), logits_edited), 0.0);
  EXPECT_NEAR(loss_edited, loss_reference, 1e-12 * std::fabs(loss_reference));
}

// The same short training run (AdamW, clipping, schedule) on the GPU and on the CPU.
TEST_F(CudaModel, TrainingRunFollowsTheCpuRun) {
  const std::string data = test::fresh_temp_dir("cuda_train_data");
  test::write_tiny_dataset(data, 20000, 2000);
  ModelConfig c = test::tiny_variants()[1].config;  // separate_p2
  c.vocab_size = 257;  // the byte tokenizer's 256 bytes + end-of-text
  c.d_model = 32;
  c.ffn_hidden = 64;
  c.max_seq_len = 32;
  TrainOptions o;
  o.data_dir = data;
  o.steps = 30;
  o.batch = 4;
  o.seq = 32;
  o.lr = 3e-3;
  o.eval_every = 0;
  o.checkpoint_every = 0;
  o.progress = false;
  CpuBackend cpu;
  o.run_dir = test::fresh_temp_dir("cuda_train_cpu");
  const TrainResult ref = train(c, o, cpu);
  auto gpu = make_cuda_backend(0);
  for (DType compute : {DType::f32, DType::bf16}) {
    o.run_dir = test::fresh_temp_dir(compute == DType::f32 ? "cuda_train_f32" : "cuda_train_bf16");
    o.compute_dtype = compute;
    const TrainResult r = train(c, o, *gpu);
    const double tol = compute == DType::f32 ? 1e-3 : 3e-2;
    EXPECT_NEAR(r.last_train_loss, ref.last_train_loss, tol * ref.last_train_loss) << dtype_name(compute);
    EXPECT_NEAR(r.last_val_loss, ref.last_val_loss, tol * ref.last_val_loss) << dtype_name(compute);
  }
}

}  // namespace
}  // namespace sf
