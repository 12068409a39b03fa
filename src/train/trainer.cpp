// trainer.cpp — the training loop.
#include "train/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/progress.h"
#include "data/batch_loader.h"
#include "data/shards.h"
#include "data/tokenizer_files.h"
#include "distributed/collective.h"
#include "io/atomic_file.h"
#include "model/model.h"
#include "model/model_io.h"
#include "train/adamw.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/interrupt.h"
#include "train/loss_plot.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"
#include "train/run_record.h"
#include "train/step_pipeline.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The last losses a resumed run's metrics log holds up to `step` (its checkpoint), so that a
// segment that trains no step or no validation still reports the run's latest numbers.
void last_logged_losses(const std::string& run_dir, int64_t step, TrainResult& r) {
  const fs::path metrics = fs::path(run_dir) / "metrics.jsonl";
  if (!fs::exists(metrics)) return;
  for (const json& record : metrics_read(metrics.string())) {
    const int64_t at = record["step"].get<int64_t>();
    if (at > step) continue;  // a later attempt that saved nothing
    if (record.contains("loss") && record["loss"].is_number()) {
      r.last_train_loss = record["loss"].get<double>();
      r.last_loss_step = at;
    }
    if (record.contains("val_loss") && record["val_loss"].is_number()) {
      r.last_val_loss = record["val_loss"].get<double>();
      r.last_val_step = at;
    }
    if (record.contains("unigram_val_loss") && record["unigram_val_loss"].is_number())
      r.unigram_val_loss = record["unigram_val_loss"].get<double>();
  }
}

// A resumed run that has nothing left to do: its totals from the checkpoint and its last losses
// from the metrics log, nothing trained, nothing written.
TrainResult finished_run_result(const ResumePlan& plan) {
  TrainResult r;
  const CheckpointProgress progress = checkpoint_latest_progress(plan.options.run_dir);
  r.steps_done = progress.step;
  r.planned_steps = plan.options.steps;
  r.nothing_to_do = true;
  r.segment = plan.segment - 1;
  r.segment_start_step = progress.step;
  r.tokens = progress.tokens_seen;
  r.run_seconds = progress.elapsed_seconds;
  r.last_train_loss = r.last_val_loss = r.unigram_val_loss = std::nan("");
  last_logged_losses(plan.options.run_dir, progress.step, r);
  return r;
}

}  // namespace

void train_options_validate(const TrainOptions& o) {
  std::string problems;
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) problems += "\n  - " + what;
  };
  need(!o.data_dir.empty(), "--data: a data folder is required");
  need(!o.run_dir.empty(), "--out: a run folder is required");
  need(o.steps >= 1, fmt::format("--steps must be >= 1, got {}", o.steps));
  need(o.batch >= 1, fmt::format("--batch must be >= 1, got {}", o.batch));
  need(o.seq >= 1, fmt::format("--seq must be >= 1, got {}", o.seq));
  need(o.grad_accum >= 1, fmt::format("--grad-accum must be >= 1, got {}", o.grad_accum));
  need(o.lr > 0 && std::isfinite(o.lr), fmt::format("--lr must be > 0, got {}", o.lr));
  need(o.eval_every >= 0, "--eval-every must be >= 0");
  need(o.eval_batches >= 1, "--eval-batches must be >= 1");
  need(o.checkpoint_every >= 0, "--checkpoint-every must be >= 0");
  need(o.keep_checkpoints >= 1, "--keep-checkpoints must be >= 1");
  need(o.threads >= 0, "-t/--threads must be >= 0");
  need(o.stop_after >= 0, "--stop-after must be >= 0");
  if (!problems.empty()) fail("invalid training options:" + problems);
}

TrainResult train(const ModelConfig& requested_config, const TrainOptions& requested,
                  Backend& backend) {
  const auto t0 = std::chrono::steady_clock::now();
  SingleProcessCollective single_process;
  Collective& world = requested.collective != nullptr ? *requested.collective : single_process;
  const bool root = world.is_root();  // only rank 0 writes files (docs/data-parallel.md)
  const std::string device(device_name(backend.device()));
  // A resumed run trains with the options recorded in its train.json (run_record.h).
  std::optional<ResumePlan> plan;
  if (requested.resume) {
    plan = plan_resume(requested, device, world.world_size());
    if (plan->nothing_to_do()) return finished_run_result(*plan);
  }
  const TrainOptions& o = plan ? plan->options : requested;
  train_options_validate(o);
  const fs::path run(o.run_dir);
  std::error_code ec;

  // ---- the model config and the run folder ----------------------------------------------------
  ModelConfig config = requested_config;
  if (o.resume) {
    SF_CHECK(checkpoint_exists(o.run_dir), "--resume: {} has no checkpoint to resume from",
             o.run_dir);
    config = config_load((run / "config.json").string());
  } else {
    SF_CHECK(!checkpoint_exists(o.run_dir),
             "{} already holds a training run; use --resume to continue it or choose another --out",
             o.run_dir);
    if (root) fs::create_directories(run, ec);
    SF_CHECK(!ec, "{}: cannot create run folder ({})", o.run_dir, ec.message());
  }
  config.validate(o.resume ? (run / "config.json").string() : "model config");
  SF_CHECK(o.seq <= config.max_seq_len, "--seq {} exceeds the model's max_seq_len {}", o.seq,
           config.max_seq_len);

  SF_CHECK(fs::is_directory(o.data_dir, ec),
           "--data {}: no such folder (make one with `stagformer prepare --out {}`)", o.data_dir,
           o.data_dir);
  SF_CHECK(fs::exists(fs::path(o.data_dir) / "tokenizer.json", ec),
           "--data {}: not a prepared data folder (no tokenizer.json; `stagformer prepare` writes "
           "one beside the shards)", o.data_dir);
  const TokenizerSpec tokenizer = tokenizer_spec_load((fs::path(o.data_dir) / "tokenizer.json").string());
  SF_CHECK(tokenizer.vocab_size <= config.vocab_size,
           "the data's tokenizer '{}' has {} ids but the model's vocab_size is {}", tokenizer.kind,
           tokenizer.vocab_size, config.vocab_size);

  BatchLoader train_data(o.data_dir, "train", o.batch, o.seq, tokenizer.vocab_size);
  // Validation is optional: data prepared with --val-fraction 0 has no val split.
  std::unique_ptr<BatchLoader> val_data;
  if (!list_shards(o.data_dir, "val").empty())
    val_data = std::make_unique<BatchLoader>(o.data_dir, "val", o.batch, o.seq, tokenizer.vocab_size);

  // A resumed run's config is checked against its weights before the model is allocated.
  if (o.resume)
    model_weights_check((fs::path(checkpoint_latest_dir(o.run_dir)) / "model.safetensors").string(),
                        config);
  Model model(config, backend, DType::f32, o.compute_dtype);
  model.set_activation_recomputation(o.recompute);
  AdamWConfig adamw_config;
  adamw_config.beta1 = o.beta1;
  adamw_config.beta2 = o.beta2;
  adamw_config.weight_decay = o.weight_decay;
  AdamW optimizer(backend, model.params(), adamw_config);
  const RunLrSchedule schedule = plan ? plan->schedule : lr_schedule_for_new_run(o);
  validate_lr_schedule(schedule);

  TrainingState state;
  if (o.resume) {
    state = checkpoint_load(o.run_dir, model, optimizer);
    SF_CHECK(state.step <= o.steps, "--resume: the checkpoint is at step {} beyond --steps {}",
             state.step, o.steps);
    train_data.set_position(state.data);
  } else {
    model.initialize();  // the same seed on every rank: identical weights everywhere
    state.rng = Rng(config.seed).state();
    if (root) config_save(config, (run / "config.json").string());
  }
  check_ranks_agree(world, backend, model.params(), state.step);  // same weights, same step
  if (root) {
    tokenizer_spec_save(tokenizer, (run / "tokenizer.json").string());
    // Written once every rank has read the old one (check_ranks_agree is collective).
    const json record = plan ? run_record_resumed(*plan)
                             : run_record_new(o, device, world.world_size(), schedule);
    write_file_atomic((run / "train.json").string(), record.dump(2) + "\n");
  }

  TrainResult result;
  result.unigram_val_loss = val_data && root
                               ? unigram_cross_entropy(o.data_dir, tokenizer.vocab_size)
                               : std::nan("");
  result.last_val_loss = result.last_train_loss = std::nan("");
  if (o.resume && root) {  // until this segment logs its own
    const double unigram = result.unigram_val_loss;
    last_logged_losses(o.run_dir, state.step, result);
    result.unigram_val_loss = unigram;
  }
  const fs::path metrics_path = run / "metrics.jsonl";
  std::unique_ptr<MetricsLog> metrics;  // rank 0's
  if (root) {
    if (!o.resume) fs::remove(metrics_path, ec);  // a stale log of an attempt that saved nothing
    metrics = std::make_unique<MetricsLog>(metrics_path.string(), o.resume ? state.step : -1);
  }
  auto log = [&](const json& record) {
    if (metrics) metrics->append(record);
  };
  if (!o.resume) {
    nlohmann::json first{{"step", 0}, {"parameters", model.params().count_elements()}};
    if (val_data) first["unigram_val_loss"] = result.unigram_val_loss;
    log(first);
  } else {
    log(resume_metrics_record(*plan));  // the segment, and every option it changed
  }

  // Every rank evaluates, identically (same weights, same batches): no rank waits for another.
  auto validate_now = [&] {
    if (!val_data) return;
    const EvalResult r = evaluate_loader(model, *val_data, o.eval_batches);
    result.last_val_loss = r.loss;
    result.last_val_step = state.step;
    result.last_val_tokens = r.tokens;
    log({{"step", state.step}, {"val_loss", r.loss}, {"val_ppl", r.perplexity},
         {"val_tokens", r.tokens}});
  };
  const double elapsed_before = state.elapsed_seconds;  // earlier segments of a resumed run
  auto save_checkpoint = [&] {
    state.elapsed_seconds = elapsed_before + seconds_since(t0);
    if (!root) return;  // the others go on and wait for rank 0 in the next collective
    CheckpointOptions copts;
    copts.keep = o.keep_checkpoints;
    checkpoint_save(o.run_dir, model, optimizer, state, copts);
    model_save(model, o.run_dir);  // the run folder itself is a loadable MODEL
    loss_plot_write({{fmt::format("{} ({}x{})", config.n_stacks == 1 ? "baseline" : "stagformer",
                                  config.n_stacks, config.layers_per_stack),
                      metrics_path.string()}},
                    (run / "loss.svg").string(), "training loss — " + o.run_dir);
  };
  auto last_checkpoint_note = [&] {
    return checkpoint_exists(o.run_dir)
               ? fmt::format("the last good checkpoint is kept in {}/checkpoints", o.run_dir)
               : std::string("no checkpoint was written yet");
  };

  if (!o.resume && o.eval_every > 0) validate_now();

  InterruptGuard interrupt;
  const MicroBatchSchedule micro_batches(world.rank(), world.world_size(), o.grad_accum);
  const int64_t tokens_per_step = o.batch * o.seq * micro_batches.per_update();
  ProgressOptions progress_options;
  if (!o.progress || !root) progress_options.output = ProgressOutput::quiet;
  progress_options.stream = o.progress_stream;
  ProgressBar bar("train", o.steps, "step", progress_options);
  bar.start_from(state.step);  // the rate and ETA count this segment's steps only
  Tensor tokens, targets;
  const auto loop_start = std::chrono::steady_clock::now();
  const int64_t first_step = state.step + 1;
  const int64_t tokens_before = state.tokens_seen;  // earlier segments of a resumed run
  // Step n's loss and norm are read once step n + 1's micro-batches are queued (StepPipeline):
  // the GPU goes on with them while the host logs step n.
  StepPipeline pipeline(model, optimizer, world);
  auto report = [&](const StepReport& r) {
    SF_CHECK(std::isfinite(r.loss) && std::isfinite(r.grad_norm),
             "training diverged at step {}: loss {}, gradient norm {} (try a lower --lr); {}",
             r.step, r.loss, r.grad_norm, last_checkpoint_note());
    result.last_train_loss = r.loss;
    result.last_loss_step = r.step;
    const int64_t tokens_now = (r.step - first_step + 1) * tokens_per_step;  // in this segment
    const double tok_per_s = static_cast<double>(tokens_now) / seconds_since(loop_start);
    log({{"step", r.step}, {"loss", r.loss}, {"lr", r.lr}, {"grad_norm", r.grad_norm},
         {"tokens", tokens_before + tokens_now}, {"tok_per_s", tok_per_s}});
    bar.set_field("loss", fmt::format("{:.4f}", r.loss));
    bar.set_field("tok/s", fmt::format("{:.0f}", tok_per_s));
    bar.update(r.step);
  };
  for (int64_t step = first_step; step <= o.steps; ++step) {
    for (int64_t micro = 0; micro < micro_batches.per_update(); ++micro) {
      train_data.next(tokens, targets);  // every rank reads every micro-batch, trains on its own
      if (micro_batches.is_mine(micro))
        pipeline.add_micro_batch(tokens, targets, micro_batches.loss_scale());
    }
    if (pipeline.pending()) report(pipeline.finish());  // the previous step, while this one runs
    pipeline.queue_update(step, lr_at(schedule, step), o.grad_clip);
    if (o.after_step) o.after_step(step);
    state.step = step;
    state.data = train_data.position();
    state.tokens_seen += tokens_per_step;

    const bool last = step == o.steps;
    const bool stopping = any_rank(world, InterruptGuard::requested()) ||
                          (o.stop_after > 0 && step >= o.stop_after);
    const bool evaluating = last || (o.eval_every > 0 && step % o.eval_every == 0);
    const bool saving =
        last || stopping || (o.checkpoint_every > 0 && step % o.checkpoint_every == 0);
    // Whatever reads the weights or writes files waits for this step's report first: the log
    // then has the step before its validation, and no checkpoint holds a diverged step.
    if (evaluating || saving) report(pipeline.finish());
    if (evaluating) validate_now();
    if (saving) save_checkpoint();
    if (stopping && !last) {
      result.interrupted = true;
      break;
    }
  }
  result.segment_seconds = seconds_since(loop_start);
  bar.finish();
  world.barrier();  // every rank returns once rank 0's files are complete
  result.steps_done = state.step;
  result.planned_steps = o.steps;
  result.tokens = state.tokens_seen;
  result.seconds = seconds_since(t0);
  result.segment = plan ? plan->segment : 1;
  result.segment_start_step = first_step - 1;
  result.segment_steps = state.step - (first_step - 1);
  result.segment_tokens = state.tokens_seen - tokens_before;
  result.run_seconds = elapsed_before + result.seconds;
  return result;
}

}  // namespace sf
