// bench.h — decode and prefill throughput of the incremental decoder, measured the way
// llama-bench measures it (bench.cpp), with the bytes a decode step reads (its schedule's own
// count, infer/decode_schedule.h) for the bandwidth achieved, and the report `stagformer bench`
// prints (markdown table or JSON; bench_report.cpp).
//
// Tests (bench/README.md explains every number):
//   pp<P>  prefill: B sequences, each a random prompt of P tokens through Decoder::prefill, one
//          after the other; tokens/s = B*P / time. Prefill is the same pass for every decode
//          schedule (model/decoding.h), so it is measured once per model; its row reads decode
//          "any".
//   tg<N>  generation: B sequences are prefilled with ONE random token (not timed: the decoder
//          needs a first position in its caches; llama-bench's tg also starts from an empty
//          context), then N decode steps of B random tokens are timed; tokens/s = B*N / time.
//          "tg<N> @ d<D>" (-d D): the prefill is a random prompt of D tokens, so the steps read
//          a context of D.. tokens (llama-bench's depth). Measured per decode schedule; the
//          schedules' repetitions alternate, so a change of load hits all of them alike.
// Every test runs one warm-up repetition that is not counted, then `repetitions` timed ones
// (std::chrono::steady_clock); results are the mean and the sample standard deviation of the
// per-repetition tokens/s, as llama-bench reports them.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "core/memory_bandwidth.h"
#include "infer/decode_schedule.h"
#include "infer/decoder.h"
#include "model/config.h"
#include "model/model.h"

namespace sf {

// ---- running the tests -------------------------------------------------------------------------

struct BenchOptions {
  int64_t prompt_tokens = 512;  // -p: pp test length (0: no pp test)
  int64_t gen_tokens = 128;     // -n: tg test length (0: no tg test)
  int64_t depth = 0;            // -d: tokens already in the context when tg starts (0: one)
  int repetitions = 5;          // -r: timed repetitions (plus one warm-up)
  int64_t batch = 1;            // -b: sequences decoded together
  std::vector<DecodeMode> modes = {DecodeMode::staggered, DecodeMode::sequential};
  int threads = 0;              // -t: CPU threads the caller set (reported; 0: all cores)
  uint64_t seed = 1234;         // random prompt and generation tokens
};

// Checks the options against a model config before anything is built. Errors: repetitions < 1,
// batch < 1, threads < 0, negative lengths or depth, both lengths 0, no decode mode, a prompt
// longer than the context, max(1, depth) + N tokens beyond the context, recurrent on a model
// that cannot run it.
void bench_options_check(const BenchOptions& options, const ModelConfig& config);

// The modes actually measured for a config: duplicates dropped; a one-stack model has a single
// schedule, so staggered and sequential collapse into sequential.
std::vector<DecodeMode> bench_modes_for(const BenchOptions& options, const ModelConfig& config);

// The baseline of equal total depth: n_stacks 1, layers_per_stack p*h, separate weights,
// combine last, no cross-attention (cross_window 0); every other field as in `config`.
ModelConfig bench_baseline_config(const ModelConfig& config);

// "stagformer 2x6 d768" (plus "shared", "w<window>", "linear" where they apply);
// "baseline 1x12 d768" for a one-stack model.
std::string bench_model_name(const ModelConfig& config);

struct BenchResult {
  std::string model;     // bench_model_name
  std::string weights;   // where the weights came from: a file, or "random (seed S)"
  bool baseline = false; // the model built by --baseline
  int64_t params = 0;
  std::string backend;   // "CPU", or the device and its compute dtype ("CUDA BF16")
  int threads = 0;       // resolved total thread count
  int64_t batch = 0;
  std::string decode;    // "staggered", "sequential", "recurrent", or "any" (pp)
  std::string test;      // "pp512", "tg128"
  int64_t tokens = 0;    // tokens per repetition: B*P or B*N
  std::vector<double> seconds;            // per timed repetition
  std::vector<double> tokens_per_second;  // per timed repetition
  double mean_ts = 0.0, stddev_ts = 0.0;
  // tg only: bytes per step and the bandwidth achieved (mean and sample std over repetitions).
  std::optional<DecodeStepBytes> step_bytes;
  double mean_gb_s = 0.0, stddev_gb_s = 0.0;

  bool is_tg() const { return step_bytes.has_value(); }
};

// One model to measure.
struct BenchSubject {
  Model* model = nullptr;
  std::string weights;    // see BenchResult::weights
  bool baseline = false;
  std::vector<DecodeMode> modes;  // tg schedules for this model; empty: the options' modes
};

// Called with a short line before and after each test (the CLI prints them on stderr).
using BenchProgress = std::function<void(const std::string& line)>;

// Runs pp (once) and tg (per mode of bench_modes_for) on every subject, in order, after
// checking the options against each subject's config (bench_options_check). The bytes a tg step
// reads are what its DecodeSchedule reports. Threads are the caller's to set (the CLI sets
// them from -t); options.threads is what the results report.
std::vector<BenchResult> bench_run(const std::vector<BenchSubject>& subjects,
                                   const BenchOptions& options,
                                   const BenchProgress& progress = nullptr);

// ---- the report --------------------------------------------------------------------------------

// A ratio of two results' mean tokens/s; the error propagates the relative standard deviations.
struct BenchSpeedup {
  std::string name;         // "tg64: staggered / sequential"
  std::string description;  // what it compares, in words
  double value = 0.0, stddev = 0.0;
};
// staggered / sequential and recurrent / sequential (same model, tg), the model's staggered and
// sequential tg over the baseline's, and the prefill ratio model / baseline (pp): those whose
// results exist.
std::vector<BenchSpeedup> bench_speedups(const std::vector<BenchResult>& results);

struct MachineInfo {
  std::string cpu;        // "model name" of /proc/cpuinfo ("unknown CPU" when absent)
  int logical_cpus = 0;   // processors this process may use
  // 1-minute load average when described (/proc/loadavg; < 0 when unknown): a busy machine
  // explains noisy numbers.
  double load_average = -1.0;
  // Variables that change how threads run, as set ("OMP_WAIT_POLICY=passive"): OMP_*, GOMP_*,
  // OPENBLAS_*.
  std::vector<std::string> environment;
};
MachineInfo machine_describe();

struct BenchReport {
  std::vector<BenchResult> results;
  std::vector<BenchSpeedup> speedups;
  std::optional<MemoryBandwidth> peak;  // absent with --no-bandwidth
  MachineInfo machine;
  std::string date;     // UTC, ISO 8601
  std::string command;  // the exact command line
  std::vector<std::string> notes;  // remarks printed under the table
};

// The current UTC time as "2025-01-31T12:34:56Z".
std::string bench_date_now();

// llama-bench-style markdown: the table, then speed-ups, bandwidth, machine, date, command.
std::string bench_markdown(const BenchReport& report);
// {"results": [...], "summary": {...}} with the same data (per-repetition samples included).
nlohmann::json bench_json(const BenchReport& report);

}  // namespace sf
