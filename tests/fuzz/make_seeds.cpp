// make_seeds.cpp — writes the seed corpus of every harness of tests/fuzz with the project's own
// writers (write_safetensors, model_save, config_save, tokenizer_spec_save, write_shard,
// checkpoint_save, MetricsLog, the file rendezvous), so the fuzzers start from valid inputs.
//
//   sf_fuzz_make_seeds OUT_DIR    writes OUT_DIR/<harness>/<seed>
//
// (scripts/fuzz.sh passes build-fuzz/corpus.)
//
// Exceptions: the ranks-file seeds are the first lines of the real r50k_base.tiktoken (the
// project has no ranks writer), and the TCP rendezvous seeds are built from its wire format
// (rendezvous_tcp.cpp) since its messages exist only on sockets. Seeds are generated, never
// committed.
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/rng.h"
#include "cpu/cpu_backend.h"
#include "data/byte_tokenizer.h"
#include "data/shards.h"
#include "data/tokenizer_files.h"
#include "distributed/rendezvous.h"
#include "fuzz_formats.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/model_io.h"
#include "train/adamw.h"
#include "train/checkpoint.h"
#include "train/metrics_log.h"

namespace fs = std::filesystem;

namespace {

fs::path out_root;
int seeds_written = 0;

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void put(const std::string& harness, const std::string& name, const std::string& bytes) {
  const fs::path dir = out_root / harness;
  fs::create_directories(dir);
  std::ofstream out(dir / name, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + (dir / name).string());
  ++seeds_written;
}

void put_file(const std::string& harness, const std::string& name, const fs::path& from) {
  put(harness, name, read_all(from));
}

// A scratch folder for the writers, removed at the end.
fs::path work_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("sf-fuzz-seeds-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

sf::Tensor filled(const sf::Shape& shape, sf::DType dtype, uint64_t seed) {
  sf::Tensor t = sf::Tensor::zeros(shape, dtype);
  auto* bytes = static_cast<uint8_t*>(t.raw());
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < t.nbytes(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    bytes[i] = static_cast<uint8_t>(x);
  }
  return t;
}

sf::ModelConfig small_config(int64_t stacks) {
  sf::ModelConfig c = sf::fuzz::checkpoint_model_config();
  c.n_stacks = stacks;
  if (stacks == 1) c.combine = sf::CombineMode::last;
  c.validate("seed config");
  return c;
}

void safetensors_seeds() {
  const fs::path dir = work_dir() / "safetensors";
  fs::create_directories(dir);
  std::vector<std::pair<std::string, fs::path>> files;

  sf::CpuBackend backend;
  sf::Model model(small_config(2), backend);
  model.initialize();
  sf::model_save(model, (dir / "model").string());
  files.emplace_back("model.safetensors", dir / "model" / "model.safetensors");

  std::vector<std::pair<std::string, sf::Tensor>> dtypes;
  uint64_t seed = 1;
  for (sf::DType d : {sf::DType::f32, sf::DType::f64, sf::DType::bf16, sf::DType::i32,
                      sf::DType::u16, sf::DType::u32, sf::DType::i64})
    dtypes.emplace_back("t_" + std::string(sf::dtype_name(d)), filled({2, 3}, d, seed++));
  dtypes.emplace_back("scalar", filled({}, sf::DType::f32, seed++));
  dtypes.emplace_back("empty", filled({0, 4}, sf::DType::f32, seed++));
  dtypes.emplace_back("vector", filled({5}, sf::DType::bf16, seed++));
  dtypes.emplace_back("cube", filled({2, 1, 3}, sf::DType::i64, seed++));
  sf::write_safetensors((dir / "dtypes.safetensors").string(), dtypes,
                        {{"format", "pt"}, {"note", "made by make_seeds"}});
  files.emplace_back("dtypes.safetensors", dir / "dtypes.safetensors");

  sf::write_safetensors((dir / "metadata_only.safetensors").string(), {}, {{"format", "pt"}});
  files.emplace_back("metadata_only.safetensors", dir / "metadata_only.safetensors");
  sf::write_safetensors((dir / "one.safetensors").string(),
                        {{"w", filled({1}, sf::DType::f32, 9)}});
  files.emplace_back("one.safetensors", dir / "one.safetensors");

  for (const auto& [name, path] : files) {
    put_file("fuzz_safetensors", name, path);
    put_file("fuzz_safetensors_header", name, path);
  }
}

void config_seeds() {
  const fs::path dir = work_dir() / "config";
  fs::create_directories(dir);
  std::vector<std::pair<std::string, sf::ModelConfig>> configs;
  sf::ModelConfig defaults;
  defaults.validate("defaults");
  configs.emplace_back("default", defaults);
  configs.emplace_back("tiny_p1", small_config(1));
  configs.emplace_back("tiny_p2_linear", small_config(2));
  sf::ModelConfig shared = small_config(3);
  shared.weights = sf::WeightSharing::shared;
  shared.cross_window = 2;
  shared.cross_rope = false;
  shared.tie_embeddings = true;
  shared.n_kv_heads = 1;
  shared.validate("shared");
  configs.emplace_back("shared_window_gqa", shared);
  for (const auto& [name, config] : configs) {
    const fs::path path = dir / (name + ".json");
    sf::config_save(config, path.string());
    put_file("fuzz_config", name + ".json", path);
  }
  // A hand-edited config: only some fields, n_kv_heads = 0 (= n_heads).
  put("fuzz_config", "partial.json",
      "{\"vocab_size\": 256, \"d_model\": 64, \"n_heads\": 4, \"n_kv_heads\": 0, \"n_stacks\": 1,\n"
      " \"layers_per_stack\": 2, \"rope_theta\": 1e4, \"norm_eps\": 1e-6}\n");

  const char* overrides[][2] = {
      {"dims", "d_model=16\nn_heads=4\nn_kv_heads=2\nffn_hidden=40"},
      {"stagger", "n_stacks=3\nweights=shared\ncombine=linear\ncross_window=1\ncross_rope=false"},
      {"floats", "rope_theta=500000.0\nnorm_eps=1e-6\ninit_std=0.01"},
      {"misc", "tie_embeddings=true\nseed=42\nvocab_size=50304\nmax_seq_len=2048"},
      {"string", "weights=separate"},
  };
  for (const auto& [name, text] : overrides) put("fuzz_config_override", name, text);
}

void tokenizer_seeds() {
  const fs::path dir = work_dir() / "tokenizer";
  fs::create_directories(dir);
  const sf::ByteTokenizer byte;
  sf::tokenizer_spec_save(sf::tokenizer_spec_of(byte), (dir / "byte.json").string());
  put_file("fuzz_tokenizer_spec", "byte.json", dir / "byte.json");
  sf::tokenizer_spec_save({"gpt2", 50257, 50256}, (dir / "gpt2.json").string());
  put_file("fuzz_tokenizer_spec", "gpt2.json", dir / "gpt2.json");

  // Ranks files: the first lines of the real one (ranks in file order; 0..255 are the bytes).
  std::ifstream full(sf::default_ranks_path(), std::ios::binary);
  std::string text, line;
  for (size_t lines = 0; lines < 320 && std::getline(full, line); ++lines) {
    text += line + "\n";
    if (lines + 1 == 256) put("fuzz_bpe_ranks", "bytes_only.tiktoken", text);
  }
  put("fuzz_bpe_ranks", "first_320.tiktoken", text);
}

void text_seeds() {
  // The demo corpus lies beside the ranks file's folder (scripts/fetch_data.sh fetches both).
  const fs::path book_path =
      fs::path(sf::default_ranks_path()).parent_path().parent_path() / "moby-dick.txt";
  const std::string book = fs::exists(book_path)
                               ? read_all(book_path)
                               : std::string("CHAPTER 1. Loomings.\n\nCall me Ishmael.\n");
  const size_t chapter = book.find("CHAPTER 1.");
  const std::string start = book.substr(chapter == std::string::npos ? 0 : chapter, 1500);
  const std::string middle = book.substr(book.size() / 2, 700);
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"moby_start.txt", start},
      {"moby_middle.txt", middle},
      {"contractions.txt", "I'm sure they'll say it's what we've done; you'd've, He'd.\n"},
      {"unicode.txt",
       "na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e "
       "\xf0\x9f\x90\x8b 123 4.5e6\t\ttabs\r\n  spaces   \n"},
      {"special.txt", "before<|endoftext|>after <|endoftext|><|endoftext|>"},
      {"invalid_utf8.txt", "ok \xff\xfe \xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 tail \xe2\x82"},
  };
  for (const auto& [name, text] : texts) put("fuzz_bpe_encode", name, text);

  // prepare: byte i picks kPrepareVariants[i]; chapters give the boundaries something to cut.
  const std::string chapters =
      "CHAPTER 1. Loomings.\n\nCall me Ishmael.\n\nCHAPTER 2. The Carpet-Bag.\n\nI stuffed a "
      "shirt or two into my old carpet-bag.\n\nCHAPTER 3. The Spouter-Inn.\nEntering that "
      "gable-ended Spouter-Inn.\n";
  for (size_t v = 0; v < sf::fuzz::kPrepareVariants.size(); ++v) {
    put("fuzz_prepare", "chapters_" + std::to_string(v),
        std::string(1, static_cast<char>(v)) + chapters);
    put("fuzz_prepare", "moby_" + std::to_string(v),
        std::string(1, static_cast<char>(v)) + start.substr(0, 600));
  }
}

void shard_seeds() {
  const fs::path dir = work_dir() / "shards";
  fs::create_directories(dir);
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 100; ++i) tokens.push_back((i * 7919) % 50257);
  sf::write_shard(dir / "u16.bin", tokens, 50257);
  put_file("fuzz_shards", "u16.bin", dir / "u16.bin");
  std::vector<int32_t> wide;
  for (int32_t i = 0; i < 40; ++i) wide.push_back(i * 3001);
  sf::write_shard(dir / "u32.bin", wide, 128256);
  put_file("fuzz_shards", "u32.bin", dir / "u32.bin");
  sf::write_shard(dir / "empty.bin", std::vector<int32_t>{}, 256);
  put_file("fuzz_shards", "empty.bin", dir / "empty.bin");
}

void checkpoint_seeds() {
  sf::CpuBackend backend;
  for (int variant = 0; variant < 2; ++variant) {
    const fs::path run = work_dir() / ("run" + std::to_string(variant));
    sf::Model model(sf::fuzz::checkpoint_model_config(), backend);
    model.initialize();
    sf::AdamW optimizer(backend, model.params());
    optimizer.set_step_count(variant == 0 ? 1 : 12345);
    sf::TrainingState state;
    state.step = 1;  // the folder name the container's files are written under
    state.data = {variant, 4096 * variant, variant};
    state.rng = {1, 2, 3, 4};
    state.elapsed_seconds = 1.5 * variant;
    state.tokens_seen = 8192 * variant;
    sf::checkpoint_save(run.string(), model, optimizer, state);
    std::vector<std::string> contents;
    for (std::string_view f : sf::fuzz::kCheckpointFiles) contents.push_back(read_all(run / f));
    put("fuzz_checkpoint", "checkpoint_" + std::to_string(variant),
        sf::fuzz::checkpoint_container(contents));
  }
}

void metrics_seeds() {
  const fs::path dir = work_dir() / "metrics";
  fs::create_directories(dir);
  const fs::path path = dir / "metrics.jsonl";
  {
    sf::MetricsLog log(path.string());
    log.append({{"step", 0}, {"parameters", 1234}, {"unigram_val_loss", 5.5}});
    for (int step = 10; step <= 200; step += 10) {
      log.append({{"step", step},
                  {"loss", 6.0 - step / 50.0},
                  {"lr", 1e-3},
                  {"grad_norm", 0.8},
                  {"tokens", 4096 * step},
                  {"tok_per_s", 5123.0}});
      if (step % 50 == 0)
        log.append({{"step", step},
                    {"val_loss", 5.9 - step / 60.0},
                    {"val_ppl", 300.0},
                    {"val_tokens", 8192}});
    }
  }
  put_file("fuzz_metrics", "train_and_val.jsonl", path);
  const fs::path val_only = dir / "val_only.jsonl";
  {
    sf::MetricsLog log(val_only.string());
    log.append({{"step", 100}, {"val_loss", 3.25}, {"val_ppl", 25.8}, {"val_tokens", 100}});
    log.append({{"step", 300}, {"val_loss", 3.05}, {"val_ppl", 21.1}, {"val_tokens", 100}});
  }
  put_file("fuzz_metrics", "val_only.jsonl", val_only);
}

void rendezvous_seeds() {
  // The file rank 0 writes, caught before the other rank acknowledges it.
  const fs::path init = work_dir() / "rendezvous" / "init";
  fs::create_directories(init.parent_path());
  sf::DistEnv env;
  env.world_size = 2;
  env.init_file = init.string();
  env.init_timeout_s = 30;
  std::string blob;
  for (int i = 0; i < 128; ++i) blob += static_cast<char>(i * 37 + 11);  // an NCCL id's size
  std::thread rank0([&] {
    try {
      sf::rendezvous_share_file(env, blob);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "make_seeds: file rendezvous: %s\n", e.what());
    }
  });
  std::string file;
  while (file.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (fs::exists(init)) file = read_all(init);
  }
  std::ofstream(init.string() + ".ack.1").flush();
  rank0.join();
  put("fuzz_rendezvous_file", "nccl_id", file);

  // TCP messages (big-endian u32s; rendezvous_tcp.cpp): byte 0 = an answer, byte 1 = a hello.
  auto be = [](uint32_t v) {
    const char b[4] = {static_cast<char>(v >> 24), static_cast<char>(v >> 16),
                       static_cast<char>(v >> 8), static_cast<char>(v)};
    return std::string(b, 4);
  };
  put("fuzz_rendezvous_tcp", "answer_ok", std::string(1, '\0') + be(0) + be(128) + blob);
  const std::string reason = "rank 1 has WORLD_SIZE=3 but rank 0 has WORLD_SIZE=2";
  put("fuzz_rendezvous_tcp", "answer_refused",
      std::string(1, '\0') + be(1) + be(reason.size()) + reason);
  put("fuzz_rendezvous_tcp", "hello_ok",
      "\x01"
      "SFRDZV01" +
          be(1) + be(2));
  put("fuzz_rendezvous_tcp", "hello_bad_world",
      "\x01"
      "SFRDZV01" +
          be(1) + be(3));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  out_root = argv[1];
  omp_set_num_threads(1);
  try {
    safetensors_seeds();
    config_seeds();
    tokenizer_seeds();
    text_seeds();
    shard_seeds();
    checkpoint_seeds();
    metrics_seeds();
    rendezvous_seeds();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_seeds: %s\n", e.what());
    fs::remove_all(work_dir());
    return 1;
  }
  fs::remove_all(work_dir());
  std::printf("make_seeds: %d seeds in %s\n", seeds_written, out_root.c_str());
  return 0;
}
