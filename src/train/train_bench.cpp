// train_bench.cpp — timed training steps (see train_bench.h).
#include "train/train_bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/rng.h"
#include "data/batch_loader.h"
#include "distributed/collective.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/flops.h"
#include "train/step_pipeline.h"

namespace sf {

namespace {

void fill_random_ids(Tensor& t, int64_t vocab, Rng& rng) {
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = static_cast<int32_t>(rng.below(vocab));
}

}  // namespace

TrainBenchResult bench_training(const ModelConfig& config, const TrainBenchOptions& o,
                                Backend& backend) {
  SF_CHECK(o.batch >= 1 && o.seq >= 1 && o.steps >= 1 && o.warmup >= 0,
           "bench-train: --batch, --seq, --steps must be >= 1 and --warmup >= 0");
  SF_CHECK(o.seq <= config.max_seq_len, "bench-train: --seq {} exceeds the model's max_seq_len {}",
           o.seq, config.max_seq_len);
  Model model(config, backend, DType::f32, o.compute_dtype);
  model.set_activation_recomputation(o.recompute);
  model.set_step_recording(o.record_steps);
  model.initialize();
  AdamW optimizer(backend, model.params());

  Tensor tokens = Tensor::zeros({o.batch, o.seq}, DType::i32);
  Tensor targets = Tensor::zeros({o.batch, o.seq}, DType::i32);
  std::unique_ptr<BatchLoader> loader;
  if (!o.data_dir.empty())
    loader = std::make_unique<BatchLoader>(o.data_dir, "train", o.batch, o.seq,
                                           static_cast<int32_t>(config.vocab_size));
  Rng rng(config.seed);
  auto next_batch = [&] {
    if (loader) {
      loader->next(tokens, targets);
    } else {
      fill_random_ids(tokens, config.vocab_size, rng);
      fill_random_ids(targets, config.vocab_size, rng);
    }
  };

  TrainBenchResult r;
  r.parameters = model.params().count_elements();
  // Steps run as the trainer runs them (StepPipeline): step i's loss and norm are read once step
  // i + 1's forward and backward are queued. A step's time is the wall time from the previous
  // step's report to its own: in the steady state, what one step costs the training loop.
  SingleProcessCollective one_process;
  StepPipeline pipeline(model, optimizer, one_process);
  pipeline.set_overwrite_gradients(o.overwrite_gradients);
  auto previous_report = std::chrono::steady_clock::now();
  auto report = [&](const StepReport& step) {
    SF_CHECK(std::isfinite(step.loss) && std::isfinite(step.grad_norm),
             "bench-train: step {} gave loss {} and gradient norm {}", step.step, step.loss,
             step.grad_norm);
    r.last_loss = step.loss;
    const auto now = std::chrono::steady_clock::now();
    if (step.step >= o.warmup)
      r.step_seconds.push_back(std::chrono::duration<double>(now - previous_report).count());
    previous_report = now;
  };
  for (int64_t i = 0; i < o.warmup + o.steps; ++i) {
    next_batch();  // host-side work of a real step too (the trainer reads shards the same way)
    pipeline.add_micro_batch(tokens, targets, 1.0);
    if (pipeline.pending()) report(pipeline.finish());
    pipeline.queue_update(i, 3e-4, 1.0);
  }
  report(pipeline.finish());
  r.activation_bytes = model.activation_bytes();
  std::vector<double> sorted = r.step_seconds;
  std::sort(sorted.begin(), sorted.end());
  r.median_step_seconds = sorted[sorted.size() / 2];
  r.tokens_per_second = static_cast<double>(o.batch * o.seq) / r.median_step_seconds;
  r.flops_per_token = training_flops(config, o.seq).per_token;
  r.achieved_flops = r.flops_per_token * r.tokens_per_second;
  r.mfu = o.peak_flops > 0 ? r.achieved_flops / o.peak_flops : 0.0;
  return r;
}

double known_bf16_peak_flops(const std::string& name) {
  if (name.find("H100") != std::string::npos)
    return name.find("PCIe") != std::string::npos ? 756e12 : 989.4e12;
  if (name.find("H200") != std::string::npos) return 989.4e12;
  return 0.0;
}

}  // namespace sf
