// trainer_test.cpp — training runs end to end: learning, bit-identical resume, atomic
// checkpoints under SIGKILL, NaN stop with the last good checkpoint kept.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "cpu/cpu_backend.h"
#include "io/atomic_file.h"
#include "model/model_io.h"
#include "support/gradcheck.h"
#include "support/tiny_data.h"
#include "support/tiny_models.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"
#include "train/trainer.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

ModelConfig small_config(int64_t stacks) { return test::byte_training_config(stacks); }

TrainOptions small_options(const std::string& data, const std::string& run) {
  TrainOptions o;
  o.data_dir = data;
  o.run_dir = run;
  o.steps = 8;
  o.batch = 2;
  o.seq = 16;
  o.grad_accum = 2;
  o.lr = 3e-3;
  o.warmup = 2;
  o.eval_every = 4;
  o.eval_batches = 2;
  o.checkpoint_every = 3;
  o.progress = false;
  return o;
}

std::vector<uint8_t> bytes_of(const std::string& path) { return read_file(path); }

TEST(Trainer, LearnsAndWritesARunFolder) {
  const std::string data = test::fresh_temp_dir("trainer_data");
  test::write_tiny_dataset(data, 6000, 1500);
  const std::string run = test::fresh_temp_dir("trainer_run");
  CpuBackend backend;
  TrainOptions o = small_options(data, run);
  o.steps = 60;
  o.lr = 1e-2;
  o.eval_every = 20;
  o.checkpoint_every = 0;
  const TrainResult r = train(small_config(2), o, backend);
  EXPECT_EQ(r.steps_done, 60);
  EXPECT_FALSE(r.interrupted);
  EXPECT_LT(r.last_val_loss, r.unigram_val_loss - 0.3) << "val " << r.last_val_loss << " unigram " << r.unigram_val_loss;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "train.json",
                        "metrics.jsonl", "loss.svg", "checkpoints/latest.json"})
    EXPECT_TRUE(fs::exists(fs::path(run) / f)) << f;
  // The run folder is a loadable MODEL.
  Model loaded(model_load_config(run), backend);
  model_load_weights(loaded, model_files(run).weights);
  // A second fresh run into the same folder is refused (no silent overwrite).
  EXPECT_THROW(train(small_config(2), o, backend), Error);
}

TEST(Trainer, ResumeIsBitIdentical) {
  const std::string data = test::fresh_temp_dir("resume_data");
  test::write_tiny_dataset(data, 3000, 800);
  CpuBackend backend;
  const std::string straight = test::fresh_temp_dir("resume_straight");
  const std::string halves = test::fresh_temp_dir("resume_halves");
  train(small_config(2), small_options(data, straight), backend);

  TrainOptions first = small_options(data, halves);
  first.stop_after = 4;
  const TrainResult r1 = train(small_config(2), first, backend);
  EXPECT_TRUE(r1.interrupted);
  EXPECT_EQ(r1.steps_done, 4);
  TrainOptions second = small_options(data, halves);
  second.resume = true;
  const TrainResult r2 = train(ModelConfig{}, second, backend);
  EXPECT_EQ(r2.steps_done, 8);

  EXPECT_EQ(bytes_of(straight + "/model.safetensors"), bytes_of(halves + "/model.safetensors"));
  EXPECT_EQ(bytes_of(straight + "/checkpoints/step_00000008/optimizer.safetensors"),
            bytes_of(halves + "/checkpoints/step_00000008/optimizer.safetensors"));
  // The metrics logs agree on every loss, step by step.
  auto losses = [](const std::string& run) {
    std::vector<std::pair<int64_t, double>> out;
    for (const auto& r : metrics_read(run + "/metrics.jsonl")) {
      if (r.contains("loss")) out.emplace_back(r["step"].get<int64_t>(), r["loss"].get<double>());
      if (r.contains("val_loss")) out.emplace_back(-r["step"].get<int64_t>(), r["val_loss"].get<double>());
    }
    return out;
  };
  EXPECT_EQ(losses(straight), losses(halves));
}

// Saves a checkpoint of step 2 in a child process that SIGKILLs itself right after writing
// `kill_after` (a file name); returns after the child is dead.
void save_and_die(const std::string& run, Model& model, AdamW& optimizer, const std::string& kill_after) {
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    CpuBackend backend;
    backend.fill(model.params().all()[0].value, 42.0);  // step-2 weights differ visibly
    TrainingState state;
    state.step = 2;
    CheckpointOptions options;
    options.after_file_written = [&](const std::string& path) {
      if (fs::path(path).filename() == kill_after) ::kill(::getpid(), SIGKILL);
    };
    checkpoint_save(run, model, optimizer, state, options);
    _exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "child was not killed";
}

TEST(Checkpoint, KillDuringWriteLeavesPreviousCheckpointLoadable) {
  CpuBackend backend;
  const ModelConfig c = small_config(2);
  for (const std::string kill_after : {"model.safetensors", "optimizer.safetensors", "state.json", "latest.json"}) {
    const std::string run = test::fresh_temp_dir("ckpt_kill");
    Model model(c, backend);
    model.initialize();
    AdamW optimizer(backend, model.params());
    TrainingState state;
    state.step = 1;
    state.data.offset = 77;
    checkpoint_save(run, model, optimizer, state);
    Tensor step1_weights = test::clone(model.params().all()[0].value);

    save_and_die(run, model, optimizer, kill_after);

    Model restored(c, backend);
    AdamW restored_optimizer(backend, restored.params());
    const TrainingState got = checkpoint_load(run, restored, restored_optimizer);
    if (kill_after == "latest.json") {
      EXPECT_EQ(got.step, 2) << "the switch happened before the kill";
      EXPECT_EQ(test::value_at(restored.params().all()[0].value, 0), 42.0);
    } else {
      EXPECT_EQ(got.step, 1) << "killed after " << kill_after;
      EXPECT_EQ(got.data.offset, 77);
      EXPECT_EQ(test::max_abs_difference(restored.params().all()[0].value, step1_weights), 0.0);
    }
    // A later save cleans up and works.
    state.step = 3;
    checkpoint_save(run, model, optimizer, state);
    EXPECT_EQ(checkpoint_load(run, restored, restored_optimizer).step, 3);
  }
}

TEST(Checkpoint, CorruptFilesAreReportedByName) {
  CpuBackend backend;
  const ModelConfig c = small_config(1);
  const std::string run = test::fresh_temp_dir("ckpt_corrupt");
  Model model(c, backend);
  model.initialize();
  AdamW optimizer(backend, model.params());
  TrainingState state;
  state.step = 5;
  const std::string dir = checkpoint_save(run, model, optimizer, state);
  fs::resize_file(dir + "/optimizer.safetensors", fs::file_size(dir + "/optimizer.safetensors") - 10);
  try {
    checkpoint_load(run, model, optimizer);
    FAIL() << "truncated optimizer state accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("optimizer.safetensors"), std::string::npos) << e.what();
  }
  // A checkpoint of another model shape is refused with the config difference.
  checkpoint_save(run, model, optimizer, state);
  Model other(small_config(2), backend);
  AdamW other_optimizer(backend, other.params());
  EXPECT_THROW(checkpoint_load(run, other, other_optimizer), Error);
}

TEST(Trainer, NonFiniteLossStopsAndKeepsLastGoodCheckpoint) {
  const std::string data = test::fresh_temp_dir("nan_data");
  test::write_tiny_dataset(data, 3000, 800);
  const std::string run = test::fresh_temp_dir("nan_run");
  CpuBackend backend;
  TrainOptions o = small_options(data, run);
  o.stop_after = 2;
  train(small_config(2), o, backend);
  // Poison the checkpointed weights, as a diverged run would have them, and resume.
  {
    Model model(small_config(2), backend);
    AdamW optimizer(backend, model.params());
    TrainingState state = checkpoint_load(run, model, optimizer);
    backend.fill(model.params().get("final_norm.weight").value, std::nan(""));
    checkpoint_save(run, model, optimizer, state);
  }
  const auto good = bytes_of(run + "/checkpoints/step_00000002/state.json");
  TrainOptions resume = small_options(data, run);
  resume.resume = true;
  try {
    train(ModelConfig{}, resume, backend);
    FAIL() << "NaN loss did not stop training";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("diverged at step 3"), std::string::npos) << msg;
    EXPECT_NE(msg.find("checkpoint"), std::string::npos) << msg;
  }
  EXPECT_EQ(bytes_of(run + "/checkpoints/step_00000002/state.json"), good);
}

TEST(Trainer, TrainsWithoutAValidationSplit) {
  const std::string data = test::fresh_temp_dir("noval_data");
  test::write_tiny_dataset(data, 3000, 800);
  fs::remove(fs::path(data) / "data_val_000000.bin");
  const std::string run = test::fresh_temp_dir("noval_run");
  CpuBackend backend;
  TrainOptions o = small_options(data, run);
  o.steps = 3;
  const TrainResult r = train(small_config(1), o, backend);
  EXPECT_EQ(r.steps_done, 3);
  EXPECT_TRUE(std::isnan(r.last_val_loss));
  EXPECT_TRUE(std::isnan(r.unigram_val_loss));
}

TEST(Trainer, BadOptionsAreNamed) {
  TrainOptions o;
  o.steps = 0;
  o.batch = -1;
  try {
    train_options_validate(o);
    FAIL();
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("--steps"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--batch"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--data"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace sf
