// train_resume_test.cpp — resuming a run restores its options (train.json), refuses a different
// value unless overridden (and records the override), extends a run with the re-planned
// schedule of lr_schedule.h, reports this segment's true speed, and says plainly when a
// finished run has nothing to do.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/progress.h"
#include "cpu/cpu_backend.h"
#include "io/atomic_file.h"
#include "support/tiny_data.h"
#include "support/tiny_models.h"
#include "train/lr_schedule.h"
#include "train/metrics_log.h"
#include "train/run_record.h"
#include "train/trainer.h"

namespace sf {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- the schedule ------------------------------------------------------------------------------

TEST(LrReplan, WithoutReplansItIsTheBaseSchedule) {
  const RunLrSchedule s{{1e-3, 0.1, 10, 100}, {}};
  for (int64_t step = 0; step <= 120; ++step) EXPECT_EQ(lr_at(s, step), lr_at(s.base, step)) << step;
  EXPECT_EQ(lr_schedule_end(s), 100);
}

TEST(LrReplan, ExtendingAFinishedRunTrainsOnAtTheFloor) {
  const RunLrSchedule s{{1e-3, 0.1, 10, 100}, {{100, 200}}};
  for (int64_t step = 0; step <= 100; ++step) EXPECT_EQ(lr_at(s, step), lr_at(s.base, step)) << step;
  EXPECT_DOUBLE_EQ(lr_at(s, 100), 1e-4);
  for (int64_t step : {101, 150, 199, 200, 250}) EXPECT_DOUBLE_EQ(lr_at(s, step), 1e-4) << step;
  EXPECT_EQ(lr_schedule_end(s), 200);
}

TEST(LrReplan, ExtendingMidDecayStretchesTheRestOfTheCosine) {
  const RunLrSchedule s{{1e-3, 0.1, 10, 100}, {{40, 190}}};
  const double at40 = lr_at(s.base, 40);
  for (int64_t step = 0; step <= 40; ++step) EXPECT_EQ(lr_at(s, step), lr_at(s.base, step)) << step;
  // From the LR the run had reached, a cosine to the floor over the 150 steps left.
  EXPECT_DOUBLE_EQ(lr_at(s, 115), 1e-4 + (at40 - 1e-4) / 2);  // half way
  EXPECT_DOUBLE_EQ(lr_at(s, 190), 1e-4);
  EXPECT_DOUBLE_EQ(lr_at(s, 41), 1e-4 + (at40 - 1e-4) * 0.5 * (1 + std::cos(M_PI / 150)));
  EXPECT_LT(at40 - lr_at(s, 41), 1e-7);  // continuous: no jump at the boundary
  for (int64_t step = 41; step <= 190; ++step) EXPECT_LE(lr_at(s, step), lr_at(s, step - 1));
}

TEST(LrReplan, ExtendingDuringTheWarmupIsTheLongerRunPlannedFromTheStart) {
  const RunLrSchedule s{{1e-3, 0.1, 10, 100}, {{4, 300}}};
  const LrSchedule planned{1e-3, 0.1, 10, 300};
  for (int64_t step = 0; step <= 320; ++step)
    EXPECT_NEAR(lr_at(s, step), lr_at(planned, step), 1e-18) << step;
}

TEST(LrReplan, ReplansChainAndAreValidated) {
  const RunLrSchedule once{{1e-3, 0.1, 10, 100}, {{40, 190}}};
  const RunLrSchedule twice{{1e-3, 0.1, 10, 100}, {{40, 190}, {90, 290}}};
  for (int64_t step = 0; step <= 90; ++step) EXPECT_EQ(lr_at(twice, step), lr_at(once, step));
  EXPECT_DOUBLE_EQ(lr_at(twice, 190), 1e-4 + (lr_at(once, 90) - 1e-4) / 2);
  EXPECT_DOUBLE_EQ(lr_at(twice, 290), 1e-4);
  // A re-plan must end after its anchor, and re-plans come in order.
  const std::string ends_early = test::error_of([] { lr_at(RunLrSchedule{{1e-3, 0.1, 10, 100}, {{50, 50}}}, 1); });
  EXPECT_NE(ends_early.find("re-plan 1"), std::string::npos) << ends_early;
  const std::string in_warmup = test::error_of([] { lr_at(RunLrSchedule{{1e-3, 0.1, 10, 100}, {{2, 8}}}, 1); });
  EXPECT_NE(in_warmup.find("after step 10"), std::string::npos) << in_warmup;
  const std::string order = test::error_of(
      [] { lr_at(RunLrSchedule{{1e-3, 0.1, 10, 100}, {{50, 150}, {40, 200}}}, 1); });
  EXPECT_NE(order.find("re-plan 2"), std::string::npos) << order;
}

// ---- the progress line ---------------------------------------------------------------------------

TEST(ProgressStart, RateAndEtaCountOnlyThisSegment) {
  ProgressSnapshot s;
  s.label = "train";
  s.done = 300;
  s.start = 150;  // resumed at step 150
  s.total = 600;
  s.unit = "step";
  s.elapsed_seconds = 300;
  const std::string line = format_progress_line(s, 10);
  EXPECT_NE(line.find(" 300/600 step  0.50 step/s"), std::string::npos) << line;
  EXPECT_NE(line.find("ETA 10:00"), std::string::npos) << line;
}

// ---- training runs -----------------------------------------------------------------------------

ModelConfig small_config() { return test::byte_training_config(); }

// Every option away from its default.
TrainOptions unusual_options(const std::string& data, const std::string& run) {
  TrainOptions o;
  o.data_dir = data;
  o.run_dir = run;
  o.steps = 8;
  o.batch = 2;
  o.seq = 16;
  o.grad_accum = 2;
  o.lr = 3e-3;
  o.min_lr_ratio = 0.2;
  o.warmup = 2;
  o.weight_decay = 0.05;
  o.beta1 = 0.8;
  o.beta2 = 0.99;
  o.grad_clip = 0.5;
  o.eval_every = 2;
  o.eval_batches = 2;
  o.checkpoint_every = 3;
  o.keep_checkpoints = 5;
  o.progress = false;
  return o;
}

// A resume as `train --resume --out RUN` does it: nothing but the run folder.
TrainOptions bare_resume(const std::string& run) {
  TrainOptions o;
  o.run_dir = run;
  o.resume = true;
  o.progress = false;
  return o;
}

json read_json(const std::string& path) { return json::parse(std::ifstream(path)); }

std::vector<uint8_t> bytes_of(const std::string& path) { return read_file(path); }

// (step, field) -> value of the logged losses and learning rates.
std::map<std::pair<int64_t, std::string>, double> logged(const std::string& run) {
  std::map<std::pair<int64_t, std::string>, double> out;
  for (const auto& r : metrics_read(run + "/metrics.jsonl"))
    for (const char* field : {"loss", "lr", "val_loss", "grad_norm"})
      if (r.contains(field)) out[{r["step"].get<int64_t>(), field}] = r[field].get<double>();
  return out;
}

struct Fixture : ::testing::Test {
  void SetUp() override {
    data = test::fresh_temp_dir("resume_opts_data");
    test::write_tiny_dataset(data, 4000, 800);
  }
  std::string data;
  CpuBackend backend;
};

using ResumeOptions = Fixture;

TEST_F(ResumeOptions, BareResumeRestoresEveryOptionAndIsBitIdentical) {
  const std::string straight = test::fresh_temp_dir("resume_opts_straight");
  const std::string halves = test::fresh_temp_dir("resume_opts_halves");
  train(small_config(), unusual_options(data, straight), backend);
  TrainOptions first = unusual_options(data, halves);
  first.stop_after = 4;
  ASSERT_TRUE(train(small_config(), first, backend).interrupted);
  const TrainResult r = train(ModelConfig{}, bare_resume(halves), backend);
  EXPECT_EQ(r.steps_done, 8);
  EXPECT_EQ(r.segment, 2);

  EXPECT_EQ(bytes_of(straight + "/model.safetensors"), bytes_of(halves + "/model.safetensors"));
  EXPECT_EQ(bytes_of(straight + "/checkpoints/step_00000008/optimizer.safetensors"),
            bytes_of(halves + "/checkpoints/step_00000008/optimizer.safetensors"));
  EXPECT_EQ(logged(straight), logged(halves));  // losses, LRs and validation every 2 steps
  // The checkpoint cadence (3) and the number kept (5) came back too.
  for (const char* step : {"step_00000003", "step_00000004", "step_00000006", "step_00000008"})
    EXPECT_TRUE(fs::exists(fs::path(halves) / "checkpoints" / step)) << step;

  // train.json keeps the options and the history of both segments.
  const json record = read_json(halves + "/train.json");
  EXPECT_EQ(record["lr"], 3e-3);
  EXPECT_EQ(record["beta1"], 0.8);
  EXPECT_EQ(record["eval_every"], 2);
  EXPECT_EQ(record["device"], "cpu");
  ASSERT_EQ(record["segments"].size(), 2u);
  EXPECT_EQ(record["segments"][1]["start_step"], 4);
  EXPECT_FALSE(record["segments"][1].contains("overridden"));
}

TEST_F(ResumeOptions, ADifferentOptionIsRefusedByNameAndAcceptedWithOverride) {
  const std::string run = test::fresh_temp_dir("resume_opts_conflict");
  TrainOptions first = unusual_options(data, run);
  first.stop_after = 4;
  train(small_config(), first, backend);
  const auto train_json = bytes_of(run + "/train.json");

  TrainOptions again = bare_resume(run);
  again.lr = 1e-3;
  again.eval_every = 4;
  again.resume_given = {"lr", "eval_every", "batch"};  // batch: given, but the same value
  again.batch = 2;
  const std::string refused = test::error_of([&] { train(ModelConfig{}, again, backend); });
  EXPECT_NE(refused.find("--lr 0.001 (the run's: 0.003)"), std::string::npos) << refused;
  EXPECT_NE(refused.find("--eval-every 4 (the run's: 2)"), std::string::npos) << refused;
  EXPECT_EQ(refused.find("--batch"), std::string::npos) << refused;
  EXPECT_NE(refused.find("--override-resume"), std::string::npos) << refused;
  EXPECT_EQ(bytes_of(run + "/train.json"), train_json) << "a refused resume wrote train.json";

  again.override_resume = true;
  const TrainResult r = train(ModelConfig{}, again, backend);
  EXPECT_EQ(r.steps_done, 8);
  const json record = read_json(run + "/train.json");
  EXPECT_EQ(record["lr"], 1e-3);
  EXPECT_EQ(record["eval_every"], 4);
  const json& overridden = record["segments"][1]["overridden"];
  ASSERT_EQ(overridden.size(), 2u) << record.dump();
  EXPECT_EQ(overridden[0]["option"], "lr");
  EXPECT_EQ(overridden[0]["from"], 3e-3);
  EXPECT_EQ(overridden[0]["to"], 1e-3);
  EXPECT_EQ(record["lr_schedule"]["peak_lr"], 1e-3);
  // The metrics log says it at the resume step, and the new peak drives the LR from step 5 on.
  bool said = false;
  for (const auto& m : metrics_read(run + "/metrics.jsonl"))
    if (m.value("event", "") == "resume") {
      said = true;
      EXPECT_EQ(m["step"], 4);
      EXPECT_EQ(m["changes"]["lr"]["to"], 1e-3);
    }
  EXPECT_TRUE(said);
  const auto lrs = logged(run);
  EXPECT_DOUBLE_EQ(lrs.at({5, "lr"}), lr_at(LrSchedule{1e-3, 0.2, 2, 8}, 5));
  EXPECT_DOUBLE_EQ(lrs.at({4, "lr"}), lr_at(LrSchedule{3e-3, 0.2, 2, 8}, 4));
  // Validation every 4 from here on.
  EXPECT_FALSE(lrs.contains({6, "val_loss"}));
  EXPECT_TRUE(lrs.contains({8, "val_loss"}));
}

TEST_F(ResumeOptions, FreeOptionsChangeWithoutOverrideAndAreRecorded) {
  const std::string run = test::fresh_temp_dir("resume_opts_free");
  TrainOptions first = unusual_options(data, run);
  first.stop_after = 4;
  train(small_config(), first, backend);
  TrainOptions again = bare_resume(run);
  again.recompute = true;
  again.keep_checkpoints = 1;
  again.resume_given = {"recompute", "keep_checkpoints"};
  train(ModelConfig{}, again, backend);
  const json record = read_json(run + "/train.json");
  EXPECT_EQ(record["recompute"], true);
  EXPECT_EQ(record["segments"][1]["changed"].size(), 2u) << record.dump();
}

TEST_F(ResumeOptions, ExtendingAFinishedRunContinuesAtTheFloor) {
  const std::string run = test::fresh_temp_dir("resume_extend_finished");
  train(small_config(), unusual_options(data, run), backend);  // 8 steps, floor 0.2 * 3e-3
  TrainOptions longer = bare_resume(run);
  longer.steps = 12;
  longer.resume_given = {"steps"};
  const TrainResult r = train(ModelConfig{}, longer, backend);
  EXPECT_EQ(r.steps_done, 12);
  const auto lrs = logged(run);
  EXPECT_DOUBLE_EQ(lrs.at({8, "lr"}), 0.2 * 3e-3);
  for (int64_t step = 9; step <= 12; ++step) EXPECT_DOUBLE_EQ(lrs.at({step, "lr"}), 0.2 * 3e-3) << step;
  const json record = read_json(run + "/train.json");
  EXPECT_EQ(record["steps"], 12);
  EXPECT_EQ(record["lr_schedule"]["total_steps"], 8);
  EXPECT_EQ(record["lr_schedule"]["replans"], json::parse(R"([{"from_step": 8, "end_step": 12}])"));
  EXPECT_EQ(record["segments"][1]["extended"]["from"], 8);
  EXPECT_EQ(record["segments"][1]["extended"]["to"], 12);
}

TEST_F(ResumeOptions, ExtendingAnInterruptedRunFollowsTheReplanAndResumesExactly) {
  const std::string run = test::fresh_temp_dir("resume_extend_mid");
  const std::string twice = test::fresh_temp_dir("resume_extend_twice");
  for (const std::string& r : {run, twice}) {
    TrainOptions first = unusual_options(data, r);
    first.stop_after = 4;
    train(small_config(), first, backend);
  }
  TrainOptions longer = bare_resume(run);
  longer.steps = 16;
  longer.resume_given = {"steps"};
  train(ModelConfig{}, longer, backend);
  const RunLrSchedule expected{{3e-3, 0.2, 2, 8}, {{4, 16}}};
  const auto lrs = logged(run);
  for (int64_t step = 1; step <= 16; ++step)
    EXPECT_DOUBLE_EQ(lrs.at({step, "lr"}), lr_at(expected, step)) << step;
  // At the boundary: the LR of step 4, then a cosine over the 12 steps left.
  EXPECT_DOUBLE_EQ(lrs.at({10, "lr"}), 6e-4 + (lr_at(LrSchedule{3e-3, 0.2, 2, 8}, 4) - 6e-4) / 2);
  // An extended run interrupted again resumes bit-identically with a bare --resume.
  longer.run_dir = twice;
  longer.stop_after = 10;
  train(ModelConfig{}, longer, backend);
  train(ModelConfig{}, bare_resume(twice), backend);
  EXPECT_EQ(bytes_of(run + "/model.safetensors"), bytes_of(twice + "/model.safetensors"));
  EXPECT_EQ(logged(run), logged(twice));
}

TEST_F(ResumeOptions, FewerStepsNeedTheOverride) {
  const std::string run = test::fresh_temp_dir("resume_shorten");
  TrainOptions first = unusual_options(data, run);
  first.stop_after = 4;
  train(small_config(), first, backend);
  TrainOptions shorter = bare_resume(run);
  shorter.steps = 6;
  shorter.resume_given = {"steps"};
  const std::string refused = test::error_of([&] { train(ModelConfig{}, shorter, backend); });
  EXPECT_NE(refused.find("--steps 6 (the run's: 8"), std::string::npos) << refused;
  shorter.steps = 3;
  shorter.override_resume = true;
  const std::string behind = test::error_of([&] { train(ModelConfig{}, shorter, backend); });
  EXPECT_NE(behind.find("beyond --steps 3"), std::string::npos) << behind;
  shorter.steps = 6;
  EXPECT_EQ(train(ModelConfig{}, shorter, backend).steps_done, 6);
  EXPECT_DOUBLE_EQ(logged(run).at({6, "lr"}), 0.2 * 3e-3);  // the decay ends at the new end
}

// An older train.json (no format, no schedule, no history) still resumes: its options are
// restored, what it lacks is named.
TEST_F(ResumeOptions, OlderTrainJsonResumes) {
  const std::string straight = test::fresh_temp_dir("resume_old_straight");
  const std::string run = test::fresh_temp_dir("resume_old");
  train(small_config(), unusual_options(data, straight), backend);
  TrainOptions first = unusual_options(data, run);
  first.stop_after = 4;
  train(small_config(), first, backend);
  json old = read_json(run + "/train.json");
  for (const char* key : {"format", "lr_schedule", "segments", "device", "compute_dtype",
                          "recompute", "keep_checkpoints"})
    old.erase(key);
  write_file_atomic(run + "/train.json", old.dump(2));
  train(ModelConfig{}, bare_resume(run), backend);
  EXPECT_EQ(bytes_of(straight + "/model.safetensors"), bytes_of(run + "/model.safetensors"));
  const json record = read_json(run + "/train.json");
  EXPECT_EQ(record["format"], 2);
  EXPECT_EQ(record["segments"].size(), 2u);
  EXPECT_EQ(record["segments"][1]["unrecorded"].size(), 4u) << record.dump();
}

// ---- speed and the finished run ------------------------------------------------------------------

// The first number before `suffix` in `line` ("12.3k step/s" -> 12300).
double number_before(const std::string& line, const std::string& suffix) {
  const size_t end = line.find(suffix);
  if (end == std::string::npos) return std::nan("");
  size_t begin = line.rfind(' ', end - 1);
  std::string text = line.substr(begin + 1, end - begin - 1);
  double scale = 1;
  if (!text.empty() && (text.back() == 'k' || text.back() == 'M' || text.back() == 'G')) {
    scale = text.back() == 'k' ? 1e3 : text.back() == 'M' ? 1e6 : 1e9;
    text.pop_back();
  }
  return std::stod(text) * scale;
}

// A run of known speed: each step of the resumed segment sleeps 120 ms, so it cannot go faster
// than 8.33 steps/s; what it loses to a loaded machine the test's own clock loses too.
TEST_F(ResumeOptions, ProgressAndResultReportThisSegmentsRate) {
  const std::string run = test::fresh_temp_dir("resume_speed");
  TrainOptions first = unusual_options(data, run);
  first.steps = 10;
  first.stop_after = 5;
  first.checkpoint_every = 0;
  first.eval_every = 0;
  train(small_config(), first, backend);

  TrainOptions again = bare_resume(run);
  const std::string bar_path = run + "/progress.txt";
  std::FILE* bar = std::fopen(bar_path.c_str(), "w");
  ASSERT_NE(bar, nullptr);
  again.progress = true;
  again.progress_stream = bar;  // a file: plain lines, and always the final one
  std::chrono::steady_clock::time_point first_step{}, last_step{};
  again.after_step = [&](int64_t step) {
    if (step == 6) first_step = std::chrono::steady_clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    if (step == 10) last_step = std::chrono::steady_clock::now();
  };
  const TrainResult r = train(ModelConfig{}, again, backend);
  const double measured =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - first_step).count();
  std::fclose(bar);

  ASSERT_EQ(r.segment_steps, 5);
  EXPECT_EQ(r.segment_start_step, 5);
  EXPECT_EQ(r.segment_tokens, 5 * 2 * 16 * 2);
  EXPECT_EQ(r.tokens, 10 * 2 * 16 * 2);
  const double true_rate = 5.0 / measured;
  const double result_rate = r.segment_steps / r.segment_seconds;
  EXPECT_LE(result_rate, 1.0 / 0.120);
  EXPECT_NEAR(result_rate, true_rate, 0.2 * true_rate);
  EXPECT_GE(r.run_seconds, r.segment_seconds);

  std::ifstream in(bar_path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty()) last = line;
  ASSERT_NE(last.find(" 10/10 step"), std::string::npos) << last;
  const double bar_rate = number_before(last, " step/s");
  EXPECT_LE(bar_rate, 1.0 / 0.120 * 1.01) << last;  // (the bar rounds to 3 digits)
  EXPECT_NEAR(bar_rate, true_rate, 0.2 * true_rate) << last;
  const size_t field = last.find("tok/s ");
  ASSERT_NE(field, std::string::npos) << last;
  // The field is the rate at step 10's report, before the final validation and checkpoint.
  const double tok_rate = std::stod(last.substr(field + 6));
  const double true_tok_rate =
      5 * 64 / std::chrono::duration<double>(last_step - first_step).count();
  EXPECT_LE(tok_rate, 64 / 0.120 * 1.01) << last;
  EXPECT_NEAR(tok_rate, true_tok_rate, 0.2 * true_tok_rate) << last;
}

TEST_F(ResumeOptions, ResumingAFinishedRunDoesNothingAndSaysSo) {
  const std::string run = test::fresh_temp_dir("resume_finished");
  train(small_config(), unusual_options(data, run), backend);
  const auto train_json = bytes_of(run + "/train.json");
  const auto metrics = bytes_of(run + "/metrics.jsonl");
  const TrainResult r = train(ModelConfig{}, bare_resume(run), backend);
  EXPECT_TRUE(r.nothing_to_do);
  EXPECT_EQ(r.steps_done, 8);
  EXPECT_EQ(r.planned_steps, 8);
  EXPECT_EQ(r.segment_steps, 0);
  EXPECT_EQ(r.tokens, 8 * 2 * 16 * 2);
  // The last logged numbers, not zeros or NaN.
  const auto lrs = logged(run);
  EXPECT_EQ(r.last_train_loss, lrs.at({8, "loss"}));
  EXPECT_EQ(r.last_val_loss, lrs.at({8, "val_loss"}));
  EXPECT_EQ(r.last_loss_step, 8);
  EXPECT_FALSE(std::isnan(r.unigram_val_loss));
  EXPECT_EQ(bytes_of(run + "/train.json"), train_json);
  EXPECT_EQ(bytes_of(run + "/metrics.jsonl"), metrics);
}

}  // namespace
}  // namespace sf
