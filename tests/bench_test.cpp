// bench_test.cpp — `stagformer bench` and its library: bytes per decode step against a hand
// count over the registered parameters and the attention masks, the pp/tg runner on tiny models
// (every schedule, structure and internal consistency of the numbers, never their speed), the
// JSON and markdown reports, option errors, the memory-bandwidth kernels, and the command itself.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include "cpu/cpu_backend.h"
#include "infer/bench.h"
#include "cpu/memory_bandwidth.h"
#include "infer/model_summary.h"
#include "model/config.h"
#include "support/test_util.h"
#include "support/tiny_models.h"

namespace sf {
namespace {

using json = nlohmann::json;

// ---- bytes per step: hand counts -----------------------------------------------------------------

// How many times one decode step reads the parameter `name`, worked out from the name alone
// (which weights each schedule touches). The token embedding is 0 here: its B rows
// are counted separately, and a tied embedding is read in full as the LM head.
int64_t reads_per_step(const std::string& name, const ModelConfig& c, DecodeMode mode) {
  const int64_t p = c.n_stacks;
  if (name == "tok_embeddings.weight") return c.tie_embeddings ? 1 : 0;
  if (name == "lm_head.weight" || name == "final_norm.weight" || name == "combine.alpha") return 1;
  std::smatch m;
  static const std::regex stack_re(R"(stacks\.(\d+)\.(.*))");
  EXPECT_TRUE(std::regex_match(name, m, stack_re)) << name;
  const int64_t s = std::stoll(m[1]);
  const std::string rest = m[2];
  const bool cross = rest == "mem_norm.weight" || rest.find("cross_") != std::string::npos;
  if (cross) return mode == DecodeMode::recurrent ? (s == p - 1 ? 1 : 0) : 1;
  // Self-attention / MLP block tensors: shared ones exist once (under stacks.0); the
  // sequential schedule's p passes each read them, the staggered schedule's one batched pass
  // and recurrent decoding's single pass read them once.
  if (mode != DecodeMode::sequential) return 1;
  return c.weights == WeightSharing::shared ? p : 1;
}

std::vector<DecodeMode> modes_of(const ModelConfig& c) {
  std::vector<DecodeMode> modes = {DecodeMode::staggered, DecodeMode::sequential};
  if (c.n_stacks >= 2 && c.weights == WeightSharing::shared && c.combine == CombineMode::last)
    modes.push_back(DecodeMode::recurrent);
  return modes;
}

std::vector<test::Variant> byte_count_variants() {
  std::vector<test::Variant> v = test::tiny_variants();
  ModelConfig shared_last = test::tiny_config();  // recurrent needs shared + combine last
  shared_last.n_stacks = 3;
  shared_last.weights = WeightSharing::shared;
  shared_last.cross_window = 2;
  shared_last.validate("shared_p3_last");
  v.push_back({"shared_p3_last", shared_last});
  return v;
}

TEST(BenchBytes, WeightValuesMatchAHandCountOverTheRegisteredParameters) {
  int checked_recurrent = 0;
  for (const test::Variant& v : byte_count_variants()) {
    CpuBackend backend;
    Model model(v.config, backend, DType::f32);
    for (DecodeMode mode : modes_of(v.config)) {
      int64_t read = 0, distinct = 0;
      for (const Parameter& p : model.params().all()) {
        const int64_t times = reads_per_step(p.name, v.config, mode);
        read += times * p.value.numel();
        distinct += (times > 0 ? 1 : 0) * p.value.numel();
      }
      EXPECT_EQ(DecodeSchedule(v.config, mode).weight_values_per_step(false), read) << v.name << " " << to_string(mode);
      EXPECT_EQ(DecodeSchedule(v.config, mode).weight_values_per_step(true), distinct) << v.name << " " << to_string(mode);
      if (mode == DecodeMode::recurrent) ++checked_recurrent;
      // Bytes: f32 values; the embedding rows are B rows of D.
      const DecodeStepBytes bytes = DecodeSchedule(v.config, mode).step_bytes(3, 1, 4, 4);
      EXPECT_DOUBLE_EQ(bytes.weights, 4.0 * static_cast<double>(read));
      EXPECT_DOUBLE_EQ(bytes.weights_distinct, 4.0 * static_cast<double>(distinct));
      EXPECT_DOUBLE_EQ(bytes.embedding_rows, 4.0 * 3 * static_cast<double>(v.config.d_model));
    }
  }
  EXPECT_GE(checked_recurrent, 2);  // the shared variants with combine = last
}

TEST(BenchBytes, SeparateWeightsAreEveryParameterOnceSharedOnesPerPass) {
  // A cross-check of the hand count on a model the size of the issue's: 2x6 d768, untied.
  ModelConfig c = config_load(std::string(SF_SOURCE_DIR) + "/configs/gpt2-small-stagformer-2x6.json");
  const std::map<std::string, int64_t> counts = parameter_counts_for(c);
  // Everything but the embedding table (its rows are counted apart) is read once per step.
  EXPECT_EQ(DecodeSchedule(c, DecodeMode::staggered).weight_values_per_step(false),
            counts.at("total") - counts.at("embedding"));
  c.weights = WeightSharing::shared;
  c.validate("shared");
  const std::map<std::string, int64_t> shared_counts = parameter_counts_for(c);
  const int64_t blocks = shared_counts.at("self_attention") + shared_counts.at("mlp") +
                         2 * c.d_model * c.layers_per_stack;  // attn_norm + mlp_norm per layer
  EXPECT_EQ(DecodeSchedule(c, DecodeMode::sequential).weight_values_per_step(false),
            DecodeSchedule(c, DecodeMode::sequential).weight_values_per_step(true) + blocks);
}

// KV values a step at position i reads, by walking every cache position j against the masks of
// backend.h (self: j <= i; cross: i - w <= j <= i - 1).
int64_t kv_hand_count(const ModelConfig& c, DecodeMode mode, int64_t i) {
  int64_t values = 0;
  const int64_t first_stack = mode == DecodeMode::recurrent ? c.n_stacks - 1 : 0;
  for (int64_t s = first_stack; s < c.n_stacks; ++s)
    for (int64_t l = 0; l < c.layers_per_stack; ++l)
      for (int64_t j = 0; j <= i; ++j) {
        values += 2 * c.kv_dim();  // self-attention: K and V of position j
        const bool cross_visible = s >= 1 && j <= i - 1 && (c.cross_window == 0 || j >= i - c.cross_window);
        if (cross_visible) values += 2 * c.kv_dim();
      }
  return values;
}

TEST(BenchBytes, KvValuesMatchTheMasks) {
  for (const test::Variant& v : byte_count_variants())
    for (DecodeMode mode : modes_of(v.config))
      for (int64_t i : {0, 1, 2, 3, 7, 15})
        EXPECT_EQ(DecodeSchedule(v.config, mode).kv_values_read(i), kv_hand_count(v.config, mode, i))
            << v.name << " " << to_string(mode) << " position " << i;
  // The run average over positions 1..N, times B sequences and the element size.
  const ModelConfig c = test::tiny_variants()[5].config;  // window2
  ASSERT_EQ(c.cross_window, 2);
  double sum = 0;
  for (int64_t i = 1; i <= 9; ++i) sum += static_cast<double>(kv_hand_count(c, DecodeMode::staggered, i));
  EXPECT_DOUBLE_EQ(DecodeSchedule(c, DecodeMode::staggered).step_bytes(2, 1, 9, 4).kv_cache, 4.0 * 2 * sum / 9);
}

// ---- running the benchmark on tiny models ---------------------------------------------------------

struct TinyRun {
  ModelConfig config, baseline_config;
  BenchOptions options;
  std::vector<BenchResult> results;
};

TinyRun run_tiny_bench() {
  TinyRun run;
  ModelConfig c = test::tiny_config();
  c.n_stacks = 2;
  c.weights = WeightSharing::shared;
  c.max_seq_len = 16;
  c.validate("tiny shared p2");
  run.config = c;
  run.baseline_config = bench_baseline_config(c);
  CpuBackend backend;
  Model model(c, backend, DType::f32), baseline(run.baseline_config, backend, DType::f32);
  model.initialize();
  baseline.initialize();
  BenchOptions& o = run.options;
  o.prompt_tokens = 6;
  o.gen_tokens = 5;
  o.repetitions = 3;
  o.batch = 2;
  o.threads = 2;
  o.modes = {DecodeMode::staggered, DecodeMode::sequential, DecodeMode::recurrent};
  std::vector<std::string> lines;
  run.results = bench_run({{&model, "random (seed 7)", false, {}},
                           {&baseline, "random (seed 7), baseline", true, {DecodeMode::sequential}}},
                          o, [&](const std::string& line) { lines.push_back(line); });
  EXPECT_EQ(lines.size(), 2 * run.results.size());  // a line before and after every test
  return run;
}

const TinyRun& tiny_run() {
  static const TinyRun run = run_tiny_bench();
  return run;
}

TEST(BenchRun, EveryScheduleGivesPositiveFiniteConsistentNumbers) {
  const TinyRun& run = tiny_run();
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"any", "pp6"}, {"staggered", "tg5"}, {"sequential", "tg5"}, {"recurrent", "tg5"},
      {"any", "pp6"}, {"sequential", "tg5"}};
  ASSERT_EQ(run.results.size(), expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    const BenchResult& r = run.results[k];
    SCOPED_TRACE(r.model + " " + r.decode + " " + r.test);
    EXPECT_EQ(r.decode, expected[k].first);
    EXPECT_EQ(r.test, expected[k].second);
    EXPECT_EQ(r.baseline, k >= 4);
    EXPECT_EQ(r.model, k < 4 ? "stagformer 2x2 d8 shared" : "baseline 1x4 d8");
    EXPECT_EQ(r.backend, "CPU");
    EXPECT_EQ(r.threads, 2);
    EXPECT_EQ(r.batch, 2);
    EXPECT_EQ(r.tokens, 2 * (r.test[0] == 'p' ? 6 : 5));
    ASSERT_EQ(r.seconds.size(), 3u);
    ASSERT_EQ(r.tokens_per_second.size(), 3u);
    double lo = 1e300, hi = 0, sum = 0;
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_GT(r.seconds[i], 0.0);
      EXPECT_TRUE(std::isfinite(r.tokens_per_second[i]));
      EXPECT_NEAR(r.tokens_per_second[i], static_cast<double>(r.tokens) / r.seconds[i],
                  1e-9 * r.tokens_per_second[i]);
      lo = std::min(lo, r.tokens_per_second[i]);
      hi = std::max(hi, r.tokens_per_second[i]);
      sum += r.tokens_per_second[i];
    }
    EXPECT_NEAR(r.mean_ts, sum / 3, 1e-9 * r.mean_ts);
    EXPECT_GE(r.mean_ts, lo);
    EXPECT_LE(r.mean_ts, hi);
    EXPECT_TRUE(std::isfinite(r.stddev_ts));
    EXPECT_GE(r.stddev_ts, 0.0);
    EXPECT_LE(r.stddev_ts, hi - lo + 1e-9);  // a sample std never exceeds the range
    EXPECT_EQ(r.is_tg(), r.test[0] == 't');
    if (r.is_tg()) {
      const ModelConfig& c = r.baseline ? run.baseline_config : run.config;
      const DecodeStepBytes& b = *r.step_bytes;
      const DecodeStepBytes want = DecodeSchedule(c, decode_mode_from_string(r.decode)).step_bytes(2, 1, 5, 4);
      EXPECT_DOUBLE_EQ(b.total(), want.total());
      EXPECT_GT(b.kv_cache, 0.0);
      // GB/s per repetition = bytes per step * steps / seconds; the mean of those.
      double gb = 0;
      for (double s : r.seconds) gb += b.total() * 5 / s / 1e9;
      EXPECT_NEAR(r.mean_gb_s, gb / 3, 1e-9 * r.mean_gb_s);
      EXPECT_TRUE(std::isfinite(r.stddev_gb_s));
    }
  }
  // Shared weights: sequential reads the shared blocks twice (two passes); staggered (one
  // batched pass) and recurrent (one pass) once.
  EXPECT_EQ(run.results[1].step_bytes->weights, run.results[1].step_bytes->weights_distinct);
  EXPECT_GT(run.results[2].step_bytes->weights, run.results[2].step_bytes->weights_distinct);
  EXPECT_EQ(run.results[3].step_bytes->weights, run.results[3].step_bytes->weights_distinct);
}

TEST(BenchRun, SpeedupsAreRatiosOfTheMeans) {
  const TinyRun& run = tiny_run();
  const std::vector<BenchSpeedup> speedups = bench_speedups(run.results);
  const std::vector<std::pair<std::string, std::pair<size_t, size_t>>> expected = {
      {"tg5: staggered / sequential", {1, 2}}, {"tg5: recurrent / sequential", {3, 2}},
      {"tg5: staggered / baseline", {1, 5}},   {"tg5: sequential / baseline", {2, 5}},
      {"tg5: recurrent / baseline", {3, 5}},   {"pp6: model / baseline", {0, 4}}};
  ASSERT_EQ(speedups.size(), expected.size());
  for (size_t k = 0; k < expected.size(); ++k) {
    const BenchSpeedup& s = speedups[k];
    EXPECT_EQ(s.name, expected[k].first);
    const BenchResult& a = run.results[expected[k].second.first];
    const BenchResult& b = run.results[expected[k].second.second];
    EXPECT_NEAR(s.value, a.mean_ts / b.mean_ts, 1e-12 * s.value) << s.name;
    const double rel = std::hypot(a.stddev_ts / a.mean_ts, b.stddev_ts / b.mean_ts);
    EXPECT_NEAR(s.stddev, s.value * rel, 1e-12 * s.value + 1e-300) << s.name;
    EXPECT_FALSE(s.description.empty());
  }
}

BenchReport tiny_report(bool with_peak) {
  BenchReport report;
  report.results = tiny_run().results;
  report.speedups = bench_speedups(report.results);
  if (with_peak) {
    MemoryBandwidth m;
    m.copy_gb_s = 10.0;
    m.triad_gb_s = 12.0;
    m.read_gb_s = 11.0;
    m.array_bytes = int64_t{256} << 20;
    m.threads = 4;
    m.repetitions = 5;
    report.peak = m;
  }
  report.machine = machine_describe();
  report.date = bench_date_now();
  report.command = "stagformer bench --config tiny.json -p 6 -n 5";
  report.notes = {"a note"};
  return report;
}

TEST(BenchReport, JsonParsesAndCarriesEveryResult) {
  const BenchReport report = tiny_report(true);
  const json j = json::parse(bench_json(report).dump());
  ASSERT_TRUE(j["results"].is_array());
  ASSERT_EQ(j["results"].size(), report.results.size());
  for (size_t k = 0; k < report.results.size(); ++k) {
    const json& r = j["results"][k];
    const BenchResult& want = report.results[k];
    EXPECT_EQ(r["model"], want.model);
    EXPECT_EQ(r["decode"], want.decode);
    EXPECT_EQ(r["test"], want.test);
    EXPECT_EQ(r["params"], want.params);
    EXPECT_DOUBLE_EQ(r["avg_ts"].get<double>(), want.mean_ts);
    EXPECT_DOUBLE_EQ(r["stddev_ts"].get<double>(), want.stddev_ts);
    EXPECT_EQ(r["samples_ts"].size(), 3u);
    EXPECT_EQ(r.contains("bytes_per_step"), want.is_tg());
    if (want.is_tg()) {
      EXPECT_NEAR(r["peak_fraction"].get<double>(), want.mean_gb_s / 12.0, 1e-12);
    }
  }
  const json& s = j["summary"];
  EXPECT_EQ(s["speedups"].size(), report.speedups.size());
  EXPECT_DOUBLE_EQ(s["memory_bandwidth"]["peak_gb_s"].get<double>(), 12.0);
  EXPECT_EQ(s["command"], report.command);
  EXPECT_TRUE(std::regex_match(s["date"].get<std::string>(),
                               std::regex(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")));
  EXPECT_GT(s["machine"]["logical_cpus"].get<int>(), 0);
  // Without the measurement the peak is null and no fraction is claimed.
  const json without = bench_json(tiny_report(false));
  EXPECT_TRUE(without["summary"]["memory_bandwidth"].is_null());
  EXPECT_TRUE(without["results"][1]["peak_fraction"].is_null());
}

std::string squeeze(const std::string& line) {
  return std::regex_replace(line, std::regex(" +"), " ");
}

TEST(BenchReport, MarkdownIsALlamaBenchTable) {
  const BenchReport report = tiny_report(true);
  const std::string md = bench_markdown(report);
  std::istringstream in(md);
  std::string header, separator;
  std::getline(in, header);
  std::getline(in, separator);
  EXPECT_EQ(squeeze(header), "| model | params | backend | threads | batch | decode | test | t/s |");
  EXPECT_TRUE(std::regex_match(separator, std::regex(R"(\|( -+:? \|){8})"))) << separator;
  for (const BenchResult& r : report.results) {
    std::string row;
    std::getline(in, row);
    const std::string params = r.params >= 1000 ? fmt::format("{:.2f} K", r.params / 1e3)
                                                : std::to_string(r.params);
    EXPECT_EQ(squeeze(row), fmt::format("| {} | {} | CPU | 2 | 2 | {} | {} | {:.2f} ± {:.2f} |", r.model,
                                        params, r.decode, r.test, r.mean_ts, r.stddev_ts))
        << row;
  }
  for (const char* line : {"- speed-up tg5: staggered / sequential = ", "- bandwidth tg5 ",
                           "% of the measured peak", "- peak memory bandwidth (measured): 12.00 GB/s",
                           "- note: a note", "- machine: ", "- date: ",
                           "- command: `stagformer bench --config tiny.json -p 6 -n 5`"})
    EXPECT_NE(md.find(line), std::string::npos) << line << "\n" << md;
}

// ---- options -------------------------------------------------------------------------------------

TEST(BenchOptions, BadOptionsGiveClearErrors) {
  ModelConfig separate = test::tiny_config();
  separate.n_stacks = 2;
  separate.validate("separate");
  auto error = [&](BenchOptions o, const ModelConfig& c) {
    return test::error_of([&] { bench_options_check(o, c); });
  };
  BenchOptions ok;
  ok.prompt_tokens = 8;
  ok.gen_tokens = 8;
  EXPECT_EQ(error(ok, separate), "");

  BenchOptions o = ok;
  o.modes = {DecodeMode::recurrent};
  std::string e = error(o, separate);
  EXPECT_NE(e.find("recurrent"), std::string::npos) << e;
  EXPECT_NE(e.find("weights separate"), std::string::npos) << e;

  o = ok;
  o.prompt_tokens = separate.max_seq_len + 1;
  e = error(o, separate);
  EXPECT_NE(e.find("-p 17"), std::string::npos) << e;
  EXPECT_NE(e.find("max_seq_len 16"), std::string::npos) << e;

  o = ok;
  o.gen_tokens = separate.max_seq_len;  // 1 prefilled + 16 steps do not fit 16 positions
  e = error(o, separate);
  EXPECT_NE(e.find("-n 16"), std::string::npos) << e;
  EXPECT_NE(e.find("-n 15 or less"), std::string::npos) << e;
  o.gen_tokens = separate.max_seq_len - 1;
  EXPECT_EQ(error(o, separate), "");
  o.depth = 4;  // 4 prefilled + 15 steps do not fit either
  e = error(o, separate);
  EXPECT_NE(e.find("prefills 4 tokens (-d 4)"), std::string::npos) << e;
  EXPECT_NE(e.find("-n 12 or less"), std::string::npos) << e;
  o.gen_tokens = 12;
  EXPECT_EQ(error(o, separate), "");
  o.depth = -1;
  EXPECT_NE(error(o, separate).find("-d/--depth must be >= 0"), std::string::npos);

  o = ok;
  o.repetitions = 0;
  e = error(o, separate);
  EXPECT_NE(e.find("-r/--repetitions must be >= 1"), std::string::npos) << e;
  o = ok;
  o.batch = 0;
  EXPECT_NE(error(o, separate).find("-b/--batch"), std::string::npos);
  o = ok;
  o.prompt_tokens = 0;
  o.gen_tokens = 0;
  EXPECT_NE(error(o, separate).find("nothing to measure"), std::string::npos);
  o = ok;
  o.modes.clear();
  EXPECT_NE(error(o, separate).find("--decode"), std::string::npos);

  // A mode name that does not exist lists the choices.
  e = test::error_of([] { decode_mode_from_string("parallel"); });
  EXPECT_NE(e.find("staggered, sequential or recurrent"), std::string::npos) << e;
}

// -d D: tg starts after a prompt of D tokens; the name says so and the KV bytes are those of
// positions D .. D + N - 1.
TEST(BenchRun, DepthStartsTheGenerationAfterAPrompt) {
  ModelConfig c = test::tiny_variants()[1].config;  // separate p = 2
  c.max_seq_len = 16;
  c.validate("separate p2");
  CpuBackend backend;
  Model model(c, backend, DType::f32);
  model.initialize();
  BenchOptions o;
  o.prompt_tokens = 0;
  o.gen_tokens = 5;
  o.depth = 7;
  o.repetitions = 1;
  o.modes = {DecodeMode::staggered};
  const std::vector<BenchResult> results = bench_run({{&model, "random", false, {}}}, o);
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].test, "tg5 @ d7");
  EXPECT_DOUBLE_EQ(results[0].step_bytes->kv_cache,
                   DecodeSchedule(c, DecodeMode::staggered).step_bytes(1, 7, 5, 4).kv_cache);
  EXPECT_GT(results[0].step_bytes->kv_cache,
            DecodeSchedule(c, DecodeMode::staggered).step_bytes(1, 1, 5, 4).kv_cache);
}

TEST(BenchOptions, OneStackModelsHaveOneSchedule) {
  BenchOptions o;
  o.modes = {DecodeMode::staggered, DecodeMode::sequential, DecodeMode::staggered};
  EXPECT_EQ(bench_modes_for(o, test::tiny_config()), std::vector<DecodeMode>{DecodeMode::sequential});
  ModelConfig p2 = test::tiny_variants()[1].config;
  EXPECT_EQ(bench_modes_for(o, p2), (std::vector<DecodeMode>{DecodeMode::staggered, DecodeMode::sequential}));
}

TEST(BenchOptions, BaselineOfTheIssuesStagFormerIsTheIssuesBaseline) {
  const std::string dir = std::string(SF_SOURCE_DIR) + "/configs/";
  const ModelConfig stag = config_load(dir + "gpt2-small-stagformer-2x6.json");
  const ModelConfig base = config_load(dir + "gpt2-small-baseline-12.json");
  EXPECT_EQ(config_to_json(bench_baseline_config(stag)), config_to_json(base));
  EXPECT_EQ(bench_model_name(stag), "stagformer 2x6 d768");
  EXPECT_EQ(bench_model_name(base), "baseline 1x12 d768");
  // Every StagFormer feature is dropped: shared, windowed, linear -> plain 1 x (p*h).
  ModelConfig fancy = test::tiny_variants()[9].config;  // shared_p3_linear_window1
  const ModelConfig b = bench_baseline_config(fancy);
  EXPECT_EQ(b.n_stacks, 1);
  EXPECT_EQ(b.layers_per_stack, 6);
  EXPECT_EQ(b.weights, WeightSharing::separate);
  EXPECT_EQ(b.combine, CombineMode::last);
  EXPECT_EQ(b.cross_window, 0);
  EXPECT_EQ(bench_model_name(fancy), "stagformer 3x2 d8 shared w1 linear");
}

// ---- memory bandwidth ----------------------------------------------------------------------------

TEST(MemoryBandwidthTest, SmallMeasurementIsPositiveAndFinite) {
  MemoryBandwidthOptions o;
  o.array_bytes = int64_t{4} << 20;
  o.repetitions = 2;
  o.threads = 2;
  const MemoryBandwidth m = memory_bandwidth_measure(o);
  for (double v : {m.copy_gb_s, m.triad_gb_s, m.read_gb_s}) {
    EXPECT_TRUE(std::isfinite(v));
    EXPECT_GT(v, 0.01);  // GB/s; any machine moves more than 10 MB/s
  }
  EXPECT_EQ(m.peak_gb_s(), std::max({m.copy_gb_s, m.triad_gb_s, m.read_gb_s}));
  EXPECT_EQ(m.array_bytes, int64_t{4} << 20);
  EXPECT_EQ(m.threads, 2);
  EXPECT_EQ(m.repetitions, 2);

  // The default follows STREAM's rule: >= 4 x the last-level caches, >= 256 MiB, <= 4 GiB.
  const int64_t llc = last_level_cache_total_bytes();
  EXPECT_GE(llc, 0);
  const int64_t automatic = memory_bandwidth_default_array_bytes();
  EXPECT_GE(automatic, int64_t{256} << 20);
  EXPECT_LE(automatic, int64_t{4} << 30);
  EXPECT_TRUE(automatic >= 4 * llc || automatic == int64_t{4} << 30);

  o.array_bytes = -1;
  EXPECT_NE(test::error_of([&] { memory_bandwidth_measure(o); }).find(">= 0"), std::string::npos);
  o.array_bytes = 1000;
  EXPECT_NE(test::error_of([&] { memory_bandwidth_measure(o); }).find("1 MiB"), std::string::npos);
  o.array_bytes = int64_t{4} << 20;
  o.repetitions = 0;
  EXPECT_NE(test::error_of([&] { memory_bandwidth_measure(o); }).find("repetitions"), std::string::npos);
}

// ---- the command ---------------------------------------------------------------------------------

struct CliRun {
  int exit_code;
  std::string out, err;
};

CliRun stagformer(const std::string& args, const std::string& dir) {
  const std::string err_path = dir + "/stderr.txt";
  const std::string command = std::string(SF_STAGFORMER_BIN) + " " + args + " 2>" + err_path;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string out;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  std::ifstream in(err_path);
  std::stringstream err;
  err << in.rdbuf();
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out, err.str()};
}

TEST(BenchCli, JsonAndMarkdownAndErrors) {
  const std::string dir = test::fresh_temp_dir("bench_cli");
  const std::string config = dir + "/model.json";
  std::ofstream(config) << R"({"vocab_size": 64, "d_model": 16, "n_heads": 2, "ffn_hidden": 32,
      "max_seq_len": 24, "n_stacks": 2, "layers_per_stack": 1, "weights": "shared"})";

  CliRun r = stagformer("bench --config " + config +
                            " -p 4 -n 3 -r 1 -t 2 --decode staggered,recurrent --baseline "
                            "--no-bandwidth -o json",
                        dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);  // stdout is exactly the JSON (progress is on stderr)
  ASSERT_EQ(j["results"].size(), 5u);   // pp, tg staggered, tg recurrent; baseline pp, tg
  EXPECT_EQ(j["results"][2]["decode"], "recurrent");
  EXPECT_EQ(j["results"][4]["model"], "baseline 1x2 d16");
  EXPECT_NE(j["summary"]["command"].get<std::string>().find("--decode staggered,recurrent"), std::string::npos);
  EXPECT_NE(r.err.find("bench: [5/5]"), std::string::npos) << r.err;

  r = stagformer("bench --config " + config + " --set n_stacks=3 -p 4 -n 0 -r 1 --no-bandwidth", dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(squeeze(r.out.substr(0, r.out.find('\n'))),
            "| model | params | backend | threads | batch | decode | test | t/s |");
  EXPECT_NE(r.out.find("stagformer 3x1 d16 shared"), std::string::npos) << r.out;

  r = stagformer("bench --config " + config + " --set weights=separate -p 4 -n 3 --decode recurrent --no-bandwidth", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("stagformer bench: error: --decode recurrent needs"), std::string::npos) << r.err;
  r = stagformer("bench --config " + config + " -p 100 --no-bandwidth", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("max_seq_len 24"), std::string::npos) << r.err;
  r = stagformer("bench --config " + config + " -r 0 --no-bandwidth", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("-r/--repetitions must be >= 1"), std::string::npos) << r.err;
  r = stagformer("bench --config " + config + " --set n_stacks=1 --set weights=separate -p 4 -n 3 --baseline --no-bandwidth", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already has n_stacks 1"), std::string::npos) << r.err;
  r = stagformer("bench -m " + dir + "/no_such_model --no-bandwidth", dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(dir + "/no_such_model"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace sf
