// cmd_bench.cpp — `stagformer bench`: prefill (pp) and decode (tg) throughput of a model, per
// decode schedule, llama-bench style: a markdown table of tokens/s (mean ± std over
// repetitions), then speed-ups, bandwidth achieved against the machine's measured peak, the
// machine, the date and the exact command. `-o json` prints the same data as JSON. Progress goes
// to stderr. What every number means: bench/README.md; the measuring code: src/infer/bench.h.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>

#include "cli_common.h"
#include "commands.h"
#include "core/error.h"
#include "infer/bench.h"
#include "model/model.h"
#include "model/model_io.h"

namespace sf::cli {

namespace {

using json = nlohmann::json;

struct BenchArgs {
  std::string model_path, config_path, device = "cpu", output = "md", precision;
  std::vector<std::string> overrides;
  std::vector<std::string> decode = {"staggered", "sequential"};
  BenchOptions options;
  bool baseline = false;
  bool no_bandwidth = false;
};

void progress(const std::string& line) {
  std::fprintf(stderr, "bench: %s\n", line.c_str());
  std::fflush(stderr);
}

void run(BenchArgs& a) {
  SF_CHECK(a.model_path.empty() != a.config_path.empty(), "give exactly one of -m MODEL or --config FILE");
  SF_CHECK(a.output == "md" || a.output == "json", "-o/--output '{}': expected md or json", a.output);
  BenchOptions& o = a.options;
  o.modes.clear();
  for (const std::string& name : a.decode) {
    const DecodeMode mode = decode_mode_from_string(name);
    if (std::find(o.modes.begin(), o.modes.end(), mode) == o.modes.end()) o.modes.push_back(mode);
  }

  // The config first: every option is checked before anything large is built or loaded.
  ModelConfig config;
  ModelFiles files;
  if (!a.config_path.empty()) {
    config = config_load(a.config_path, a.overrides);
  } else {
    SF_CHECK(a.overrides.empty(),
             "--set applies to --config only: a MODEL's config must describe its weights");
    files = model_files(a.model_path);
    config = config_load(files.config);
    model_weights_check(files.weights, config);  // before the model is allocated
  }
  bench_options_check(o, config);
  std::vector<std::string> notes;
  ModelConfig baseline_config;
  if (a.baseline) {
    SF_CHECK(config.n_stacks >= 2,
             "--baseline compares a StagFormer with the one-stack model of equal depth; this "
             "model already has n_stacks 1");
    baseline_config = bench_baseline_config(config);
    BenchOptions baseline_options = o;
    baseline_options.modes = {DecodeMode::sequential};
    bench_options_check(baseline_options, baseline_config);
  }
  if (config.n_stacks == 1 &&
      std::find(o.modes.begin(), o.modes.end(), DecodeMode::staggered) != o.modes.end())
    notes.push_back("a one-stack model has a single decode schedule: staggered = sequential, "
                    "measured once as sequential");

  const ThreadChoice thread_choice = set_threads(o.threads);
  const int threads = thread_choice.threads;
  if (!thread_choice.note.empty()) notes.push_back("threads: " + thread_choice.note);
  const MachineInfo machine = machine_describe();
  if (threads > machine.logical_cpus)
    notes.push_back(fmt::format("-t {} is more threads than the {} logical CPUs: oversubscribed",
                                threads, machine.logical_cpus));
  o.threads = threads;  // what the results report
  // On a GPU the kernels read BF16 weights and caches by default (fp32 accumulation).
  const DType compute = compute_dtype_for(a.device, a.precision);
  auto backend = make_backend(a.device);

  // The peak first, while the models' gigabytes are not yet allocated.
  std::optional<MemoryBandwidth> peak;
  if (!a.no_bandwidth) {
    progress(fmt::format("measuring the memory bandwidth of the {} (--no-bandwidth skips it)",
                         device_name(backend->device())));
    peak = backend->measure_memory_bandwidth();
    if (peak) progress(fmt::format("peak memory bandwidth {:.2f} GB/s", peak->peak_gb_s()));
    else notes.push_back("the backend cannot measure its memory bandwidth");
  }

  progress(fmt::format("building {}", bench_model_name(config)));
  Model model(config, *backend, DType::f32, compute);
  std::string weights;
  if (!a.model_path.empty()) {
    model_load_weights(model, files.weights);
    weights = files.weights;
  } else {
    model.initialize();
    weights = fmt::format("random (seed {})", config.seed);
  }
  std::vector<BenchSubject> subjects = {{&model, weights, false, {}}};
  std::unique_ptr<Model> baseline;
  if (a.baseline) {
    progress(fmt::format("building the baseline {}", bench_model_name(baseline_config)));
    baseline = std::make_unique<Model>(baseline_config, *backend, DType::f32, compute);
    baseline->initialize();
    subjects.push_back({baseline.get(),
                        fmt::format("random (seed {}), built by --baseline: n_stacks 1, "
                                    "layers_per_stack {}, separate weights, no cross-attention",
                                    baseline_config.seed, baseline_config.layers_per_stack),
                        true,
                        {DecodeMode::sequential}});
    if (!a.model_path.empty())
      notes.push_back("the baseline has random weights although -m gave weights for the model: "
                      "decode and prefill speed do not depend on the weights' values");
  }

  BenchReport report;
  report.results = bench_run(subjects, o, progress);
  report.speedups = bench_speedups(report.results);
  report.peak = peak;
  report.machine = machine;
  report.date = bench_date_now();
  report.command = command_line();
  report.notes = notes;
  if (a.output == "json")
    std::printf("%s\n", bench_json(report).dump(2).c_str());
  else
    std::printf("%s", bench_markdown(report).c_str());
  std::fflush(stdout);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto a = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand(
      "bench",
      "Measure prefill (pp<P>) and decode (tg<N>) throughput in tokens/s, llama-bench style: one "
      "warm-up, then the mean ± sample std over R repetitions, per decode schedule. tg prefills "
      "one token (not timed) and times N steps of B sequences. Also prints the speed-ups "
      "(staggered / sequential; over the baseline with --baseline), the bandwidth each tg run "
      "achieves (bytes a step must read / step time) against the machine's measured peak, the "
      "machine, the date and the command. Details: bench/README.md.");
  CLI::Option* model = cmd->add_option("-m,--model", a->model_path,
                                       "MODEL: a run or model folder, or a .safetensors file "
                                       "with config.json beside it (its weights are loaded)");
  CLI::Option* config =
      cmd->add_option("--config", a->config_path, "a model config JSON file (random weights)");
  model->excludes(config);
  cmd->add_option("--set", a->overrides, "override a config field: key=value (repeatable; with --config)")
      ->needs(config);
  cmd->add_option("-p,--n-prompt", a->options.prompt_tokens, "prompt tokens of the pp test (0: no pp test)")
      ->capture_default_str();
  cmd->add_option("-n,--n-gen", a->options.gen_tokens, "decode steps of the tg test (0: no tg test)")
      ->capture_default_str();
  cmd->add_option("-d,--depth", a->options.depth,
                  "tokens already in the context when the tg test starts (a random prompt, not "
                  "timed; 0: one token)")
      ->capture_default_str();
  cmd->add_option("-r,--repetitions", a->options.repetitions, "timed repetitions of each test (after one warm-up)")
      ->capture_default_str();
  cmd->add_option("-b,--batch", a->options.batch, "sequences decoded together")->capture_default_str();
  cmd->add_option("--decode", a->decode,
                  "decode schedules to measure, comma-separated: staggered, sequential, recurrent "
                  "(recurrent: shared-weight models with combine = last)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_flag("--baseline", a->baseline,
                "also measure the baseline of equal total depth (n_stacks 1, layers_per_stack "
                "p*h, separate weights, random weights) and print the speed-ups over it");
  cmd->add_option("-t,--threads", a->options.threads,
                  "CPU threads (0: the cores not busy with other work); the staggered schedule spreads each layer's work "
                  "of all the stacks over all of them")
      ->capture_default_str();
  cmd->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("--precision", a->precision,
                  "bf16 or f32: the dtype of the weights the kernels read, the caches and the "
                  "activations (default: bf16 on cuda, f32 on cpu)");
  cmd->add_option("-o,--output", a->output, "md (a markdown table and summary lines) or json")
      ->capture_default_str();
  cmd->add_option("--seed", a->options.seed, "seed of the random prompt and decode tokens")
      ->capture_default_str();
  cmd->add_flag("--no-bandwidth", a->no_bandwidth,
                "skip the memory-bandwidth measurement (no % of peak in the output)");
  cmd->callback([a] { run(*a); });
}

}  // namespace sf::cli
