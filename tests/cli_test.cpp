// cli_test.cpp — the `stagformer` binary end to end: clear errors for bad input, a full
// prepare → train → eval → generate → info round, and a clean stop on Ctrl-C (SIGINT).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "support/tiny_data.h"
#include "train/metrics_log.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

struct CliRun {
  int exit_code;
  std::string output;  // stdout and stderr together
};

// Runs the binary with `args` (a shell-quoted string), capturing output and exit code.
CliRun stagformer(const std::string& args) {
  const std::string command = std::string(SF_STAGFORMER_BIN) + " " + args + " 2>&1";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  std::string output;
  std::array<char, 4096> buffer{};
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), pipe)) > 0) output.append(buffer.data(), n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

std::string write_config(const std::string& dir, const std::string& json) {
  const std::string path = dir + "/model.json";
  std::ofstream(path) << json;
  return path;
}

const char* kSmallConfig =
    R"({"vocab_size": 257, "d_model": 16, "n_heads": 2, "ffn_hidden": 32, "max_seq_len": 32,
        "n_stacks": 2, "layers_per_stack": 1})";

TEST(Cli, EveryCommandHasHelp) {
  for (const char* cmd : {"prepare", "train", "eval", "generate", "info", "plot"}) {
    const CliRun r = stagformer(std::string(cmd) + " --help");
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.output.find("Usage"), std::string::npos) << cmd << ": " << r.output;
  }
  EXPECT_NE(stagformer("").exit_code, 0);
}

// A mistyped command or option is named, with the nearest one, and exits 1.
TEST(Cli, TyposNameTheNearestCommandOrOption) {
  CliRun r = stagformer("trian --config x");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown command 'trian' (did you mean 'train'?)"), std::string::npos)
      << r.output;
  r = stagformer("xyzzy");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown command 'xyzzy'; the commands are: prepare train"),
            std::string::npos)
      << r.output;
  // The typo hides nothing: reported before the missing --data it would otherwise meet.
  r = stagformer("train --config x --lrr 3");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("stagformer train: error: unknown option '--lrr' (did you mean '--lr'?)"),
            std::string::npos)
      << r.output;
  r = stagformer("generate -m x --temperature=0.5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("unknown option '--temperature' (did you mean '--temp'?)"),
            std::string::npos)
      << r.output;
  EXPECT_EQ(stagformer("generate --help").exit_code, 0);
}

// bench-train on the CPU, with and without activation recomputation: the same loss (the same
// arithmetic), fewer activation bytes with it, and the JSON says which.
TEST(Cli, BenchTrainWithRecomputation) {
  const std::string dir = ::testing::TempDir();
  const std::string cfg = write_config(dir, R"({"vocab_size": 257, "d_model": 16, "n_heads": 2,
      "ffn_hidden": 32, "max_seq_len": 32, "n_stacks": 2, "layers_per_stack": 3})");
  auto bench = [&](const std::string& extra) {
    const CliRun r = stagformer("bench-train --config " + cfg +
                                " --device cpu --precision f32 --batch 2 --seq 16 --steps 2 "
                                "--warmup 1 -t 1 -o json " + extra);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return nlohmann::json::parse(r.output.substr(r.output.find('{')));
  };
  const auto kept = bench(""), recomputed = bench("--recompute");
  EXPECT_FALSE(kept["recompute"].get<bool>());
  EXPECT_TRUE(recomputed["recompute"].get<bool>());
  EXPECT_EQ(kept["last_loss"].get<double>(), recomputed["last_loss"].get<double>());
  EXPECT_LT(recomputed["activation_gib"].get<double>(), kept["activation_gib"].get<double>());
}

TEST(Cli, MissingFilesAreNamed) {
  CliRun r = stagformer("info -m /nonexistent/model");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("/nonexistent/model"), std::string::npos) << r.output;
  r = stagformer("prepare --tokenizer byte --out /tmp/sf_cli_never /nonexistent/corpus.txt");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/corpus.txt"), std::string::npos) << r.output;
  r = stagformer("generate -m /nonexistent/run -p hi -n 3");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("/nonexistent/run"), std::string::npos) << r.output;
  // A missing data folder is named as such (not as a missing tokenizer.json inside it).
  const std::string dir = test::fresh_temp_dir("cli_missing_data");
  const std::string cfg = write_config(dir, kSmallConfig);
  r = stagformer("train --config " + cfg + " --data /nonexistent/data --out " + dir + "/run --steps 2 --seq 16");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--data /nonexistent/data: no such folder"), std::string::npos) << r.output;
  fs::remove_all(dir);
}

TEST(Cli, BadConfigFieldIsNamed) {
  const std::string dir = test::fresh_temp_dir("cli_config");
  const std::string cfg = write_config(dir, R"({"d_model": 100, "n_heads": 3, "n_stackz": 2})");
  CliRun r = stagformer("info --config " + cfg);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find(cfg), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'n_stackz': unknown field"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("'n_heads'"), std::string::npos) << r.output;
  // --set with a bad value names the field too.
  const std::string good = write_config(dir + "", kSmallConfig);
  r = stagformer("info --config " + good + " --set weights=tied");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("'weights'"), std::string::npos) << r.output;
}

TEST(Cli, TrainEvalGenerateInfoAndPromptErrors) {
  const std::string dir = test::fresh_temp_dir("cli_round");
  test::write_tiny_dataset(dir + "/data", 4000, 1000);
  const std::string cfg = write_config(dir, kSmallConfig);
  CliRun r = stagformer("train --config " + cfg + " --data " + dir + "/data --out " + dir +
                     "/run --steps 6 --batch 2 --seq 16 --eval-every 3 --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("finished after 6 steps"), std::string::npos) << r.output;

  r = stagformer("eval -m " + dir + "/run --data " + dir + "/data --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("\"perplexity\""), std::string::npos) << r.output;

  r = stagformer("generate -m " + dir + "/run -p 'the whale' -n 5 --seed 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(r.output.rfind("the whale", 0), 0u) << r.output;  // the prompt is echoed first
  // Text and statistics in one pipe: the statistics start a line of their own (the generated
  // text rarely ends with a newline, and a redirected stdout gets none added).
  EXPECT_NE(r.output.find("\ngenerate: prompt"), std::string::npos) << r.output;
  EXPECT_EQ(stagformer("generate -m " + dir + "/run -p x -n 1 --top-p 2").exit_code, 1);

  // A prompt longer than the context (32) is refused with both numbers.
  r = stagformer("generate -m " + dir + "/run -p '" + std::string(40, 'x') + "' -n 5");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("40"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("32"), std::string::npos) << r.output;

  r = stagformer("info -m " + dir + "/run");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("n_stacks"), std::string::npos) << r.output;

  // Resuming a finished run is fine; starting a new run over it is refused.
  r = stagformer("train --config " + cfg + " --data " + dir + "/data --out " + dir + "/run --steps 6 --no-progress");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.output.find("--resume"), std::string::npos) << r.output;
}

// `train --resume --out RUN` and nothing else continues with the run's own options (train.json),
// bit for bit; a different option is refused by name unless --override-resume; a larger --steps
// extends the run at the documented LR; a finished run has nothing to do and says so.
TEST(Cli, ResumeKeepsTheRunsOptions) {
  const std::string dir = test::fresh_temp_dir("cli_resume");
  test::write_tiny_dataset(dir + "/data", 4000, 1000);
  const std::string cfg = write_config(dir, kSmallConfig);
  const std::string options = " --data " + dir + "/data --steps 6 --batch 2 --seq 16 --lr 2e-3 "
                              "--warmup 1 --eval-every 2 --checkpoint-every 2 --eval-batches 2 "
                              "--no-progress";
  CliRun r = stagformer("train --config " + cfg + " --out " + dir + "/straight" + options);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const char* run : {"/halves", "/other"}) {
    r = stagformer("train --config " + cfg + " --out " + dir + run + options + " --stop-after 3");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("stopped after 3 steps (of 6 planned)"), std::string::npos) << r.output;
  }

  r = stagformer("train --resume --out " + dir + "/halves");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("finished after 6 steps"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("segment 2: steps 4-6 (3 steps, 96 tokens)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("whole run: 6 steps, 192 tokens"), std::string::npos) << r.output;
  std::ifstream a(dir + "/straight/model.safetensors", std::ios::binary);
  std::ifstream b(dir + "/halves/model.safetensors", std::ios::binary);
  const std::string straight_weights((std::istreambuf_iterator<char>(a)), {});
  const std::string resumed_weights((std::istreambuf_iterator<char>(b)), {});
  EXPECT_TRUE(straight_weights == resumed_weights) << "resumed weights differ";
  auto metrics_of = [](const std::string& run) {
    std::vector<std::string> lines;
    for (const auto& m : metrics_read(run + "/metrics.jsonl"))
      if (m.contains("loss") || m.contains("val_loss")) {
        nlohmann::json kept = m;
        kept.erase("tok_per_s");
        lines.push_back(kept.dump());
      }
    return lines;
  };
  EXPECT_EQ(metrics_of(dir + "/straight"), metrics_of(dir + "/halves"));

  // A different option is refused, naming it and both values; the override records it.
  r = stagformer("train --resume --out " + dir + "/other --lr 1e-3 --no-progress");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--lr 0.001 (the run's: 0.002)"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("--override-resume"), std::string::npos) << r.output;
  r = stagformer("train --resume --out " + dir + "/other --lr 1e-3 --override-resume --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resume: --override-resume: --lr 0.001 instead of the run's 0.002 from "
                          "step 4 on"),
            std::string::npos)
      << r.output;
  const auto record = nlohmann::json::parse(std::ifstream(dir + "/other/train.json"));
  EXPECT_EQ(record["segments"][1]["overridden"][0]["option"], "lr") << record.dump();
  // The model config cannot change on resume.
  r = stagformer("train --resume --out " + dir + "/other --set d_model=32 --no-progress");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("--set"), std::string::npos) << r.output;

  // A finished run: nothing to do, said plainly, with the last logged losses.
  r = stagformer("train --resume --out " + dir + "/straight");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("is already at step 6 of its planned 6: nothing to train"),
            std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("last logged: train loss "), std::string::npos) << r.output;
  for (const char* bogus : {"tok/s", "step/s", "0.0000", "nan"})
    EXPECT_EQ(r.output.find(bogus), std::string::npos) << bogus << " in " << r.output;

  // Extending it: the added steps train at the LR the schedule ended with (its floor, 2e-4).
  r = stagformer("train --resume --out " + dir + "/straight --steps 8 --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resume: extending the run from 6 to 8 steps at step 6"),
            std::string::npos)
      << r.output;
  for (const auto& m : metrics_read(dir + "/straight/metrics.jsonl"))
    if (m.contains("lr") && m["step"].get<int64_t>() >= 6) {
      EXPECT_DOUBLE_EQ(m["lr"].get<double>(), 2e-4) << m.dump();
    }
}

// CPU results depend on the thread count (OpenBLAS splits its products by thread), so a run
// records the count it trained with and a resume without -t uses it; -t given on resume is a
// recorded change.
TEST(Cli, ResumeUsesTheRunsThreadCount) {
  if (std::thread::hardware_concurrency() < 2) GTEST_SKIP() << "needs 2 cores";
  const std::string dir = test::fresh_temp_dir("cli_resume_threads");
  test::write_tiny_dataset(dir + "/data", 4000, 1000);
  const std::string cfg = write_config(dir, kSmallConfig);
  CliRun r = stagformer("train -t 2 --config " + cfg + " --out " + dir + "/run --data " + dir +
                        "/data --steps 6 --batch 2 --seq 16 --checkpoint-every 2 --no-progress "
                        "--stop-after 2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto record = [&] { return nlohmann::json::parse(std::ifstream(dir + "/run/train.json")); };
  EXPECT_EQ(record()["threads"], 2) << record().dump();
  r = stagformer("train --resume --out " + dir + "/run --no-progress --stop-after 4");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(record()["threads"], 2) << record().dump();
  EXPECT_FALSE(record()["segments"][1].contains("changed")) << record().dump();
  r = stagformer("train --resume -t 1 --out " + dir + "/run --no-progress");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("-t"), std::string::npos) << r.output;
  EXPECT_EQ(record()["threads"], 1) << record().dump();
  const nlohmann::json change = record()["segments"][2]["changed"][0];
  EXPECT_EQ(change["option"], "threads") << record().dump();
  EXPECT_EQ(change["from"], 2) << record().dump();
  EXPECT_EQ(change["to"], 1) << record().dump();
}

TEST(Cli, CtrlCWritesACheckpointAndExitsCleanly) {
  const std::string dir = test::fresh_temp_dir("cli_sigint");
  test::write_tiny_dataset(dir + "/data", 20000, 1000);
  const std::string cfg = write_config(dir, kSmallConfig);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string out = dir + "/run";
    const std::string data = dir + "/data";
    std::freopen("/dev/null", "w", stdout);
    std::freopen((dir + "/stderr.txt").c_str(), "w", stderr);
    ::execl(SF_STAGFORMER_BIN, SF_STAGFORMER_BIN, "train", "--config", cfg.c_str(), "--data",
            data.c_str(), "--out", out.c_str(), "--steps", "100000", "--batch", "2", "--seq", "16",
            "--eval-every", "0", "--checkpoint-every", "0", "--no-progress", "-t", "1",
            static_cast<char*>(nullptr));
    _exit(127);
  }
  // Wait until training is under way (a loss line in the metrics log), then press Ctrl-C.
  const std::string metrics = dir + "/run/metrics.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool started = false;
  while (!started && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (fs::exists(metrics))
      for (const auto& rec : metrics_read(metrics)) started = started || rec.contains("loss");
  }
  ASSERT_TRUE(started) << "training did not start";
  ::kill(pid, SIGINT);
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status)) << "killed by the signal instead of stopping cleanly";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(fs::exists(dir + "/run/checkpoints/latest.json"));
  // The stop was announced when the signal came (a user must not have to wait for the step).
  std::ifstream err(dir + "/stderr.txt");
  const std::string said((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
  EXPECT_NE(said.find("stopping after this step"), std::string::npos) << said;
  // And the run resumes from there.
  const CliRun r = stagformer("train --resume --data " + dir + "/data --out " + dir +
                           "/run --steps 100000 --stop-after 1 --batch 2 --seq 16 --no-progress -t 1");
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace sf
