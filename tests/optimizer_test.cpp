// optimizer_test.cpp — AdamW (kernel and class), the learning-rate schedule, global-norm
// clipping, and the gradient-accumulation contract of train/adamw.h.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <numbers>
#include <vector>

#include "core/rng.h"
#include "cpu/cpu_backend.h"
#include "model/model.h"
#include "model/model_io.h"
#include "model/parameters.h"
#include "support/gradcheck.h"
#include "support/test_util.h"
#include "support/tiny_models.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/grad_clip.h"
#include "train/lr_schedule.h"

namespace sf {
namespace {

void fill_normal(Tensor& t, Rng& rng, double stddev = 1.0) {
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<float>(stddev * rng.normal());
}

std::vector<double> to_double(const Tensor& t) {
  const float* p = t.data<float>();
  return std::vector<double>(p, p + t.numel());
}

// Scalar AdamW in double, written from the torch.optim.AdamW documentation, one element at a time.
struct ReferenceAdamW {
  double beta1, beta2, eps, weight_decay;
  std::vector<double> param, m, v;
  int64_t t = 0;

  void step(double lr, const std::vector<double>& grad, double grad_scale = 1.0) {
    ++t;
    const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(t));
    const double bc2 = 1.0 - std::pow(beta2, static_cast<double>(t));
    for (size_t i = 0; i < param.size(); ++i) {
      const double g = grad[i] * grad_scale;
      param[i] *= 1.0 - lr * weight_decay;
      m[i] = beta1 * m[i] + (1.0 - beta1) * g;
      v[i] = beta2 * v[i] + (1.0 - beta2) * g * g;
      const double mhat = m[i] / bc1;
      const double vhat = v[i] / bc2;
      param[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  }
};

// ---- AdamW ----------------------------------------------------------------------------------

TEST(AdamW, MatchesDoubleReferenceIncludingBiasCorrection) {
  CpuBackend backend;
  ParameterSet params;
  Parameter& w = params.add(backend, "w", {7, 5}, DType::f32, /*weight_decay=*/true);
  Rng rng(11);
  fill_normal(w.value, rng);

  AdamWConfig config;  // defaults: 0.9, 0.95, 1e-8, 0.1
  AdamW opt(backend, params, config);
  ReferenceAdamW ref{config.beta1, config.beta2, config.eps, config.weight_decay,
                     to_double(w.value), std::vector<double>(35, 0.0),
                     std::vector<double>(35, 0.0)};

  const double lr = 1e-2;
  for (int step = 1; step <= 10; ++step) {
    fill_normal(w.grad, rng);
    const std::vector<double> grad = to_double(w.grad);
    const std::vector<double> before = to_double(w.value);
    opt.step(lr, 1.0);
    ref.step(lr, grad);
    ASSERT_EQ(opt.step_count(), step);

    const float* p = w.value.data<float>();
    const float* m = opt.exp_avg(0).data<float>();
    const float* v = opt.exp_avg_sq("w").data<float>();
    for (int64_t i = 0; i < 35; ++i) {
      ASSERT_NEAR(p[i], ref.param[i], 1e-6 * (1.0 + std::abs(ref.param[i]))) << "step " << step;
      ASSERT_NEAR(m[i], ref.m[i], 1e-6 * (1.0 + std::abs(ref.m[i]))) << "step " << step;
      ASSERT_NEAR(v[i], ref.v[i], 1e-6 * (1.0 + std::abs(ref.v[i]))) << "step " << step;
    }
    if (step == 1) {
      // Bias correction makes the first update exactly lr * sign(g) (plus decay): without it
      // the step would be (1-b1)/sqrt(1-b2) = 0.447 times that.
      for (int64_t i = 0; i < 35; ++i) {
        const double expected =
            before[i] * (1.0 - lr * config.weight_decay) - lr * (grad[i] > 0 ? 1.0 : -1.0);
        ASSERT_NEAR(p[i], expected, 1e-6);
      }
    }
    if (step == 2 || step == 10) {
      // Bias-corrected moments: at step t the corrections are 1 - b^t; check one element's
      // update against the closed form directly from the stored moments.
      const double bc1 = 1.0 - std::pow(config.beta1, step);
      const double bc2 = 1.0 - std::pow(config.beta2, step);
      const double update = lr * (m[3] / bc1) / (std::sqrt(v[3] / bc2) + config.eps);
      EXPECT_NEAR(p[3], before[3] * (1.0 - lr * config.weight_decay) - update, 1e-6);
    }
  }
}

TEST(AdamW, WeightDecayOnlyWhereFlagged) {
  CpuBackend backend;
  ParameterSet params;
  // References into a ParameterSet are taken after the last add (adding may move parameters).
  params.add(backend, "linear.weight", {16}, DType::f32, true);
  params.add(backend, "norm.weight", {16}, DType::f32, false);
  Parameter& decayed = params.get("linear.weight");
  Parameter& plain = params.get("norm.weight");
  Rng rng(5);
  fill_normal(decayed.value, rng);
  fill_normal(decayed.grad, rng);
  backend.copy(plain.value, decayed.value);
  backend.copy(plain.grad, decayed.grad);
  const std::vector<double> p0 = to_double(decayed.value);

  AdamWConfig config;
  config.weight_decay = 0.5;
  AdamW opt(backend, params, config);
  const double lr = 0.1;
  opt.step(lr, 1.0);

  const float* pd = decayed.value.data<float>();
  const float* pp = plain.value.data<float>();
  double max_diff = 0.0;
  for (int i = 0; i < 16; ++i) {
    // Same gradient, same moments: the only difference is the decoupled decay lr*wd*p0.
    EXPECT_NEAR(pp[i] - pd[i], lr * config.weight_decay * p0[i], 1e-6);
    // The undecayed parameter took the pure Adam step (lr * sign(g) at step 1).
    const double g = decayed.grad.data<float>()[i];
    EXPECT_NEAR(pp[i], p0[i] - lr * (g > 0 ? 1.0 : -1.0), 1e-6);
    max_diff = std::max(max_diff, std::abs(double(pp[i]) - pd[i]));
  }
  EXPECT_GT(max_diff, 1e-3);  // the decay really happened
}

TEST(AdamW, GradScaleEqualsPrescaledGradient) {
  CpuBackend backend;
  Rng rng(21);
  // Large eps so that the update is not invariant to the gradient's scale.
  AdamWConfig config;
  config.eps = 0.1;
  const double scale = 0.3;

  ParameterSet a, b, c;
  Parameter& pa = a.add(backend, "w", {64}, DType::f32, true);
  Parameter& pb = b.add(backend, "w", {64}, DType::f32, true);
  Parameter& pc = c.add(backend, "w", {64}, DType::f32, true);
  fill_normal(pa.value, rng);
  backend.copy(pb.value, pa.value);
  backend.copy(pc.value, pa.value);
  AdamW opt_a(backend, a, config), opt_b(backend, b, config), opt_c(backend, c, config);

  for (int step = 0; step < 5; ++step) {
    fill_normal(pa.grad, rng);
    backend.copy(pb.grad, pa.grad);
    backend.scale(pb.grad, scale);
    backend.copy(pc.grad, pa.grad);
    opt_a.step(0.05, scale);  // scaled inside the update
    opt_b.step(0.05, 1.0);    // pre-scaled gradient
    opt_c.step(0.05, 1.0);    // unscaled: must differ
  }
  double diff_unscaled = 0.0;
  for (int i = 0; i < 64; ++i) {
    EXPECT_NEAR(pa.value.data<float>()[i], pb.value.data<float>()[i], 1e-6);
    EXPECT_NEAR(opt_a.exp_avg(0).data<float>()[i], opt_b.exp_avg(0).data<float>()[i], 1e-6);
    EXPECT_NEAR(opt_a.exp_avg_sq(0).data<float>()[i], opt_b.exp_avg_sq(0).data<float>()[i], 1e-6);
    diff_unscaled = std::max(
        diff_unscaled, std::abs(double(pa.value.data<float>()[i]) - pc.value.data<float>()[i]));
  }
  EXPECT_GT(diff_unscaled, 1e-3);
}

TEST(AdamW, MinimisesRandomConvexQuadratic) {
  // f(x) = 1/2 (x - x*)^T A (x - x*), A = Q^T Q / n + 0.1 I (symmetric positive definite).
  const int n = 32;
  CpuBackend backend;
  Rng rng(3);
  std::vector<double> q(n * n), a(n * n, 0.0), target(n);
  for (auto& e : q) e = rng.normal();
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      double s = 0.0;
      for (int k = 0; k < n; ++k) s += q[k * n + i] * q[k * n + j];
      a[i * n + j] = s / n + (i == j ? 0.1 : 0.0);
    }
  for (auto& e : target) e = 2.0 * rng.normal();

  ParameterSet params;
  Parameter& x = params.add(backend, "x", {n}, DType::f32, false);
  fill_normal(x.value, rng, 0.1);
  AdamW opt(backend, params);
  const LrSchedule schedule{0.1, 0.01, 20, 400};

  auto loss_and_grad = [&](bool write_grad) {
    const float* px = x.value.data<float>();
    std::vector<double> r(n);
    for (int i = 0; i < n; ++i) r[i] = px[i] - target[i];
    double loss = 0.0;
    for (int i = 0; i < n; ++i) {
      double ar = 0.0;
      for (int j = 0; j < n; ++j) ar += a[i * n + j] * r[j];
      loss += 0.5 * r[i] * ar;
      if (write_grad) x.grad.data<float>()[i] = static_cast<float>(ar);
    }
    return loss;
  };

  const double initial = loss_and_grad(false);
  for (int64_t step = 1; step <= 400; ++step) {
    params.zero_grad(backend);
    loss_and_grad(true);
    opt.step(lr_at(schedule, step), 1.0);
  }
  const double final_loss = loss_and_grad(false);
  EXPECT_GT(initial, 10.0);
  EXPECT_LT(final_loss, 0.01 * initial) << "initial " << initial << " final " << final_loss;
}

TEST(AdamW, StateNamesAndStepCount) {
  CpuBackend backend;
  ParameterSet params;
  params.add(backend, "a.weight", {3, 2}, DType::f32, true);
  params.add(backend, "b.weight", {4}, DType::f32, false);
  AdamW opt(backend, params);
  const auto state = opt.state_tensors();
  ASSERT_EQ(state.size(), 4u);
  EXPECT_EQ(state[0].first, "a.weight.exp_avg");
  EXPECT_EQ(state[1].first, "a.weight.exp_avg_sq");
  EXPECT_EQ(state[2].first, "b.weight.exp_avg");
  EXPECT_EQ(state[3].first, "b.weight.exp_avg_sq");
  EXPECT_EQ(state[2].second.shape(), (Shape{4}));
  // The returned tensors share the optimizer's buffers, so a loader can copy into them.
  Tensor restored = Tensor::zeros({4});
  restored.data<float>()[2] = 1.5f;
  Tensor dst = state[2].second;
  backend.copy(dst, restored);
  EXPECT_EQ(opt.exp_avg("b.weight").data<float>()[2], 1.5f);

  opt.set_step_count(41);
  opt.step(1e-3, 1.0);
  EXPECT_EQ(opt.step_count(), 42);
  EXPECT_THROW(opt.set_step_count(-1), Error);
  EXPECT_THROW(opt.exp_avg("missing"), Error);
  EXPECT_THROW(opt.exp_avg_sq(2), Error);
}

TEST(AdamW, RejectsBadArguments) {
  CpuBackend backend;
  ParameterSet params;
  params.add(backend, "w", {4}, DType::f32, true);
  AdamWConfig bad;
  bad.beta2 = 1.0;
  EXPECT_THROW(AdamW(backend, params, bad), Error);
  bad = {};
  bad.eps = 0.0;
  EXPECT_THROW(AdamW(backend, params, bad), Error);

  AdamW opt(backend, params);
  EXPECT_THROW(opt.step(-1e-3, 1.0), Error);
  EXPECT_THROW(opt.step(1e-3, std::numeric_limits<double>::quiet_NaN()), Error);
  EXPECT_EQ(opt.step_count(), 0);  // refused steps do not count

  ParameterSet wide;
  wide.add(backend, "w64", {4}, DType::f64, true);
  EXPECT_THROW(AdamW(backend, wide), Error);
}

// ---- AdamW refreshing mixed-precision working copies ---------------------------------------

// Every byte of `t` set to 0xff: NaN in F32 and in BF16, so an element nobody writes shows.
void poison(Tensor& t) { std::memset(t.raw(), 0xff, t.nbytes()); }

// True when `working` holds exactly Backend::convert(master) (bit for bit).
bool holds_conversion_of(CpuBackend& backend, const Tensor& working, const Tensor& master) {
  Tensor expected = Tensor::zeros(master.shape(), working.dtype());
  backend.convert(expected, master);
  return std::memcmp(expected.raw(), working.raw(), expected.nbytes()) == 0;
}

// The backend operation: a working output (F32 or BF16, defined or not per tensor) receives the
// new parameter value rounded as convert() rounds, and does not change the update itself.
TEST(AdamW, UpdateManyWritesWorkingOutputsLikeConvert) {
  CpuBackend backend;
  Rng rng(31);
  const std::vector<int64_t> sizes{1, 3, 257, 4096};
  AdamWStep s;
  s.lr = 3e-3;
  s.step = 4;
  s.grad_scale = 0.6;
  for (DType dtype : {DType::bf16, DType::f32}) {
    std::vector<AdamWTensors> with, without;
    for (size_t i = 0; i < sizes.size(); ++i) {
      AdamWTensors t{Tensor::zeros({sizes[i]}), Tensor::zeros({sizes[i]}),
                     Tensor::zeros({sizes[i]}), Tensor::zeros({sizes[i]}), i % 2 ? 0.0 : 0.1};
      for (Tensor* x : {&t.param, &t.grad, &t.m, &t.v}) fill_normal(*x, rng, 0.3);
      for (int64_t j = 0; j < sizes[i]; ++j) t.v.data<float>()[j] *= t.v.data<float>()[j];
      AdamWTensors u{test::clone(t.param), t.grad, test::clone(t.m), test::clone(t.v),
                     t.weight_decay};
      if (i != 2) {  // one tensor without a working output
        t.working = Tensor::zeros({sizes[i]}, dtype);
        poison(t.working);
      }
      with.push_back(t);
      without.push_back(u);
    }
    backend.adamw_update_many(with, s);
    backend.adamw_update_many(without, s);
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string what = fmt::format("{} n={}", dtype_name(dtype), sizes[i]);
      EXPECT_EQ(std::memcmp(with[i].param.raw(), without[i].param.raw(), with[i].param.nbytes()), 0)
          << what << ": the working output changed the update";
      if (i == 2) continue;
      EXPECT_TRUE(holds_conversion_of(backend, with[i].working, with[i].param)) << what;
    }
  }
  // Clear errors, before anything is updated.
  AdamWTensors bad{Tensor::zeros({4}), Tensor::zeros({4}), Tensor::zeros({4}), Tensor::zeros({4})};
  const Tensor before = test::clone(bad.param);
  bad.working = Tensor::zeros({5}, DType::bf16);
  EXPECT_THROW(backend.adamw_update_many({bad}, s), Error);
  bad.working = Tensor::zeros({4}, DType::f64);
  EXPECT_THROW(backend.adamw_update_many({bad}, s), Error);
  EXPECT_EQ(std::memcmp(before.raw(), bad.param.raw(), before.nbytes()), 0);
}

// The optimizer over a set with working copies (a parameter of its own and a stacked group):
// after every step each copy holds convert(new master) bit for bit, over whole allocations,
// and the set says so exactly once (the flag a forward consumes); without copies it never does.
TEST(AdamW, StepRefreshesTheWorkingCopies) {
  CpuBackend backend;
  for (DType dtype : {DType::bf16, DType::f32}) {
    ParameterSet params;
    params.add(backend, "w", {7, 5}, DType::f32, true);
    params.add_stacked(backend, {"a", "b"}, {3, 2}, {5}, DType::f32, true);
    params.add(backend, "norm", {5}, DType::f32, false);
    params.add_working_copies(backend, dtype);
    EXPECT_THROW(params.add(backend, "late", {2}, DType::f32, true), Error);
    ASSERT_EQ(params.working_storages().size(), params.storages().size());
    Rng rng(17);
    for (Parameter& p : params.all()) {
      ASSERT_TRUE(p.working.defined()) << p.name;
      EXPECT_EQ(p.working.shape(), p.value.shape()) << p.name;
      fill_normal(p.value, rng, 0.5);
    }
    for (const Tensor& w : params.working_storages()) {
      Tensor t = w;
      poison(t);
    }
    EXPECT_FALSE(params.consume_working_current());
    AdamW opt(backend, params);
    for (int step = 1; step <= 3; ++step) {
      for (Parameter& p : params.all()) fill_normal(p.grad, rng);
      opt.step(1e-2, 0.9);
      const std::string what = fmt::format("{} step {}", dtype_name(dtype), step);
      for (const Parameter& p : params.all())
        EXPECT_TRUE(holds_conversion_of(backend, p.working, p.value)) << what << " " << p.name;
      for (size_t i = 0; i < params.storages().size(); ++i)
        EXPECT_TRUE(holds_conversion_of(backend, params.working_storages()[i], params.storages()[i]))
            << what << " allocation " << i;
      EXPECT_TRUE(params.consume_working_current()) << what;
      EXPECT_FALSE(params.consume_working_current()) << what << ": single use";
    }
    opt.step(1e-2, 1.0);
    params.invalidate_working_copies();
    EXPECT_FALSE(params.consume_working_current());
  }
  ParameterSet plain;  // F32 only: no copies, the optimizer claims nothing
  plain.add(backend, "w", {4}, DType::f32, true);
  AdamW opt(backend, plain);
  opt.step(1e-2, 1.0);
  EXPECT_FALSE(plain.has_working_copies());
  EXPECT_FALSE(plain.consume_working_current());
}

// Everything in the library that writes master values clears the optimizer's claim: a
// mixed-precision model (built on the CPU backend only to hold the tensors; no forward runs)
// after a step, then initialize, a model load, a checkpoint load.
TEST(AdamW, LibraryWritersOfMastersInvalidateTheWorkingCopies) {
  CpuBackend backend;
  const ModelConfig c = test::tiny_variants()[1].config;
  Model model(c, backend, DType::f32, DType::bf16);
  ASSERT_TRUE(model.params().has_working_copies());
  model.initialize();
  AdamW opt(backend, model.params());
  const std::string dir = test::fresh_temp_dir("adamw_working_copies");
  model_save(model, dir);
  TrainingState state;
  checkpoint_save(dir, model, opt, state);

  // Each writer follows a step (which alone sets the flag: the last check).
  opt.step(1e-3, 1.0);
  model.initialize();
  EXPECT_FALSE(model.params().consume_working_current()) << "initialize";
  opt.step(1e-3, 1.0);
  model_load_weights(model, model_files(dir).weights);
  EXPECT_FALSE(model.params().consume_working_current()) << "model_load_weights";
  opt.step(1e-3, 1.0);
  checkpoint_load(dir, model, opt);
  EXPECT_FALSE(model.params().consume_working_current()) << "checkpoint_load";
  opt.step(1e-3, 1.0);
  model.sync_compute_weights();
  EXPECT_FALSE(model.params().consume_working_current()) << "sync_compute_weights";
  opt.step(1e-3, 1.0);
  EXPECT_TRUE(model.params().consume_working_current()) << "a step alone";
}

// ---- learning-rate schedule -----------------------------------------------------------------

TEST(LrSchedule, WarmupCosineAndFloor) {
  const LrSchedule s{6e-4, 0.1, 100, 1100};
  const double peak = 6e-4, floor = 6e-5;
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 0.0);
  EXPECT_DOUBLE_EQ(lr_at(s, 1), peak / 100);
  EXPECT_DOUBLE_EQ(lr_at(s, 50), peak / 2);
  EXPECT_DOUBLE_EQ(lr_at(s, 100), peak);
  for (int64_t step : {101, 350, 600, 777, 1099}) {
    const double progress = (step - 100) / 1000.0;
    const double expected =
        floor + (peak - floor) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress));
    EXPECT_NEAR(lr_at(s, step), expected, 1e-15) << step;
  }
  EXPECT_NEAR(lr_at(s, 600), (peak + floor) / 2, 1e-15);  // mid-cosine is the midpoint
  EXPECT_DOUBLE_EQ(lr_at(s, 1100), floor);
  EXPECT_DOUBLE_EQ(lr_at(s, 5000), floor);
  // Monotone: rises through warmup, falls through the cosine.
  for (int64_t step = 1; step <= 1100; ++step) {
    if (step <= 100) EXPECT_GT(lr_at(s, step), lr_at(s, step - 1));
    else EXPECT_LT(lr_at(s, step), lr_at(s, step - 1));
  }
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  const LrSchedule s{1e-3, 0.0, 0, 10};
  EXPECT_DOUBLE_EQ(lr_at(s, 0), 1e-3);
  EXPECT_NEAR(lr_at(s, 5), 0.5e-3, 1e-18);
  EXPECT_DOUBLE_EQ(lr_at(s, 10), 0.0);
}

TEST(LrSchedule, RejectsBadArguments) {
  EXPECT_THROW(lr_at(LrSchedule{1e-3, 0.1, 10, 100}, -1), Error);
  EXPECT_THROW(lr_at(LrSchedule{1e-3, 0.1, -1, 100}, 1), Error);
  EXPECT_THROW(lr_at(LrSchedule{1e-3, 0.1, 101, 100}, 1), Error);
  EXPECT_THROW(lr_at(LrSchedule{1e-3, 0.1, 0, 0}, 1), Error);
  EXPECT_THROW(lr_at(LrSchedule{-1e-3, 0.1, 0, 10}, 1), Error);
  EXPECT_THROW(lr_at(LrSchedule{1e-3, 1.5, 0, 10}, 1), Error);
  EXPECT_THROW(lr_at(LrSchedule{std::numeric_limits<double>::infinity(), 0.1, 0, 10}, 1), Error);
  try {
    validate_lr_schedule(LrSchedule{1e-3, 0.1, 200, 100});
    FAIL() << "warmup > total accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("warmup_steps"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(validate_lr_schedule(LrSchedule{1e-3, 0.1, 100, 100}));
}

// ---- gradient clipping ----------------------------------------------------------------------

TEST(GradClip, GlobalNormOverAllParameters) {
  CpuBackend backend;
  ParameterSet params;
  Rng rng(8);
  double expected = 0.0;
  for (const Shape& shape : {Shape{5, 3}, Shape{7}, Shape{2, 2, 4}}) {
    params.add(backend, fmt::format("p{}", params.size()), shape, DType::f32, true);
  }
  for (Parameter& p : params.all()) {
    fill_normal(p.grad, rng);
    for (double g : to_double(p.grad)) expected += g * g;
  }
  expected = std::sqrt(expected);
  EXPECT_NEAR(global_grad_norm(backend, params), expected, 1e-12 * expected);

  params.get("p1").grad.data<float>()[3] = std::numeric_limits<float>::infinity();
  EXPECT_TRUE(std::isinf(global_grad_norm(backend, params)));
  params.get("p1").grad.data<float>()[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_TRUE(std::isnan(global_grad_norm(backend, params)));
}

TEST(GradClip, ClipScale) {
  EXPECT_DOUBLE_EQ(clip_scale(0.5, 1.0), 1.0);          // under the limit: untouched
  EXPECT_DOUBLE_EQ(clip_scale(4.0, 1.0), 1.0 / (4.0 + 1e-6));
  EXPECT_NEAR(clip_scale(4.0, 1.0) * 4.0, 1.0, 1e-6);  // clipped norm lands on max_norm
  EXPECT_DOUBLE_EQ(clip_scale(0.0, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_scale(1e9, 0.0), 1.0);         // disabled
  EXPECT_DOUBLE_EQ(clip_scale(1e9, -1.0), 1.0);        // disabled
  EXPECT_TRUE(std::isnan(clip_scale(std::numeric_limits<double>::infinity(), 1.0)));
  EXPECT_TRUE(std::isnan(clip_scale(std::numeric_limits<double>::quiet_NaN(), 1.0)));
  EXPECT_TRUE(std::isnan(clip_scale(std::numeric_limits<double>::infinity(), 0.0)));
  EXPECT_THROW(clip_scale(1.0, std::numeric_limits<double>::quiet_NaN()), Error);
}

TEST(GradClip, ClippedStepEqualsStepOnClippedGradient) {
  CpuBackend backend;
  Rng rng(13);
  AdamWConfig config;
  config.eps = 1e-2;  // so that the gradient's scale matters to the update
  ParameterSet a, b;
  for (ParameterSet* set : {&a, &b}) {
    set->add(backend, "w", {4, 8}, DType::f32, true);
    set->add(backend, "s", {8}, DType::f32, false);
  }
  Parameter &w = a.get("w"), &s = a.get("s"), &w2 = b.get("w"), &s2 = b.get("s");
  for (Parameter* p : {&w, &s}) {
    fill_normal(p->value, rng);
    fill_normal(p->grad, rng, 0.05);
  }
  for (auto [dst, src] : {std::pair{&w2, &w}, std::pair{&s2, &s}}) {
    backend.copy(dst->value, src->value);
    backend.copy(dst->grad, src->grad);
  }
  const double max_norm = 0.2;
  const double norm = global_grad_norm(backend, a);
  const double factor = clip_scale(norm, max_norm);
  ASSERT_LT(factor, 0.9);  // the test must actually clip
  backend.scale(w2.grad, factor);
  backend.scale(s2.grad, factor);
  EXPECT_NEAR(global_grad_norm(backend, b), max_norm, 1e-5);

  AdamW opt_a(backend, a, config), opt_b(backend, b, config);
  opt_a.step(0.1, factor);
  opt_b.step(0.1, 1.0);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(w.value.data<float>()[i], w2.value.data<float>()[i], 1e-6);
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(s.value.data<float>()[i], s2.value.data<float>()[i], 1e-6);
}

// Clipping decided where the update runs (the trainer's path): step(lr, sum of squares,
// max_norm) is exactly step(lr, clip_scale(sqrt(sum), max_norm)); a non-finite sum leaves every
// parameter and moment as it was, and the step still counts.
TEST(GradClip, DeviceSideClippingEqualsTheHostFactor) {
  CpuBackend backend;
  Rng rng(14);
  ParameterSet a, b;
  for (ParameterSet* set : {&a, &b}) {
    set->add(backend, "w", {4, 8}, DType::f32, true);
    set->add(backend, "s", {8}, DType::f32, false);
  }
  for (const char* name : {"w", "s"}) {
    fill_normal(a.get(name).value, rng);
    fill_normal(a.get(name).grad, rng, 0.3);
    backend.copy(b.get(name).value, a.get(name).value);
    backend.copy(b.get(name).grad, a.get(name).grad);
  }
  const double max_norm = 0.5;
  const double factor = clip_scale(global_grad_norm(backend, a), max_norm);
  ASSERT_LT(factor, 0.9);  // the test must actually clip
  Tensor sum = backend.zeros({1}, DType::f64);
  global_grad_sum_squares(backend, b, sum);
  EXPECT_DOUBLE_EQ(std::sqrt(sum.data<double>()[0]), global_grad_norm(backend, a));
  AdamW opt_a(backend, a), opt_b(backend, b);
  opt_a.step(0.1, factor);
  opt_b.step(0.1, sum, max_norm);
  for (const char* name : {"w", "s"})
    EXPECT_EQ(test::max_abs_difference(a.get(name).value, b.get(name).value), 0.0) << name;

  // Non-finite gradients: nothing moves.
  b.get("s").grad.data<float>()[3] = std::numeric_limits<float>::infinity();
  global_grad_sum_squares(backend, b, sum);
  const Tensor w_before = test::clone(b.get("w").value), m_before = test::clone(opt_b.exp_avg("w"));
  opt_b.step(0.1, sum, max_norm);
  EXPECT_EQ(test::max_abs_difference(b.get("w").value, w_before), 0.0);
  EXPECT_EQ(test::max_abs_difference(opt_b.exp_avg("w"), m_before), 0.0);
  EXPECT_EQ(opt_b.step_count(), 2);
  Tensor wrong = backend.zeros({2}, DType::f64);
  EXPECT_THROW(opt_b.step(0.1, wrong, max_norm), Error);
}

// ---- gradient accumulation ------------------------------------------------------------------

// Least squares with a linear layer W [out, in]: L = 1/(2 N) sum over rows ||x W^T - y||^2.
// Forward and backward use only backend ops; the weight gradient ACCUMULATES (beta = 1), as
// every backward op of the backend does. `loss_scale` multiplies the gradient (1/micro_batches).
void least_squares_backward(Backend& backend, Parameter& w, const Tensor& x, const Tensor& y,
                            double loss_scale) {
  const int64_t rows = x.dim(0);
  Tensor residual = backend.zeros({rows, w.value.dim(0)}, DType::f32);
  backend.matmul(residual, x, false, w.value, true, 1.0, 0.0);  // x W^T
  backend.axpy(residual, -1.0, y);                               // - y
  // dL/dW = (1/N) residual^T x, times the micro-batch scale, added into the gradient.
  backend.matmul(w.grad, residual, true, x, false, loss_scale / static_cast<double>(rows), 1.0);
}

TEST(GradientAccumulation, FourMicroBatchesEqualOneBatch) {
  const int64_t rows = 8, in = 6, out = 3, micro = 4, micro_rows = rows / micro;
  CpuBackend backend;
  Rng rng(17);
  Tensor x = Tensor::zeros({rows, in}), y = Tensor::zeros({rows, out});
  fill_normal(x, rng);
  fill_normal(y, rng);

  ParameterSet full, accumulated;
  Parameter& w_full = full.add(backend, "w", {out, in}, DType::f32, true);
  Parameter& w_acc = accumulated.add(backend, "w", {out, in}, DType::f32, true);
  fill_normal(w_full.value, rng, 0.5);
  backend.copy(w_acc.value, w_full.value);
  AdamWConfig config;
  config.eps = 1e-3;  // keeps the update sensitive to the gradient's magnitude
  AdamW opt_full(backend, full, config), opt_acc(backend, accumulated, config);

  for (int step = 1; step <= 3; ++step) {
    full.zero_grad(backend);
    least_squares_backward(backend, w_full, x, y, 1.0);

    accumulated.zero_grad(backend);
    for (int64_t k = 0; k < micro; ++k) {
      const Tensor xk = x.slice(0, k * micro_rows, micro_rows);
      const Tensor yk = y.slice(0, k * micro_rows, micro_rows);
      least_squares_backward(backend, w_acc, xk, yk, 1.0 / micro);
    }

    const double norm = global_grad_norm(backend, full);
    ASSERT_GT(norm, 1e-2);
    const float* g_full = w_full.grad.data<float>();
    const float* g_acc = w_acc.grad.data<float>();
    double max_diff = 0.0;
    for (int64_t i = 0; i < out * in; ++i)
      max_diff = std::max(max_diff, std::abs(double(g_full[i]) - g_acc[i]));
    EXPECT_LT(max_diff, 1e-6 * norm) << "gradient, step " << step;

    opt_full.step(0.05, 1.0);
    opt_acc.step(0.05, 1.0);
    const float* p_full = w_full.value.data<float>();
    const float* p_acc = w_acc.value.data<float>();
    for (int64_t i = 0; i < out * in; ++i)
      ASSERT_NEAR(p_full[i], p_acc[i], 1e-6 * (1.0 + std::abs(p_full[i]))) << "step " << step;
  }
}

}  // namespace
}  // namespace sf
