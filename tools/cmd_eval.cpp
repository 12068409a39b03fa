// cmd_eval.cpp — `stagformer eval`: loss and perplexity of a model on shards or a text file.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli_common.h"
#include "commands.h"
#include "core/error.h"
#include "data/batch_loader.h"
#include "data/tokenizer_files.h"
#include "model/model_io.h"
#include "train/evaluate.h"

namespace sf::cli {

namespace {

struct EvalArgs {
  std::string model_path, data_dir, text_path, split = "val", device = "cpu", vocab;
  int64_t batch = 4, seq = 0, max_batches = 0;
  int threads = 0;
  bool json = false;
};

void run(const EvalArgs& a) {
  SF_CHECK(a.data_dir.empty() != a.text_path.empty(), "give exactly one of --data DIR or --text FILE");
  if (const ThreadChoice threads = set_threads(a.threads); !threads.note.empty())
    std::fprintf(stderr, "eval: threads: %s\n", threads.note.c_str());
  auto backend = make_backend(a.device);
  const ModelFiles files = model_files(a.model_path);
  const ModelConfig config = config_load(files.config);
  model_weights_check(files.weights, config);  // before the model is allocated
  Model model(config, *backend, DType::f32);
  model_load_weights(model, files.weights);
  const int64_t seq = a.seq > 0 ? a.seq : std::min<int64_t>(config.max_seq_len, 256);
  SF_CHECK(seq <= config.max_seq_len, "--seq {} exceeds the model's context {}", seq, config.max_seq_len);

  EvalResult r;
  std::string source;
  // Progress on stderr (a bar on a terminal, a line every few seconds in a log); --json output
  // on stdout stays clean.
  ProgressBar progress("eval", 0, "tok");
  if (!a.data_dir.empty()) {
    const TokenizerSpec spec = tokenizer_spec_load((std::filesystem::path(a.data_dir) / "tokenizer.json").string());
    SF_CHECK(spec.vocab_size <= config.vocab_size, "{}: tokenizer has {} ids, the model only {}",
             a.data_dir, spec.vocab_size, config.vocab_size);
    BatchLoader loader(a.data_dir, a.split, a.batch, seq, spec.vocab_size);
    r = evaluate_loader(model, loader, a.max_batches, &progress);
    source = a.data_dir + " (" + a.split + ")";
  } else {
    const std::string spec_path = (std::filesystem::path(files.config).parent_path() / "tokenizer.json").string();
    const TokenizerSpec spec = tokenizer_spec_load(spec_path);
    auto tokenizer = tokenizer_from_spec(spec, a.vocab);
    std::ifstream in(a.text_path, std::ios::binary);
    SF_CHECK(in.good(), "{}: cannot open text file", a.text_path);
    std::stringstream buffer;
    buffer << in.rdbuf();
    std::vector<int32_t> ids{tokenizer->eot_id()};  // documents start after end-of-text
    const std::vector<int32_t> text_ids = tokenizer->encode(buffer.str());
    ids.insert(ids.end(), text_ids.begin(), text_ids.end());
    SF_CHECK(ids.size() >= 2, "{}: the text is empty", a.text_path);
    r = evaluate_tokens(model, ids, seq, &progress);
    source = a.text_path;
  }
  progress.finish();
  if (a.json) {
    const nlohmann::json j{{"model", a.model_path}, {"source", source}, {"loss", r.loss},
                           {"perplexity", r.perplexity}, {"tokens", r.tokens},
                           {"seq", seq}};
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf("%s on %s: loss %.4f nats/token, perplexity %.3f (%lld tokens, windows of %lld)\n",
                a.model_path.c_str(), source.c_str(), r.loss, r.perplexity,
                static_cast<long long>(r.tokens), static_cast<long long>(seq));
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Loss and perplexity of a model on prepared shards or on a text file.\n"
      "Example: stagformer eval -m runs/stag --data data/moby --json");
  cmd->add_option("-m,--model", a->model_path, "Run folder or model.safetensors (config.json beside)")->required();
  cmd->add_option("--data", a->data_dir, "Folder of shards (its validation split by default)");
  cmd->add_option("--split", a->split, "train or val")->capture_default_str();
  cmd->add_option("--text", a->text_path, "A text file, tokenised with the model's tokenizer");
  cmd->add_option("--vocab", a->vocab, "GPT-2 ranks file (default: the one set-up fetched)");
  cmd->add_option("-b,--batch", a->batch, "Sequences per forward (shards)")->capture_default_str();
  cmd->add_option("-c,--seq", a->seq, "Window length (default: min(context, 256))");
  cmd->add_option("--max-batches", a->max_batches, "Evaluate at most N batches (0: all)");
  cmd->add_option("--device", a->device, "cpu or cuda")->capture_default_str();
  cmd->add_option("-t,--threads", a->threads, "CPU threads (0: the cores not busy with other work)");
  cmd->add_flag("--json", a->json, "Print JSON");
  cmd->callback([a] { run(*a); });
}

}  // namespace sf::cli
