// bench.cpp — pp/tg measurement, bytes per decode step, speed-ups and the bench report.
#include "infer/bench.h"

#include <cblas.h>
#include <fmt/ranges.h>
#include <omp.h>
#include <unistd.h>  // environ

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/rng.h"

namespace sf {

namespace {

using json = nlohmann::json;

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

// Runs `untimed` then times `timed`, once as a warm-up and then `repetitions` times; returns
// the timed seconds of the counted repetitions.
std::vector<double> time_repetitions(int repetitions, const std::function<void()>& untimed,
                                     const std::function<void()>& timed) {
  std::vector<double> seconds;
  for (int rep = 0; rep <= repetitions; ++rep) {
    if (untimed) untimed();
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

// Decimal units, as bandwidth in GB/s is decimal.
std::string bytes_decimal(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.2f} {}", bytes, units[u]);
}

std::string params_short(int64_t n) {
  const double v = static_cast<double>(n);
  if (n >= 1'000'000'000) return fmt::format("{:.2f} B", v / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f} M", v / 1e6);
  if (n >= 1'000) return fmt::format("{:.2f} K", v / 1e3);
  return std::to_string(n);
}

const BenchResult* find_result(const std::vector<BenchResult>& results, bool baseline,
                               const std::string& decode, char kind) {
  for (const BenchResult& r : results)
    if (r.baseline == baseline && r.decode == decode && !r.test.empty() && r.test[0] == kind)
      return &r;
  return nullptr;
}

}  // namespace

// ---- bytes a decode step reads -----------------------------------------------------------------

int64_t decode_weight_values_per_step(const ModelConfig& c, DecodeMode mode, bool distinct) {
  const int64_t D = c.d_model, Q = c.n_heads * c.head_dim(), K = c.kv_dim(), F = c.ffn_hidden;
  const int64_t p = c.n_stacks, h = c.layers_per_stack;
  const int64_t self_block = D + Q * D + 2 * K * D + D * Q;  // attn_norm, wq, wk, wv, wo
  const int64_t mlp_block = D + 3 * D * F;                   // mlp_norm, w1, w3, w2
  const int64_t cross_query = D + 2 * Q * D;                 // cross_norm, wq, wo (the step)
  const int64_t cross_kv = 2 * K * D;                        // wk, wv (the hand-off)
  const int64_t cross_stack = h * (cross_query + cross_kv) + D;  // + mem_norm
  int64_t head = D + c.vocab_size * D;                       // final_norm, LM head (all rows)
  if (c.combine == CombineMode::linear) head += p;           // combine.alpha
  if (mode == DecodeMode::recurrent)
    return h * (self_block + mlp_block) + cross_stack + head;  // one pass, the last stack
  const bool shared = c.weights == WeightSharing::shared;
  // Separate weights: p distinct block sets, each read once. Shared: one set, read once per
  // step by the staggered schedule (one batched pass of p*B rows), p times by the sequential
  // schedule (p passes), and once when counting distinct tensors.
  const bool one_pass = distinct || mode == DecodeMode::staggered;
  const int64_t block_reads = shared && one_pass ? 1 : p;
  return block_reads * h * (self_block + mlp_block) + (p - 1) * cross_stack + head;
}

int64_t decode_kv_values_read(const ModelConfig& c, DecodeMode mode, int64_t position) {
  SF_CHECK(position >= 0, "decode_kv_values_read: negative position {}", position);
  const int64_t running = mode == DecodeMode::recurrent ? 1 : c.n_stacks;
  const int64_t crossing = mode == DecodeMode::recurrent ? 1 : c.n_stacks - 1;
  const int64_t row = 2 * c.kv_dim();  // one position's K and V in one layer
  const int64_t visible_memory =
      c.cross_window > 0 ? std::min(position, c.cross_window) : position;
  return running * c.layers_per_stack * row * (position + 1) +
         crossing * c.layers_per_stack * row * visible_memory;
}

DecodeStepBytes decode_step_bytes(const ModelConfig& c, DecodeMode mode, int64_t batch,
                                  int64_t first_position, int64_t steps, int64_t element_bytes) {
  SF_CHECK(steps >= 1, "decode_step_bytes: steps must be >= 1, got {}", steps);
  const double eb = static_cast<double>(element_bytes);
  DecodeStepBytes bytes;
  bytes.weights = eb * static_cast<double>(decode_weight_values_per_step(c, mode, false));
  bytes.weights_distinct = eb * static_cast<double>(decode_weight_values_per_step(c, mode, true));
  bytes.embedding_rows = eb * static_cast<double>(batch * c.d_model);
  double kv_values = 0.0;
  for (int64_t i = first_position; i < first_position + steps; ++i)
    kv_values += static_cast<double>(decode_kv_values_read(c, mode, i));
  bytes.kv_cache = eb * static_cast<double>(batch) * kv_values / static_cast<double>(steps);
  return bytes;
}

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
  SF_CHECK(o.gen_tokens + 1 <= c.max_seq_len,
           "-n {}: the tg test prefills 1 token and then decodes N, so 1 + N must fit the model's "
           "context (max_seq_len {}); use -n {} or less",
           o.gen_tokens, c.max_seq_len, c.max_seq_len - 1);
  for (DecodeMode mode : o.modes)
    if (mode == DecodeMode::recurrent)
      SF_CHECK(c.n_stacks >= 2 && c.weights == WeightSharing::shared && c.combine == CombineMode::last,
               "--decode recurrent needs a model with shared weights, n_stacks >= 2 and combine = "
               "last (it runs one pass of the shared blocks per step); this model has weights {}, "
               "n_stacks {}, combine {}",
               to_string(c.weights), c.n_stacks, to_string(c.combine));
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
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  // The decoder sets the OpenMP thread count itself; prefill's large products run on OpenBLAS.
  openblas_set_num_threads(threads);

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
    base.backend = upper(std::string(device_name(model.backend().device())));
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
      Decoder decoder(model, B, DecodeMode::sequential, threads);
      const std::vector<double> seconds = time_repetitions(o.repetitions, nullptr, [&] {
        for (int64_t b = 0; b < B; ++b) decoder.prefill(b, prompts[static_cast<size_t>(b)]);
      });
      finish(r, seconds);
      report(r);
      results.push_back(std::move(r));
    }

    if (o.gen_tokens > 0) {
      const std::vector<int32_t> first = random_tokens(rng, B, c.vocab_size);
      const std::vector<int32_t> stream = random_tokens(rng, B * o.gen_tokens, c.vocab_size);
      for (DecodeMode mode : modes) {
        BenchResult r = base;
        r.decode = to_string(mode);
        r.test = fmt::format("tg{}", o.gen_tokens);
        r.tokens = B * o.gen_tokens;
        // Steps run at positions 1..N (the prefilled token sits at 0).
        r.step_bytes = decode_step_bytes(c, mode, B, 1, o.gen_tokens,
                                         static_cast<int64_t>(dtype_size(model.dtype())));
        announce(r);
        Decoder decoder(model, B, mode, threads);
        const std::vector<double> seconds = time_repetitions(
            o.repetitions,
            [&] {
              for (int64_t b = 0; b < B; ++b)
                decoder.prefill(b, std::span<const int32_t>(&first[static_cast<size_t>(b)], 1));
            },
            [&] {
              for (int64_t n = 0; n < o.gen_tokens; ++n)
                decoder.step(std::span<const int32_t>(stream.data() + n * B, static_cast<size_t>(B)));
            });
        finish(r, seconds);
        report(r);
        results.push_back(std::move(r));
      }
    }
  }
  return results;
}

// ---- the report --------------------------------------------------------------------------------

std::vector<BenchSpeedup> bench_speedups(const std::vector<BenchResult>& results) {
  std::vector<BenchSpeedup> out;
  auto ratio = [&](const BenchResult* a, const BenchResult* b, const std::string& name,
                   const std::string& description) {
    if (!a || !b || a->mean_ts <= 0.0 || b->mean_ts <= 0.0) return;
    BenchSpeedup s;
    s.name = name;
    s.description = description;
    s.value = a->mean_ts / b->mean_ts;
    const double ra = a->stddev_ts / a->mean_ts, rb = b->stddev_ts / b->mean_ts;
    s.stddev = s.value * std::sqrt(ra * ra + rb * rb);
    out.push_back(s);
  };
  const BenchResult* staggered = find_result(results, false, "staggered", 't');
  const BenchResult* sequential = find_result(results, false, "sequential", 't');
  const BenchResult* recurrent = find_result(results, false, "recurrent", 't');
  const BenchResult* pp = find_result(results, false, "any", 'p');
  const BenchResult* base_tg = find_result(results, true, "sequential", 't');
  const BenchResult* base_pp = find_result(results, true, "any", 'p');
  if (staggered)
    ratio(staggered, sequential, staggered->test + ": staggered / sequential",
          "same model: the stacks decode a token concurrently vs one after the other");
  if (recurrent)
    ratio(recurrent, sequential, recurrent->test + ": recurrent / sequential",
          "same model: one pass of the shared blocks per step vs p passes");
  if (base_tg) {
    ratio(staggered, base_tg, base_tg->test + ": staggered / baseline",
          fmt::format("{} decoding staggered vs {}, the baseline of equal total depth",
                      staggered ? staggered->model : "", base_tg->model));
    ratio(sequential, base_tg, base_tg->test + ": sequential / baseline",
          fmt::format("{} decoding sequentially vs {}: the cost of the cross-attention",
                      sequential ? sequential->model : "", base_tg->model));
    ratio(recurrent, base_tg, base_tg->test + ": recurrent / baseline",
          fmt::format("{} decoding recurrently vs {}", recurrent ? recurrent->model : "",
                      base_tg->model));
  }
  if (base_pp)
    ratio(pp, base_pp, base_pp->test + ": model / baseline",
          fmt::format("prefill throughput of {} vs {}", pp ? pp->model : "", base_pp->model));
  return out;
}

MachineInfo machine_describe() {
  MachineInfo m;
  m.cpu = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    const size_t first = value.find_first_not_of(" \t");
    if (first != std::string::npos) m.cpu = value.substr(first);
    break;
  }
  m.logical_cpus = omp_get_num_procs();
  std::ifstream load("/proc/loadavg");
  double one_minute = -1.0;
  if (load >> one_minute) m.load_average = one_minute;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    for (const char* prefix : {"OMP_", "GOMP_", "OPENBLAS_"})
      if (entry.rfind(prefix, 0) == 0) m.environment.push_back(entry);
  }
  std::sort(m.environment.begin(), m.environment.end());
  return m;
}

std::string bench_date_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string bench_markdown(const BenchReport& report) {
  // Columns as llama-bench prints them: text left-aligned, numbers right-aligned.
  struct Column {
    const char* title;
    bool right;
  };
  const std::vector<Column> columns = {{"model", false},   {"params", true}, {"backend", false},
                                       {"threads", true},  {"batch", true},  {"decode", false},
                                       {"test", true},     {"t/s", true}};
  std::vector<std::vector<std::string>> rows;
  for (const BenchResult& r : report.results)
    rows.push_back({r.model, params_short(r.params), r.backend, std::to_string(r.threads),
                    std::to_string(r.batch), r.decode, r.test,
                    fmt::format("{:.2f} ± {:.2f}", r.mean_ts, r.stddev_ts)});
  // Width in characters: "±" is two bytes in UTF-8 but one column on screen.
  auto width_of = [](const std::string& s) {
    size_t w = 0;
    for (unsigned char ch : s) w += (ch & 0xC0) != 0x80;
    return w;
  };
  std::vector<size_t> widths;
  for (size_t i = 0; i < columns.size(); ++i) {
    size_t w = std::max<size_t>(3, std::string(columns[i].title).size());
    for (const auto& row : rows) w = std::max(w, width_of(row[i]));
    widths.push_back(w);
  }
  auto cell = [&](const std::string& text, size_t i) {
    const std::string pad(widths[i] - width_of(text), ' ');
    return columns[i].right ? pad + text : text + pad;
  };
  std::string out;
  auto add_row = [&](const std::vector<std::string>& cells) {
    out += "|";
    for (size_t i = 0; i < cells.size(); ++i) {
      out += ' ';
      out += cell(cells[i], i);
      out += " |";
    }
    out += "\n";
  };
  std::vector<std::string> titles;
  for (const Column& col : columns) titles.push_back(col.title);
  add_row(titles);
  out += "|";
  for (size_t i = 0; i < columns.size(); ++i) {
    out += ' ';
    out.append(widths[i] - (columns[i].right ? 1 : 0), '-');
    out += columns[i].right ? ": |" : " |";
  }
  out += "\n";
  for (const auto& row : rows) add_row(row);

  out += "\n";
  std::vector<std::string> described;
  for (const BenchResult& r : report.results) {
    const std::string line = fmt::format("- weights of {}: {}", r.model, r.weights);
    if (std::find(described.begin(), described.end(), line) == described.end()) described.push_back(line);
  }
  for (const std::string& line : described) out += line + "\n";
  for (const std::string& note : report.notes) out += "- note: " + note + "\n";
  for (const BenchSpeedup& s : report.speedups)
    out += fmt::format("- speed-up {} = {:.3f} ± {:.3f} ({})\n", s.name, s.value, s.stddev, s.description);
  for (const BenchResult& r : report.results) {
    if (!r.is_tg()) continue;
    const DecodeStepBytes& b = *r.step_bytes;
    std::string peak;
    if (report.peak)
      peak = fmt::format(" = {:.1f}% of the measured peak", 100.0 * r.mean_gb_s / report.peak->peak_gb_s());
    std::string shared;
    if (b.weights_distinct < b.weights)
      shared = fmt::format(" (shared blocks counted once per pass; distinct weights {})",
                           bytes_decimal(b.weights_distinct));
    out += fmt::format(
        "- bandwidth {} {} {}: {:.2f} ± {:.2f} GB/s{}; {} read per step: weights {}{}, "
        "embedding rows {}, KV cache {} (mean over the run)\n",
        r.test, r.model, r.decode, r.mean_gb_s, r.stddev_gb_s, peak, bytes_decimal(b.total()),
        bytes_decimal(b.weights), shared, bytes_decimal(b.embedding_rows), bytes_decimal(b.kv_cache));
  }
  if (report.peak) {
    const MemoryBandwidth& m = *report.peak;
    out += fmt::format(
        "- peak memory bandwidth (measured): {:.2f} GB/s (copy {:.2f}, triad {:.2f}, read {:.2f} "
        "GB/s; 3 x {} MiB arrays, {} threads, best of {})\n",
        m.peak_gb_s(), m.copy_gb_s, m.triad_gb_s, m.read_gb_s, m.array_bytes >> 20, m.threads,
        m.repetitions);
  } else {
    out += "- peak memory bandwidth: not measured (--no-bandwidth)\n";
  }
  const MachineInfo& machine = report.machine;
  out += fmt::format("- machine: {}, {} logical CPUs{}{}\n", machine.cpu, machine.logical_cpus,
                     machine.load_average >= 0
                         ? fmt::format(", load average {:.2f} at the start", machine.load_average)
                         : "",
                     machine.environment.empty()
                         ? ""
                         : "; environment: " + fmt::format("{}", fmt::join(machine.environment, " ")));
  out += fmt::format("- date: {}\n", report.date);
  out += fmt::format("- command: `{}`\n", report.command);
  return out;
}

json bench_json(const BenchReport& report) {
  json results = json::array();
  for (const BenchResult& r : report.results) {
    json j = {{"model", r.model},
              {"weights", r.weights},
              {"baseline", r.baseline},
              {"params", r.params},
              {"backend", r.backend},
              {"threads", r.threads},
              {"batch", r.batch},
              {"decode", r.decode},
              {"test", r.test},
              {"tokens", r.tokens},
              {"repetitions", r.seconds.size()},
              {"avg_ts", r.mean_ts},
              {"stddev_ts", r.stddev_ts},
              {"samples_ts", r.tokens_per_second},
              {"samples_s", r.seconds}};
    if (r.step_bytes) {
      const DecodeStepBytes& b = *r.step_bytes;
      j["bytes_per_step"] = {{"total", b.total()},
                             {"weights", b.weights},
                             {"weights_distinct", b.weights_distinct},
                             {"embedding_rows", b.embedding_rows},
                             {"kv_cache_mean", b.kv_cache}};
      j["avg_gb_s"] = r.mean_gb_s;
      j["stddev_gb_s"] = r.stddev_gb_s;
      j["peak_fraction"] = report.peak ? json(r.mean_gb_s / report.peak->peak_gb_s()) : json(nullptr);
    }
    results.push_back(j);
  }
  json speedups = json::array();
  for (const BenchSpeedup& s : report.speedups)
    speedups.push_back({{"name", s.name}, {"description", s.description}, {"value", s.value},
                        {"stddev", s.stddev}});
  json peak = nullptr;
  if (report.peak) {
    const MemoryBandwidth& m = *report.peak;
    peak = {{"peak_gb_s", m.peak_gb_s()}, {"copy_gb_s", m.copy_gb_s},   {"triad_gb_s", m.triad_gb_s},
            {"read_gb_s", m.read_gb_s},   {"array_bytes", m.array_bytes}, {"arrays", 3},
            {"threads", m.threads},       {"repetitions", m.repetitions}};
  }
  json summary = {{"speedups", speedups},
                  {"memory_bandwidth", peak},
                  {"machine",
                   {{"cpu", report.machine.cpu},
                    {"logical_cpus", report.machine.logical_cpus},
                    {"load_average", report.machine.load_average},
                    {"environment", report.machine.environment}}},
                  {"date", report.date},
                  {"command", report.command},
                  {"notes", report.notes}};
  return {{"results", results}, {"summary", summary}};
}

}  // namespace sf
