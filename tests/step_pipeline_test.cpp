// step_pipeline_test.cpp — StepPipeline (the trainer's and bench-train's step) against the loop
// it replaces: zero the gradients, forward and backward each micro-batch, read each loss, the
// global norm, the clipped update. Losses, norms and weights agree step by step for every
// variant; a rank without micro-batches reports zeros; the call order is enforced. Also the
// device-side loss sum (Model::write_loss_into / add_loss_into, Backend::dot_into / dot_add) and
// the copying HostReadback. (The CUDA readback: tests/cuda_kernels_test.cpp.)
#include <gtest/gtest.h>

#include <cmath>

#include "cpu/cpu_backend.h"
#include "distributed/collective.h"
#include "model/model.h"
#include "support/gradcheck.h"
#include "support/tiny_models.h"
#include "train/adamw.h"
#include "train/grad_clip.h"
#include "train/step_pipeline.h"

namespace sf {
namespace {

class PipelinedStep : public ::testing::TestWithParam<test::Variant> {};

TEST_P(PipelinedStep, MatchesTheStepByStepLoop) {
  const ModelConfig& c = GetParam().config;
  CpuBackend backend;
  Model reference(c, backend), piped(c, backend);
  test::randomize_parameters_alike(reference, piped, 5);
  Rng rng(11);
  AdamW reference_optimizer(backend, reference.params());
  AdamW piped_optimizer(backend, piped.params());
  SingleProcessCollective world;
  StepPipeline pipeline(piped, piped_optimizer, world);
  constexpr int kMicroBatches = 2;
  const double max_norm = 0.5;  // small enough that some steps clip
  std::vector<StepReport> reports;
  std::vector<double> losses, norms;  // the reference loop's, per step
  for (int64_t step = 1; step <= 4; ++step) {
    reference.params().zero_grad(backend);
    double loss = 0.0;
    for (int micro = 0; micro < kMicroBatches; ++micro) {
      Tensor tokens = test::random_ids({2, 5}, c.vocab_size, rng);
      Tensor targets = test::random_ids({2, 5}, c.vocab_size, rng);
      if (micro == 1) targets.data<int32_t>()[3] = -1;  // an ignored target changes the mean
      loss += reference.forward(tokens, targets) / kMicroBatches;
      reference.backward(1.0 / kMicroBatches);
      pipeline.add_micro_batch(tokens, targets, 1.0 / kMicroBatches);
    }
    norms.push_back(global_grad_norm(backend, reference.params()));
    losses.push_back(loss);
    reference_optimizer.step(1e-2 * step, clip_scale(norms.back(), max_norm));
    // The previous step's report comes once this step's micro-batches are queued.
    EXPECT_EQ(pipeline.pending(), step > 1);
    if (pipeline.pending()) reports.push_back(pipeline.finish());
    pipeline.queue_update(step, 1e-2 * step, max_norm);
  }
  reports.push_back(pipeline.finish());
  EXPECT_FALSE(pipeline.pending());
  ASSERT_EQ(reports.size(), 4u);
  int clipped = 0;
  for (size_t i = 0; i < reports.size(); ++i) {
    const StepReport& r = reports[i];
    SCOPED_TRACE("step " + std::to_string(i + 1));
    EXPECT_EQ(r.step, static_cast<int64_t>(i + 1));
    EXPECT_EQ(r.lr, 1e-2 * r.step);
    // The same sums, scaled in another order (loss * 1/k against loss / k): a few ulps.
    EXPECT_NEAR(r.loss, losses[i], 1e-14 * losses[i]);
    EXPECT_NEAR(r.grad_norm, norms[i], 1e-14 * norms[i]);
    clipped += norms[i] > max_norm;
  }
  EXPECT_GT(clipped, 0) << "no step clipped: the test does not cover clipping";
  // The updates are the same arithmetic on the same gradients: the weights agree to the bit.
  for (const Parameter& p : reference.params().all())
    EXPECT_EQ(test::max_abs_difference(p.value, piped.params().get(p.name).value), 0.0) << p.name;
}

INSTANTIATE_TEST_SUITE_P(Variants, PipelinedStep, ::testing::ValuesIn(test::tiny_variants()),
                         [](const auto& info) { return info.param.name; });

TEST(StepPipeline, RankWithoutMicroBatchesReportsZerosAndLeavesWeights) {
  const ModelConfig c = test::tiny_variants().front().config;
  CpuBackend backend;
  Model model(c, backend);
  Rng init(3);
  test::randomize_parameters(model, init);
  AdamWConfig no_decay;
  no_decay.weight_decay = 0.0;
  AdamW optimizer(backend, model.params(), no_decay);
  for (Parameter& p : model.params().all()) backend.fill(p.grad, 7.0);  // stale gradients
  SingleProcessCollective world;
  StepPipeline pipeline(model, optimizer, world);
  const Tensor before = test::clone(model.params().all().front().value);
  pipeline.queue_update(1, 1e-2, 1.0);
  const StepReport r = pipeline.finish();
  EXPECT_EQ(r.step, 1);
  EXPECT_EQ(r.loss, 0.0);
  EXPECT_EQ(r.grad_norm, 0.0);
  EXPECT_EQ(test::max_abs_difference(model.params().all().front().value, before), 0.0);
}

TEST(StepPipeline, CallOrderIsEnforced) {
  const ModelConfig c = test::tiny_variants().front().config;
  CpuBackend backend;
  Model model(c, backend);
  AdamW optimizer(backend, model.params());
  SingleProcessCollective world;
  StepPipeline pipeline(model, optimizer, world);
  EXPECT_FALSE(pipeline.pending());
  EXPECT_THROW(pipeline.finish(), Error) << "nothing queued";
  pipeline.queue_update(1, 1e-3, 1.0);
  try {
    pipeline.queue_update(2, 1e-3, 1.0);
    ADD_FAILURE() << "a second update was queued before the first was finished";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("step 1 is still unfinished"), std::string::npos)
        << e.what();
  }
  EXPECT_TRUE(pipeline.pending());
  pipeline.finish();
}

TEST(DeviceLoss, WrittenAndAddedIntoAScalar) {
  const ModelConfig c = test::tiny_variants().front().config;
  CpuBackend backend;
  Model model(c, backend);
  Rng init(2), rng(6);
  test::randomize_parameters(model, init);
  Tensor pair = backend.zeros({2}, DType::f64);
  Tensor second = pair.slice(0, 1, 1);
  Tensor tokens = test::random_ids({2, 4}, c.vocab_size, rng);
  Tensor targets = test::random_ids({2, 4}, c.vocab_size, rng);
  const double first_loss = model.forward(tokens, targets);
  model.write_loss_into(second, 0.25);
  EXPECT_NEAR(backend.read_f64_scalar(second), 0.25 * first_loss, 1e-15);
  tokens = test::random_ids({2, 4}, c.vocab_size, rng);
  const double second_loss = model.forward(tokens, targets);
  model.add_loss_into(second, 2.0);
  EXPECT_NEAR(backend.read_f64_scalar(second), 0.25 * first_loss + 2.0 * second_loss, 1e-14);
  EXPECT_EQ(pair.data<double>()[0], 0.0) << "only the slice's element is written";
  model.forward(tokens, Tensor());
  EXPECT_THROW(model.write_loss_into(second, 1.0), Error) << "a forward without targets";
}

TEST(CopyingReadback, ReturnsTheValuesAtStart) {
  CpuBackend backend;
  Tensor values = backend.zeros({3}, DType::f64);
  for (int i = 0; i < 3; ++i) values.data<double>()[i] = 1.5 * (i + 1);
  auto reader = backend.make_readback();
  EXPECT_FALSE(reader->pending());
  EXPECT_THROW(reader->wait(), Error) << "nothing started";
  reader->start(values);
  EXPECT_TRUE(reader->pending());
  EXPECT_THROW(reader->start(values), Error) << "one read at a time";
  values.data<double>()[0] = -1.0;  // later work
  EXPECT_EQ(reader->wait(), (std::vector<double>{1.5, 3.0, 4.5}));
  EXPECT_FALSE(reader->pending());
  EXPECT_THROW(reader->start(backend.zeros({3}, DType::f32)), Error) << "F64 only";
}

}  // namespace
}  // namespace sf
