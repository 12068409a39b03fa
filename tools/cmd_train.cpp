// cmd_train.cpp — `stagformer train`: train a StagFormer or baseline model on prepared shards.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_common.h"
#include "commands.h"
#include "core/error.h"
#include "distributed/collective.h"
#include "distributed/rendezvous.h"
#include "model/config.h"
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
};

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

void run(const TrainArgs& a) {
  set_threads(a.threads);
  std::unique_ptr<Backend> backend;
  const std::unique_ptr<Collective> collective =
      join_job(dist_env_from_process(), a.device, backend);
  TrainOptions options = a.options;
  options.collective = collective.get();
  options.progress = !a.no_progress;
  options.compute_dtype = compute_dtype_for(a.device, a.precision);
  ModelConfig config = config_from_args(a);
  if (a.options.resume && !a.config_path.empty()) {
    // Resuming keeps the run's own config; a --config given as well must agree with it.
    const ModelConfig saved = config_load(options.run_dir + "/config.json");
    SF_CHECK(config_to_json(saved) == config_to_json(config),
             "--resume: {} differs from the run's config {}/config.json; drop --config to resume",
             a.config_path, options.run_dir);
  }
  const TrainResult r = train(config, options, *backend);
  if (!collective->is_root()) return;  // rank 0 reports for the job
  std::printf("%s after %lld steps (%lld tokens, %.1f s, %.0f tok/s)\n",
              r.interrupted ? "stopped" : "finished", static_cast<long long>(r.steps_done),
              static_cast<long long>(r.tokens), r.seconds,
              r.seconds > 0 ? static_cast<double>(r.tokens) / r.seconds : 0.0);
  std::printf("train loss %.4f | val loss %.4f (ppl %.2f) | unigram val loss %.4f\n",
              r.last_train_loss, r.last_val_loss, std::exp(r.last_val_loss), r.unigram_val_loss);
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
  cmd->add_option("--data", o.data_dir, "Folder of shards made by `stagformer prepare`")->required();
  cmd->add_option("--out", o.run_dir, "Run folder (weights, checkpoints, metrics, loss plot)")->required();
  cmd->add_option("--steps", o.steps, "Optimizer updates in the whole run")->capture_default_str();
  cmd->add_option("--batch", o.batch, "Sequences per micro-batch (per process)")->capture_default_str();
  cmd->add_option("--seq", o.seq, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--grad-accum", o.grad_accum, "Micro-batches per update (per process)")->capture_default_str();
  cmd->add_option("--lr", o.lr, "Peak learning rate")->capture_default_str();
  cmd->add_option("--min-lr-ratio", o.min_lr_ratio, "Cosine floor / peak")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Warmup updates (-1: min(100, steps/10))")->capture_default_str();
  cmd->add_option("--weight-decay", o.weight_decay, "AdamW decoupled weight decay")->capture_default_str();
  cmd->add_option("--grad-clip", o.grad_clip, "Global gradient-norm clip (0: off)")->capture_default_str();
  cmd->add_option("--eval-every", o.eval_every, "Validate every N updates (0: only at the end)")->capture_default_str();
  cmd->add_option("--eval-batches", o.eval_batches, "Validation batches")->capture_default_str();
  cmd->add_option("--checkpoint-every", o.checkpoint_every, "Checkpoint every N updates (0: at the end)")->capture_default_str();
  cmd->add_option("--keep-checkpoints", o.keep_checkpoints, "Checkpoints kept on disk")->capture_default_str();
  cmd->add_flag("--resume", o.resume, "Continue the run in --out from its latest checkpoint");
  cmd->add_option("--stop-after", o.stop_after, "Stop after this update with a checkpoint (resume later)");
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", args->precision,
                  "Activations: bf16 (mixed precision, cuda default) or f32 (cpu default)");
  cmd->add_flag("--recompute", o.recompute,
                "Recompute each layer's activations in backward (long sequences in less memory)");
  cmd->add_option("-t,--threads", args->threads, "CPU threads (0: all cores)");
  cmd->add_flag("--no-progress", args->no_progress, "No progress bar");
  cmd->callback([args] { run(*args); });
}

}  // namespace sf::cli
