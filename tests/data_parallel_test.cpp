// data_parallel_test.cpp — data-parallel training without GPUs: the micro-batch schedule, the
// trainer with two ranks (threads of this process joined by an in-memory collective) against
// one rank with doubled --grad-accum, resume of a data-parallel run, the CLI's refusal of
// WORLD_SIZE > 1 on the CPU, and scripts/launch.sh (environment, prefixes, failure handling).
#include <gtest/gtest.h>

#include <barrier>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "cpu/cpu_backend.h"
#include "distributed/collective.h"
#include "io/atomic_file.h"
#include "support/run_compare.h"
#include "support/shell.h"
#include "support/tiny_data.h"
#include "support/tiny_models.h"
#include "train/data_parallel.h"
#include "train/trainer.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

TEST(MicroBatchSchedule, RanksShareEveryUpdateExactlyOnce) {
  for (int world : {1, 2, 3}) {
    for (int64_t accum : {1, 2, 4}) {
      std::multiset<int64_t> trained;
      for (int rank = 0; rank < world; ++rank) {
        const MicroBatchSchedule s(rank, world, accum);
        EXPECT_EQ(s.per_update(), world * accum);
        EXPECT_DOUBLE_EQ(s.loss_scale(), 1.0 / static_cast<double>(world * accum));
        int64_t mine = 0;
        for (int64_t i = 0; i < s.per_update(); ++i)
          if (s.is_mine(i)) {
            trained.insert(i);
            ++mine;
            EXPECT_EQ(i % world, rank);
          }
        EXPECT_EQ(mine, accum) << "rank " << rank << " of " << world;
      }
      EXPECT_EQ(trained.size(), static_cast<size_t>(world * accum));
      EXPECT_EQ(std::set<int64_t>(trained.begin(), trained.end()).size(), trained.size());
    }
  }
  EXPECT_THROW(MicroBatchSchedule(2, 2, 1), Error);
}

TEST(SingleProcessCollective, IsTheIdentity) {
  SingleProcessCollective one;
  EXPECT_EQ(one.rank(), 0);
  EXPECT_EQ(one.world_size(), 1);
  EXPECT_TRUE(one.is_root());
  EXPECT_EQ(one.all_reduce_sum(2.5), 2.5);
  Tensor t = Tensor::zeros({3});
  t.data<float>()[1] = 4.0f;
  one.all_reduce_sum(t);
  EXPECT_EQ(t.data<float>()[1], 4.0f);
  EXPECT_TRUE(any_rank(one, true));
  EXPECT_FALSE(any_rank(one, false));
}

// ---- ranks as threads ------------------------------------------------------------------------

// What the ranks of one in-process job share.
struct ThreadJob {
  explicit ThreadJob(int world) : world_size(world), sync(world), staged(world), values(world) {}
  int world_size;
  std::barrier<> sync;
  std::vector<std::vector<std::vector<float>>> staged;  // [rank][tensor][element]
  std::vector<double> values;
};

// A Collective over threads and CPU tensors. Sums run in rank order, so every rank gets the
// same bits (as NCCL guarantees for its all-reduce).
class ThreadCollective final : public Collective {
 public:
  ThreadCollective(ThreadJob& job, int rank) : job_(job), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return job_.world_size; }
  using Collective::all_reduce_sum;
  void all_reduce_sum(std::vector<Tensor>& tensors) override {
    auto& mine = job_.staged[rank_];
    mine.clear();
    for (const Tensor& t : tensors) mine.emplace_back(t.data<float>(), t.data<float>() + t.numel());
    job_.sync.arrive_and_wait();
    for (size_t i = 0; i < tensors.size(); ++i) {
      float* out = tensors[i].data<float>();
      for (int64_t k = 0; k < tensors[i].numel(); ++k) {
        float sum = job_.staged[0][i][k];
        for (int r = 1; r < job_.world_size; ++r) sum += job_.staged[r][i][k];
        out[k] = sum;
      }
    }
    job_.sync.arrive_and_wait();  // nobody stages again before everyone has read
  }
  double all_reduce_sum(double value) override {
    job_.values[rank_] = value;
    job_.sync.arrive_and_wait();
    double sum = 0.0;
    for (double v : job_.values) sum += v;
    job_.sync.arrive_and_wait();
    return sum;
  }
  void barrier() override { job_.sync.arrive_and_wait(); }

 private:
  ThreadJob& job_;
  int rank_;
};

ModelConfig small_config() { return test::byte_training_config(); }

TrainOptions small_options(const std::string& data, const std::string& run) {
  TrainOptions o;
  o.data_dir = data;
  o.run_dir = run;
  o.steps = 6;
  o.batch = 2;
  o.seq = 16;
  o.lr = 3e-3;
  o.warmup = 2;
  o.eval_every = 3;
  o.eval_batches = 2;
  o.checkpoint_every = 0;
  o.progress = false;
  return o;
}

// Trains with `world` ranks as threads; `run_of(rank)` is each rank's run folder.
std::vector<TrainResult> train_threads(int world, const ModelConfig& config, TrainOptions o,
                                       const std::function<std::string(int)>& run_of) {
  ThreadJob job(world);
  std::vector<TrainResult> results(world);
  std::vector<std::string> errors(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank)
    threads.emplace_back([&, rank] {
      CpuBackend backend;
      ThreadCollective collective(job, rank);
      TrainOptions mine = o;
      mine.run_dir = run_of(rank);
      mine.collective = &collective;
      try {
        results[rank] = train(config, mine, backend);
      } catch (const std::exception& e) {
        errors[rank] = e.what();  // (a throwing rank would leave the others waiting: tests do not)
      }
    });
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < world; ++rank) EXPECT_EQ(errors[rank], "") << "rank " << rank;
  return results;
}

TEST(DataParallelTrainer, TwoRanksMatchOneRankWithTheSameGlobalBatch) {
  const std::string data = test::fresh_temp_dir("dp_data");
  test::write_tiny_dataset(data, 6000, 1500);
  const std::string single = test::fresh_temp_dir("dp_single");
  const std::string parallel = test::fresh_temp_dir("dp_parallel");
  const std::string rank1_dir = parallel + "_rank1_never_written";

  CpuBackend backend;
  TrainOptions one = small_options(data, single);
  one.grad_accum = 2;
  const TrainResult expected = train(small_config(), one, backend);

  const auto results = train_threads(2, small_config(), small_options(data, ""),
                                     [&](int rank) { return rank == 0 ? parallel : rank1_dir; });
  test::expect_metrics_close(parallel, single, 1e-6);
  test::expect_weights_close(parallel + "/model.safetensors", single + "/model.safetensors", 1e-6);
  for (const TrainResult& r : results) {
    EXPECT_EQ(r.steps_done, 6);
    EXPECT_EQ(r.tokens, expected.tokens);  // the global batch: 2 ranks x 2 x 16 tokens per update
    EXPECT_NEAR(r.last_train_loss, expected.last_train_loss, 1e-6 * expected.last_train_loss);
    EXPECT_NEAR(r.last_val_loss, expected.last_val_loss, 1e-6 * expected.last_val_loss);
  }
  // Only rank 0 writes: rank 1's run folder never came to exist.
  EXPECT_FALSE(fs::exists(rank1_dir));
  const auto options = nlohmann::json::parse(std::ifstream(parallel + "/train.json"));
  EXPECT_EQ(options["world_size"], 2);
}

TEST(DataParallelTrainer, ResumeContinuesExactly) {
  const std::string data = test::fresh_temp_dir("dp_resume_data");
  test::write_tiny_dataset(data, 6000, 1500);
  const std::string straight = test::fresh_temp_dir("dp_resume_straight");
  const std::string halves = test::fresh_temp_dir("dp_resume_halves");
  // A shared file system: every rank names the same run folder.
  train_threads(2, small_config(), small_options(data, ""), [&](int) { return straight; });
  TrainOptions first = small_options(data, "");
  first.stop_after = 3;
  const auto stopped = train_threads(2, small_config(), first, [&](int) { return halves; });
  for (const TrainResult& r : stopped) {
    EXPECT_TRUE(r.interrupted);
    EXPECT_EQ(r.steps_done, 3);
  }
  TrainOptions second = small_options(data, "");
  second.resume = true;
  train_threads(2, ModelConfig{}, second, [&](int) { return halves; });
  EXPECT_EQ(read_file(straight + "/model.safetensors"), read_file(halves + "/model.safetensors"));
  test::expect_metrics_close(halves, straight, 0.0);
}

TEST(DataParallelTrainer, RanksThatStartDifferentlyAllFail) {
  const std::string data = test::fresh_temp_dir("dp_differ_data");
  test::write_tiny_dataset(data, 3000, 500);
  const std::string run = test::fresh_temp_dir("dp_differ_run");
  ThreadJob job(2);
  std::vector<std::string> errors(2);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < 2; ++rank)
    threads.emplace_back([&, rank] {
      CpuBackend backend;
      ThreadCollective collective(job, rank);
      ModelConfig config = small_config();
      config.seed += rank;  // different initial weights
      TrainOptions o = small_options(data, run);
      o.collective = &collective;
      errors[rank] = test::error_of([&] { train(config, o, backend); });
    });
  for (auto& t : threads) t.join();
  for (int rank = 0; rank < 2; ++rank)
    EXPECT_NE(errors[rank].find("rank " + std::to_string(rank) +
                                " of 2 starts from a different set of weights"),
              std::string::npos)
        << errors[rank];
}

// ---- the command line and the launcher -----------------------------------------------------

const std::string kLaunch = std::string("bash ") + SF_SOURCE_DIR + "/scripts/launch.sh";

TEST(DataParallelCli, RefusesSeveralProcessesOnTheCpu) {
  const std::string dir = test::fresh_temp_dir("dp_cli");
  test::write_tiny_dataset(dir + "/data", 3000, 500);
  const std::string train = std::string(SF_STAGFORMER_BIN) +
                            " train --config " + SF_SOURCE_DIR + "/configs/demo-stagformer.json"
                            " --data " + dir + "/data --out " + dir + "/run --steps 1 --no-progress";
  test::ShellResult r = test::run_shell(
      "WORLD_SIZE=2 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=1 " + train +
      " --device cpu");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("WORLD_SIZE=2: data-parallel training runs one process per GPU and "
                          "needs --device cuda"),
            std::string::npos)
      << r.output;
  r = test::run_shell("WORLD_SIZE=2 RANK=x " + train);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("RANK='x' is not an integer"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("LOCAL_RANK is not set"), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(dir + "/run"));
}

TEST(Launcher, SetsTheEnvironmentAndPrefixesEveryLine) {
  const test::ShellResult r = test::run_shell(
      "env -u MASTER_ADDR -u MASTER_PORT " + kLaunch + " --nproc 3 --master-port 29123 -- sh -c "
      "'echo \"$RANK/$WORLD_SIZE/$LOCAL_RANK/$LOCAL_WORLD_SIZE $MASTER_ADDR:$MASTER_PORT "
      "nvls=$NCCL_NVLS_ENABLE\"; echo to-stderr >&2'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  for (int rank = 0; rank < 3; ++rank) {
    const std::string p = "[rank " + std::to_string(rank) + "] ";
    EXPECT_NE(r.output.find(p + std::to_string(rank) + "/3/" + std::to_string(rank) +
                            "/3 127.0.0.1:29123 nvls=0\n"),
              std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find(p + "to-stderr\n"), std::string::npos) << r.output;
  }
}

TEST(Launcher, SeveralHostsNumberRanksByNode) {
  const test::ShellResult r = test::run_shell(
      kLaunch + " --nproc 2 --nnodes 3 --node-rank 2 --master-addr node0 -- sh -c "
      "'echo \"$RANK/$WORLD_SIZE/$LOCAL_RANK $MASTER_ADDR\"'");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("[rank 4] 4/6/0 node0\n"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("[rank 5] 5/6/1 node0\n"), std::string::npos) << r.output;
}

TEST(Launcher, AFailedRankStopsTheOthersAndGivesItsStatus) {
  // Rank 1 fails; rank 0 would run for a minute and ignores SIGTERM (as a rank stuck in a
  // collective would), so only the SIGKILL after the grace ends it; rank 2 stops on SIGTERM.
  const test::ShellResult r = test::run_shell(
      kLaunch + " --nproc 3 --grace 1 -- sh -c "
                "'case $RANK in 1) sleep 0.3; exit 7;; 0) trap \"\" TERM; sleep 60;; "
                "*) sleep 60;; esac'");
  EXPECT_EQ(r.exit_code, 7) << r.output;
  EXPECT_NE(r.output.find("rank 1 exited with status 7; stopping the others"), std::string::npos)
      << r.output;
  EXPECT_LT(r.seconds, 20.0);
}

TEST(Launcher, BadArgumentsAreNamed) {
  test::ShellResult r = test::run_shell(kLaunch + " --nproc two -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--nproc 'two' is not a positive integer"), std::string::npos) << r.output;
  r = test::run_shell(kLaunch + " --nproc 2");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no command"), std::string::npos) << r.output;
  r = test::run_shell("env -u MASTER_ADDR " + kLaunch + " --nproc 1 --nnodes 2 --node-rank 0 -- true");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--master-addr (or MASTER_ADDR) must name node 0's host"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace sf
