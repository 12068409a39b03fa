// cmd_bench_train.cpp — `stagformer bench-train`: training throughput (tokens/s) and MFU of a
// model config on a device, as a markdown table (or JSON) with the device, date and command.
// What a step includes and how MFU is counted: src/train/train_bench.h, src/train/flops.h.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "cli_common.h"
#include "commands.h"
#include "core/error.h"
#include "model/config.h"
#include "train/train_bench.h"
#ifdef SF_HAVE_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace sf::cli {

namespace {

struct BenchTrainArgs {
  std::string config_path, device = "cuda", precision, output = "md";
  std::vector<std::string> overrides;
  double peak_tflops = 0.0;
  int threads = 0;
  TrainBenchOptions options;
};

std::string today() {
  const std::time_t now = std::time(nullptr);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d", std::gmtime(&now));
  return text;
}

void run(BenchTrainArgs& a) {
  SF_CHECK(a.output == "md" || a.output == "json", "-o/--output '{}': expected md or json", a.output);
  set_threads(a.threads);
  const ModelConfig config = config_load(a.config_path, a.overrides);
  auto backend = make_backend(a.device);
  TrainBenchOptions o = a.options;
  o.compute_dtype = compute_dtype_for(a.device, a.precision);
  std::string device_name = "CPU";
#ifdef SF_HAVE_CUDA
  if (a.device == "cuda") device_name = cuda_device_description(*backend);
#endif
  // MFU needs a peak: the one given, else the GPU's known bf16 peak (none is assumed for f32).
  o.peak_flops = a.peak_tflops * 1e12;
  if (o.peak_flops <= 0 && a.device == "cuda" && o.compute_dtype == DType::bf16)
    o.peak_flops = known_bf16_peak_flops(device_name);
  const TrainBenchResult r = bench_training(config, o, *backend);

  const std::string model = fmt::format("{}x{} {} d{} V{}", config.n_stacks, config.layers_per_stack,
                                        config.n_stacks == 1 ? "baseline" : to_string(config.weights),
                                        config.d_model, config.vocab_size);
  if (a.output == "json") {
    nlohmann::json j{{"model", model},
                     {"config", a.config_path},
                     {"parameters", r.parameters},
                     {"device", device_name},
                     {"precision", o.compute_dtype == DType::bf16 ? "bf16" : "f32"},
                     {"batch", o.batch},
                     {"seq", o.seq},
                     {"steps", o.steps},
                     {"median_step_ms", r.median_step_seconds * 1e3},
                     {"step_ms", r.step_seconds},
                     {"tokens_per_second", r.tokens_per_second},
                     {"flops_per_token", r.flops_per_token},
                     {"achieved_tflops", r.achieved_flops / 1e12},
                     {"peak_tflops", o.peak_flops / 1e12},
                     {"mfu", r.mfu},
                     {"recompute", o.recompute},
                     {"graphs", o.record_steps},
                     {"overwrite_gradients", o.overwrite_gradients},
                     {"activation_gib", r.activation_bytes / 1073741824.0},
                     {"last_loss", r.last_loss},
                     {"date", today()},
                     {"command", command_line()}};
    std::printf("%s\n", j.dump(2).c_str());
    return;
  }
  std::printf("| model | params | precision | batch x seq | step ms (median of %lld) | tokens/s | TFLOP/s | MFU |\n",
              static_cast<long long>(o.steps));
  std::printf("|---|---:|---|---|---:|---:|---:|---:|\n");
  // (%.3g: a CPU's fraction of a TFLOP/s must not print as 0.0)
  std::printf("| %s | %.1fM | %s | %lld x %lld | %.2f | %.0f | %.3g | %s |\n", model.c_str(),
              r.parameters / 1e6, o.compute_dtype == DType::bf16 ? "bf16" : "f32",
              static_cast<long long>(o.batch), static_cast<long long>(o.seq),
              r.median_step_seconds * 1e3, r.tokens_per_second, r.achieved_flops / 1e12,
              r.mfu > 0 ? fmt::format("{:.1f}%", 100 * r.mfu).c_str() : "n/a");
  const std::string peak = o.peak_flops > 0
                               ? fmt::format("peak {:.1f} TFLOP/s", o.peak_flops / 1e12)
                               : std::string("no known peak (--peak-tflops gives one for MFU)");
  std::printf("\ndevice: %s; %s; FLOPs/token %.4g (6N + 12*A*H*hd*T); loss %.4f\n",
              device_name.c_str(), peak.c_str(), r.flops_per_token, r.last_loss);
  std::printf("activations: %.2f GiB%s\n", r.activation_bytes / 1073741824.0,
              o.recompute ? " (recomputation on)" : "");
  std::printf("date: %s; command: %s\n", today().c_str(), command_line().c_str());
}

}  // namespace

void add_bench_train_command(CLI::App& app) {
  auto args = std::make_shared<BenchTrainArgs>();
  TrainBenchOptions& o = args->options;
  CLI::App* cmd = app.add_subcommand(
      "bench-train",
      "Training throughput (tokens/s) and MFU of a model config.\n"
      "Example: stagformer bench-train --config configs/gpt2-small-stagformer-2x6.json "
      "--device cuda --batch 16 --seq 1024");
  cmd->add_option("--config", args->config_path, "Model config JSON")->required();
  cmd->add_option("--set", args->overrides, "Override a config field: key=value (repeatable)");
  cmd->add_option("--device", args->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", args->precision, "bf16 (cuda default) or f32");
  cmd->add_option("--batch", o.batch, "Sequences per step")->capture_default_str();
  cmd->add_option("--seq", o.seq, "Tokens per sequence")->capture_default_str();
  cmd->add_option("--steps", o.steps, "Timed steps")->capture_default_str();
  cmd->add_option("--warmup", o.warmup, "Untimed steps first")->capture_default_str();
  cmd->add_option("--data", o.data_dir, "Prepared data folder (default: random token ids)");
  cmd->add_flag("--recompute", o.recompute, "Activation recomputation (less memory, ~1 more forward)");
  cmd->add_flag("!--no-graphs", o.record_steps,
                "Run every step directly instead of replaying a recorded one (CUDA graphs)");
  cmd->add_flag("!--zero-grad", o.overwrite_gradients,
                "Zero every gradient before a step and add into them, instead of letting the "
                "step's backward write them (for comparisons)");
  cmd->add_option("--peak-tflops", args->peak_tflops,
                  "Device peak for MFU (default: known bf16 peak of the GPU)");
  cmd->add_option("-o,--output", args->output, "md or json")->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "CPU threads (0: the cores not busy with other work)");
  cmd->callback([args] { run(*args); });
}

}  // namespace sf::cli
