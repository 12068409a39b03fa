// cmd_train.cpp — `stagformer train`: train a StagFormer or baseline model on prepared shards.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_common.h"
#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "cpu/idle_cores.h"
#include "distributed/collective.h"
#include "distributed/rendezvous.h"
#include "model/config.h"
#include "train/run_record.h"
#include "train/trainer.h"
#ifdef SF_HAVE_CUDA
#include "cuda/cuda_backend.h"
#include "cuda/nccl_collective.h"
#endif

namespace sf::cli {

namespace {

struct TrainArgs {
  std::string config_path;
  std::vector<std::string> overrides;
  std::string device = "cpu";
  std::string precision;  // empty: bf16 on cuda, f32 on cpu
  int threads = 0;
  bool no_progress = false;
  TrainOptions options;
  // The options train.json records, by their train.json name: on --resume those given on the
  // command line are checked against the run's (train/run_record.h), the others restored.
  std::vector<std::pair<CLI::Option*, std::string>> recorded;
  CLI::Option* device_option = nullptr;
  CLI::Option* precision_option = nullptr;
};

std::string seconds_text(double seconds) {
  return seconds >= 60 ? fmt::format("{:.1f} s ({})", seconds, format_duration(seconds))
                       : fmt::format("{:.1f} s", seconds);
}

std::string rate_text(double amount, double seconds) {
  if (!(seconds > 0)) return "?";
  const double rate = amount / seconds;
  return rate >= 100 ? fmt::format("{:.0f}", rate) : fmt::format("{:.3g}", rate);
}

// The summary: this segment's true rate (its own steps over its own time) apart from the run's
// totals over all its segments.
void print_summary(const TrainOptions& options, const TrainResult& r) {
  if (r.nothing_to_do) {
    std::printf("%s is already at step %lld of its planned %lld: nothing to train (to train "
                "longer, resume with a larger --steps: docs/training.md, \"Extending a run\")\n",
                options.run_dir.c_str(), static_cast<long long>(r.steps_done),
                static_cast<long long>(r.planned_steps));
  } else {
    if (r.interrupted)
      std::printf("stopped after %lld steps (of %lld planned)\n",
                  static_cast<long long>(r.steps_done), static_cast<long long>(r.planned_steps));
    else
      std::printf("finished after %lld steps\n", static_cast<long long>(r.steps_done));
    std::printf("%s: steps %lld-%lld (%lld step%s, %lld tokens) in %s: %s step/s, %s tok/s\n",
                r.segment == 1 ? "this run" : fmt::format("segment {}", r.segment).c_str(),
                static_cast<long long>(r.segment_start_step + 1),
                static_cast<long long>(r.steps_done), static_cast<long long>(r.segment_steps),
                r.segment_steps == 1 ? "" : "s",
                static_cast<long long>(r.segment_tokens), seconds_text(r.segment_seconds).c_str(),
                rate_text(static_cast<double>(r.segment_steps), r.segment_seconds).c_str(),
                rate_text(static_cast<double>(r.segment_tokens), r.segment_seconds).c_str());
  }
  if (r.nothing_to_do || r.segment > 1)
    std::printf("whole run: %lld steps, %lld tokens, %s of training over %d segment%s\n",
                static_cast<long long>(r.steps_done), static_cast<long long>(r.tokens),
                seconds_text(r.run_seconds).c_str(), r.segment, r.segment == 1 ? "" : "s");
  auto loss = [](double v) { return std::isnan(v) ? std::string("n/a") : fmt::format("{:.4f}", v); };
  // A loss logged before the last step says at which step.
  auto at = [&](int64_t step) {
    return step != r.steps_done ? fmt::format(" (step {})", step) : std::string();
  };
  std::string line = fmt::format("{}train loss {}", r.nothing_to_do ? "last logged: " : "",
                                 loss(r.last_train_loss));
  if (!std::isnan(r.last_train_loss)) line += at(r.last_loss_step);
  line += " | val loss " + loss(r.last_val_loss);
  // (on the first --eval-batches batches: an estimate; `stagformer eval` scores the whole split)
  if (!std::isnan(r.last_val_loss))
    line += fmt::format(" (ppl {:.2f}{}{})", std::exp(r.last_val_loss),
                        r.last_val_step != r.steps_done
                            ? fmt::format(", step {}", r.last_val_step)
                            : std::string(),
                        r.last_val_tokens > 0
                            ? fmt::format(", on {} tokens", r.last_val_tokens)
                            : std::string());
  line += " | unigram val loss " + loss(r.unigram_val_loss);
  std::printf("%s\n", line.c_str());
}

ModelConfig config_from_args(const TrainArgs& a) {
  if (a.config_path.empty()) {
    SF_CHECK(a.options.resume, "--config is required (a model config JSON, e.g. configs/demo-stagformer.json)");
    return ModelConfig{};  // unused: the run folder's config is loaded
  }
  return config_load(a.config_path, a.overrides);
}

// The backend and the collective of this process: with WORLD_SIZE > 1 (scripts/launch.sh,
// torchrun) one rank of a data-parallel job on GPU LOCAL_RANK, else the device alone.
std::unique_ptr<Collective> join_job(const DistEnv& dist, const std::string& device,
                                     std::unique_ptr<Backend>& backend) {
  if (!dist.distributed()) {
    backend = make_backend(device);
    return std::make_unique<SingleProcessCollective>();
  }
  SF_CHECK(device == "cuda",
           "WORLD_SIZE={}: data-parallel training runs one process per GPU and needs --device "
           "cuda (NCCL); --device {} trains in one process (unset WORLD_SIZE)",
           dist.world_size, device);
#ifdef SF_HAVE_CUDA
  backend = make_cuda_backend(dist.local_rank);
  auto collective = std::make_unique<NcclCollective>(dist, dist.local_rank, cuda_stream(*backend));
  if (collective->is_root())
    std::fprintf(stderr, "data parallel: %d processes, %s, %s\n", dist.world_size,
                 NcclCollective::version().c_str(), dist_env_describe(dist).c_str());
  return collective;
#else
  backend = make_backend(device);  // throws, naming the missing CUDA backend
  fail("data-parallel training needs the CUDA backend, which this build does not have");
#endif
}

// set_threads, saying so when busy cores were left out.
int set_train_threads(int requested) {
  const ThreadChoice threads = set_threads(requested);
  if (!threads.note.empty()) std::fprintf(stderr, "train: threads: %s\n", threads.note.c_str());
  return threads.threads;
}

// The thread count of a resumed run without -t: the run's own (CPU results depend on it), unless
// the run did not record one (the default then) or this machine has fewer cores (then the cores
// it has, recorded as a change).
void restore_threads(TrainOptions& options, const std::string& device,
                     const DistEnv& dist) {
  const ResumePlan peek = plan_resume(options, device, dist.world_size);
  const int run_threads = peek.options.threads;
  if (run_threads == 0) {
    options.threads = set_train_threads(0);
    return;
  }
  const CoreAvailability cores = measure_core_availability();
  if (run_threads > cores.usable) {
    options.threads = set_threads(cores.usable).threads;
    options.resume_given.push_back("threads");
    std::fprintf(stderr,
                 "train: threads: the run trained with %d threads, this machine has %d cores: %d from "
                 "here on (CPU results then differ slightly from a run that kept %d)\n",
                 run_threads, cores.usable, cores.usable, run_threads);
    return;
  }
  options.threads = set_threads(run_threads).threads;
  if (run_threads > cores.free && peek.device != "cuda")
    std::fprintf(stderr,
                 "train: threads: %d, the run's (for a bit-identical continuation), but only %d of %d "
                 "cores are free: -t %d trains faster here, with slightly different numbers\n",
                 run_threads, cores.free, cores.usable, cores.free);
}

void run(const TrainArgs& a) {
  const DistEnv dist = dist_env_from_process();
  TrainOptions options = a.options;
  options.progress = !a.no_progress;
  std::string device = a.device;
  ModelConfig config = config_from_args(a);
  if (!options.resume) {
    SF_CHECK(!options.data_dir.empty(), "--data is required (a folder made by `stagformer prepare`)");
    SF_CHECK(!options.override_resume, "--override-resume applies only with --resume");
    options.compute_dtype = compute_dtype_for(device, a.precision);
    options.threads = set_train_threads(a.threads);
  } else {
    const std::string saved_path = options.run_dir + "/config.json";
    if (!a.config_path.empty()) {
      // Resuming keeps the run's own config; a --config given as well must agree with it.
      const ModelConfig saved = config_load(saved_path);
      SF_CHECK(config_to_json(saved) == config_to_json(config),
               "--resume: {} differs from the run's config {}; drop --config to resume",
               a.config_path, saved_path);
    } else if (!a.overrides.empty()) {
      SF_CHECK(config_to_json(config_load(saved_path, a.overrides)) ==
                   config_to_json(config_load(saved_path)),
               "--resume: --set would change the run's model config {} (a model cannot change "
               "shape or seed on resume); drop --set to resume",
               saved_path);
    }
    for (const auto& [option, key] : a.recorded)
      if (option->count() > 0) options.resume_given.push_back(key);
    const bool device_given = a.device_option->count() > 0;
    if (a.precision_option->count() > 0) {
      options.resume_given.push_back("compute_dtype");
      SF_CHECK(a.precision == "f32" || a.precision == "bf16",
               "--precision '{}': expected bf16 or f32", a.precision);
      options.compute_dtype = a.precision == "bf16" ? DType::bf16 : DType::f32;
    } else {
      options.compute_dtype = compute_dtype_for(device, "");  // if the run did not record it
    }
    if (a.threads > 0)
      options.threads = set_train_threads(a.threads);
    else
      restore_threads(options, device_given ? device : "", dist);
    // The run's options (refusing any given differently without --override-resume), before a
    // device is set up for them.
    const ResumePlan plan = plan_resume(options, device_given ? device : "", dist.world_size);
    device = plan.device;
    compute_dtype_for(device, plan.options.compute_dtype == DType::bf16 ? "bf16" : "f32");
    if (dist.rank == 0)
      for (const std::string& line : describe_resume(plan)) std::printf("resume: %s\n", line.c_str());
    std::fflush(stdout);
  }
  std::unique_ptr<Backend> backend;
  const std::unique_ptr<Collective> collective = join_job(dist, device, backend);
  options.collective = collective.get();
  const TrainResult r = train(config, options, *backend);
  if (!collective->is_root()) return;  // rank 0 reports for the job
  print_summary(options, r);
  std::printf("model: %s (resume with --resume --out %s)\n", options.run_dir.c_str(),
              options.run_dir.c_str());
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto args = std::make_shared<TrainArgs>();
  TrainOptions& o = args->options;
  CLI::App* cmd = app.add_subcommand(
      "train",
      "Train a model on prepared shards.\n"
      "Example: stagformer train --config configs/demo-stagformer.json --data data/moby "
      "--out runs/stag --steps 300\n"
      "Several GPUs (data parallel, docs/data-parallel.md): bash scripts/launch.sh --nproc N -- "
      "stagformer train ... --device cuda");
  cmd->add_option("--config", args->config_path, "Model config JSON (see docs/model.md)");
  cmd->add_option("--set", args->overrides, "Override a config field: key=value (repeatable)");
  // The options train.json records: on --resume each is restored from the run unless given.
  auto recorded = [&](CLI::Option* option, const char* key) {
    args->recorded.emplace_back(option, key);
    return option;
  };
  recorded(cmd->add_option("--data", o.data_dir,
                           "Folder of shards made by `stagformer prepare` (required, except with "
                           "--resume)"),
           "data_dir");
  cmd->add_option("--out", o.run_dir, "Run folder (weights, checkpoints, metrics, loss plot)")->required();
  recorded(cmd->add_option("--steps", o.steps,
                           "Optimizer updates in the whole run (with --resume: more than the "
                           "run's extends it)")->capture_default_str(), "steps");
  recorded(cmd->add_option("--batch", o.batch, "Sequences per micro-batch (per process)")->capture_default_str(), "batch");
  recorded(cmd->add_option("--seq", o.seq, "Tokens per sequence")->capture_default_str(), "seq");
  recorded(cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per update (per process)")->capture_default_str(), "grad_accum");
  recorded(cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str(), "lr");
  recorded(cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Cosine floor / peak")->capture_default_str(), "min_lr_ratio");
  recorded(cmd->add_option("--warmup", o.warmup, "Warmup updates (-1: min(100, steps/10))")->capture_default_str(), "warmup");
  recorded(cmd->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str(), "weight_decay");
  recorded(cmd->add_option("--beta1", o.beta1, "AdamW beta1")->capture_default_str(), "beta1");
  recorded(cmd->add_option("--beta2", o.beta2, "AdamW beta2")->capture_default_str(), "beta2");
  recorded(cmd->add_option("--grad-clip", o.grad_clip, "Global gradient-norm clip (0: off)")->capture_default_str(), "grad_clip");
  recorded(cmd->add_option("--eval-every", o.eval_every, "Validate every N updates (0: only at the end)")->capture_default_str(), "eval_every");
  recorded(cmd->add_option("--eval-batches", o.eval_batches, "Validation batches")->capture_default_str(), "eval_batches");
  recorded(cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N updates (0: at the end)")->capture_default_str(), "checkpoint_every");
  recorded(cmd->add_option("--keep-checkpoints", o.keep_checkpoints, "Checkpoints kept on disk")->capture_default_str(), "keep_checkpoints");
  cmd->add_flag("--resume", o.resume,
                "Continue the run in --out from its latest checkpoint, with the options its "
                "train.json records (docs/training.md)");
  cmd->add_flag("--override-resume", o.override_resume,
                "With --resume: allow options that differ from the run's (recorded in train.json)");
  cmd->add_option("--stop-after", o.stop_after, "Stop after this update with a checkpoint (resume later)");
  args->device_option = cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  args->precision_option = cmd->add_option(
      "--precision", args->precision,
      "Activations: bf16 (mixed precision, cuda default) or f32 (cpu default)");
  recorded(cmd->add_flag("--recompute,!--no-recompute", o.recompute,
                         "Recompute each layer's activations in backward (long sequences in less "
                         "memory)"),
           "recompute");
  recorded(cmd->add_option("-t,--threads", args->threads,
                           "CPU threads (0: the cores not busy with other work; with --resume: "
                           "the run's, for a bit-identical continuation)"),
           "threads");
  cmd->add_flag("--no-progress", args->no_progress, "No progress bar");
  cmd->callback([args] { run(*args); });
}

}  // namespace sf::cli
