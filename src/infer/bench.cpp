// bench.cpp — pp/tg measurement: options, the tests run on each model, their statistics.
#include "infer/bench.h"


#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <memory>

#include "core/error.h"
#include "core/rng.h"

namespace sf {

namespace {

double mean_of(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  return v.empty() ? 0.0 : sum / static_cast<double>(v.size());
}

// Sample standard deviation (n - 1); 0 for a single sample, as llama-bench prints it.
double stddev_of(const std::vector<double>& v) {
  if (v.size() < 2) return 0.0;
  const double m = mean_of(v);
  double sum = 0.0;
  for (double x : v) sum += (x - m) * (x - m);
  return std::sqrt(sum / static_cast<double>(v.size() - 1));
}

std::vector<int32_t> random_tokens(Rng& rng, int64_t count, int64_t vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  for (int32_t& t : tokens) t = static_cast<int32_t>(rng.below(static_cast<uint64_t>(vocab)));
  return tokens;
}

// Times `timed` once as a warm-up and then `repetitions` times; returns the seconds of the
// counted repetitions.
std::vector<double> time_repetitions(int repetitions, const std::function<void()>& timed) {
  std::vector<double> seconds;
  for (int rep = 0; rep <= repetitions; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    timed();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (rep > 0) seconds.push_back(s);
  }
  return seconds;
}

std::string upper(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  return s;
}

}  // namespace

// ---- options, modes, names ---------------------------------------------------------------------

void bench_options_check(const BenchOptions& o, const ModelConfig& c) {
  SF_CHECK(o.repetitions >= 1, "-r/--repetitions must be >= 1 (timed runs after the warm-up), got {}",
           o.repetitions);
  SF_CHECK(o.batch >= 1, "-b/--batch must be >= 1, got {}", o.batch);
  SF_CHECK(o.threads >= 0, "-t/--threads must be >= 0 (0: all cores), got {}", o.threads);
  SF_CHECK(o.prompt_tokens >= 0, "-p/--n-prompt must be >= 0 (0: no pp test), got {}", o.prompt_tokens);
  SF_CHECK(o.gen_tokens >= 0, "-n/--n-gen must be >= 0 (0: no tg test), got {}", o.gen_tokens);
  SF_CHECK(o.prompt_tokens > 0 || o.gen_tokens > 0, "-p 0 and -n 0: nothing to measure");
  SF_CHECK(!o.modes.empty(), "--decode: no decode mode given");
  SF_CHECK(o.prompt_tokens <= c.max_seq_len,
           "-p {}: the prompt is longer than the model's context (max_seq_len {})", o.prompt_tokens,
           c.max_seq_len);
  SF_CHECK(o.depth >= 0, "-d/--depth must be >= 0, got {}", o.depth);
  const int64_t context = std::max<int64_t>(1, o.depth);
  SF_CHECK(context + o.gen_tokens <= c.max_seq_len,
           "-n {}: the tg test prefills {} token{} (-d {}) and then decodes N, so {} + N must fit "
           "the model's context (max_seq_len {}); use -n {} or less",
           o.gen_tokens, context, context == 1 ? "" : "s", o.depth, context, c.max_seq_len,
           c.max_seq_len - context);
  for (DecodeMode mode : o.modes)
    if (const std::string why = DecodeSchedule::unsupported(c, mode); !why.empty())
      fail(fmt::format("--decode {} {}", to_string(mode), why));
}

std::vector<DecodeMode> bench_modes_for(const BenchOptions& o, const ModelConfig& c) {
  std::vector<DecodeMode> modes;
  for (DecodeMode mode : o.modes) {
    // One stack: the staggered schedule has nothing to run concurrently; it is the sequential one.
    if (c.n_stacks == 1 && mode == DecodeMode::staggered) mode = DecodeMode::sequential;
    if (std::find(modes.begin(), modes.end(), mode) == modes.end()) modes.push_back(mode);
  }
  return modes;
}

ModelConfig bench_baseline_config(const ModelConfig& config) {
  ModelConfig b = config;
  b.layers_per_stack = config.n_stacks * config.layers_per_stack;
  b.n_stacks = 1;
  b.weights = WeightSharing::separate;
  b.combine = CombineMode::last;
  b.cross_window = 0;
  b.cross_rope = ModelConfig{}.cross_rope;  // unused without cross-attention; keep the default
  b.validate("baseline config");
  return b;
}

std::string bench_model_name(const ModelConfig& c) {
  if (c.n_stacks == 1) return fmt::format("baseline 1x{} d{}", c.layers_per_stack, c.d_model);
  std::string name = fmt::format("stagformer {}x{} d{}", c.n_stacks, c.layers_per_stack, c.d_model);
  if (c.weights == WeightSharing::shared) name += " shared";
  if (c.cross_window > 0) name += fmt::format(" w{}", c.cross_window);
  if (c.combine == CombineMode::linear) name += " linear";
  return name;
}

// ---- running the tests -------------------------------------------------------------------------

namespace {

BenchOptions options_for(const BenchOptions& options, const BenchSubject& subject) {
  BenchOptions o = options;
  if (!subject.modes.empty()) o.modes = subject.modes;
  return o;
}

}  // namespace

std::vector<BenchResult> bench_run(const std::vector<BenchSubject>& subjects,
                                   const BenchOptions& options, const BenchProgress& progress) {
  const BenchOptions& o = options;
  const int threads = o.threads;

  int64_t total_tests = 0;
  for (const BenchSubject& s : subjects) {
    SF_CHECK(s.model != nullptr, "bench_run: subject without a model");
    const BenchOptions so = options_for(options, s);
    bench_options_check(so, s.model->config());  // every subject, before anything runs
    total_tests += (so.prompt_tokens > 0 ? 1 : 0) +
                   (so.gen_tokens > 0 ? static_cast<int64_t>(bench_modes_for(so, s.model->config()).size()) : 0);
  }
  int64_t test_index = 0;

  std::vector<BenchResult> results;
  for (const BenchSubject& subject : subjects) {
    Model& model = *subject.model;
    const ModelConfig& c = model.config();
    const std::vector<DecodeMode> modes = bench_modes_for(options_for(options, subject), c);
    const int64_t B = o.batch;
    BenchResult base;
    base.model = bench_model_name(c);
    base.weights = subject.weights;
    base.baseline = subject.baseline;
    base.params = model.params().count_elements();
    // "CPU" (the F32 reference), or the device and the dtype its kernels read ("CUDA BF16").
    base.backend = upper(std::string(device_name(model.backend().device())));
    if (model.backend().device() != Device::cpu)
      base.backend += " " + upper(std::string(dtype_name(model.compute_dtype())));
    base.threads = threads;
    base.batch = B;
    // The same token streams for every subject: the baseline sees what the model sees.
    Rng rng(o.seed);

    auto finish = [&](BenchResult& r, const std::vector<double>& seconds) {
      r.seconds = seconds;
      for (double s : seconds) r.tokens_per_second.push_back(static_cast<double>(r.tokens) / s);
      r.mean_ts = mean_of(r.tokens_per_second);
      r.stddev_ts = stddev_of(r.tokens_per_second);
      if (r.step_bytes) {
        std::vector<double> gb_s;
        const double steps = static_cast<double>(r.tokens / r.batch);
        for (double s : seconds) gb_s.push_back(r.step_bytes->total() * steps / s / 1e9);
        r.mean_gb_s = mean_of(gb_s);
        r.stddev_gb_s = stddev_of(gb_s);
      }
    };
    auto announce = [&](const BenchResult& r) {
      ++test_index;
      if (progress)
        progress(fmt::format("[{}/{}] {} | {} | {}: 1 warm-up + {} timed runs", test_index,
                             total_tests, r.model, r.decode, r.test, o.repetitions));
    };
    auto report = [&](const BenchResult& r) {
      if (progress)
        progress(fmt::format("[{}/{}] {} | {} | {}: {:.2f} ± {:.2f} t/s", test_index, total_tests,
                             r.model, r.decode, r.test, r.mean_ts, r.stddev_ts));
    };

    if (o.prompt_tokens > 0) {
      BenchResult r = base;
      r.decode = "any";
      r.test = fmt::format("pp{}", o.prompt_tokens);
      r.tokens = B * o.prompt_tokens;
      announce(r);
      std::vector<std::vector<int32_t>> prompts;
      for (int64_t b = 0; b < B; ++b) prompts.push_back(random_tokens(rng, o.prompt_tokens, c.vocab_size));
      // Prefill is the same teacher-forced forward for every schedule (decoder.h).
      Decoder decoder(model, B, DecodeMode::sequential);
      const std::vector<double> seconds = time_repetitions(o.repetitions, [&] {
        for (int64_t b = 0; b < B; ++b) decoder.prefill(b, prompts[static_cast<size_t>(b)]);
      });
      finish(r, seconds);
      report(r);
      results.push_back(std::move(r));
    }

    if (o.gen_tokens > 0) {
      // The context a tg test starts from: a prompt of `depth` tokens, at least one (the decoder
      // needs a first position); steps then run at positions context .. context + N - 1.
      const int64_t context = std::max<int64_t>(1, o.depth);
      const std::vector<int32_t> first = random_tokens(rng, B * context, c.vocab_size);
      const std::vector<int32_t> stream = random_tokens(rng, B * o.gen_tokens, c.vocab_size);
      // Every schedule's decoder exists at once and their repetitions alternate (A B A B ...):
      // a change of the machine's load during the run hits every schedule alike.
      std::vector<std::unique_ptr<Decoder>> decoders;
      std::vector<BenchResult> tg;
      for (DecodeMode mode : modes) {
        BenchResult r = base;
        r.decode = to_string(mode);
        r.test = o.depth > 0 ? fmt::format("tg{} @ d{}", o.gen_tokens, o.depth)
                             : fmt::format("tg{}", o.gen_tokens);
        r.tokens = B * o.gen_tokens;
        decoders.push_back(std::make_unique<Decoder>(model, B, mode));
        r.step_bytes = decoders.back()->schedule().step_bytes(
            B, context, o.gen_tokens, static_cast<int64_t>(dtype_size(model.compute_dtype())));
        announce(r);
        tg.push_back(std::move(r));
      }
      std::vector<std::vector<double>> seconds(modes.size());
      for (int rep = 0; rep <= o.repetitions; ++rep) {  // repetition 0: the warm-up
        for (size_t k = 0; k < decoders.size(); ++k) {
          Decoder& decoder = *decoders[k];
          for (int64_t b = 0; b < B; ++b)
            decoder.prefill(b, std::span<const int32_t>(first.data() + b * context,
                                                        static_cast<size_t>(context)));
          const auto start = std::chrono::steady_clock::now();
          for (int64_t n = 0; n < o.gen_tokens; ++n)
            decoder.step(std::span<const int32_t>(stream.data() + n * B, static_cast<size_t>(B)));
          const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          if (rep > 0) seconds[k].push_back(s);
        }
      }
      for (size_t k = 0; k < tg.size(); ++k) {
        finish(tg[k], seconds[k]);
        report(tg[k]);
        results.push_back(std::move(tg[k]));
      }
    }
  }
  return results;
}

}  // namespace sf
