// cmd_prepare.cpp — `stagformer prepare`: tokenise text files into llm.c shards with a
// validation split by document (src/data/prepare.h does the work; this file is the CLI).
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "cli_common.h"
#include "commands.h"
#include "core/progress.h"
#include "data/prepare.h"

namespace sf::cli {

namespace {

struct PrepareArguments {
  PrepareOptions options;
  std::vector<std::string> inputs;
  bool no_progress = false;
  int threads = 0;
};

// "1234567" -> "1,234,567": exact counts, readable.
std::string with_thousands(int64_t value) {
  std::string digits = std::to_string(value < 0 ? -value : value);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return value < 0 ? "-" + out : out;
}

std::string plural(int64_t count, const char* singular, const char* plural_form) {
  return with_thousands(count) + " " + (count == 1 ? singular : plural_form);
}

// The shard files of one split, short: all names when few, else the first and the last.
std::string shard_names(const PrepareStats& stats, const std::string& split) {
  std::vector<std::string> names;
  for (const ShardInfo& shard : stats.shards)
    if (shard.split == split) names.push_back(shard.file);
  if (names.empty()) return "-";
  if (names.size() <= 3) {
    std::string out;
    for (const std::string& name : names) out += (out.empty() ? "" : " ") + name;
    return out;
  }
  return names.front() + " .. " + names.back();
}

void print_summary(const PrepareArguments& args, const PrepareStats& stats) {
  std::printf("prepared %s (%s bytes) with the %s tokenizer (vocab %d) in %.1f s\n",
              plural(stats.files, "file", "files").c_str(), with_thousands(stats.bytes).c_str(),
              stats.tokenizer.c_str(), stats.vocab_size, stats.seconds);
  for (const auto& [split, s] : {std::pair<std::string, const SplitStats&>{"train", stats.train},
                                 std::pair<std::string, const SplitStats&>{"val", stats.val}}) {
    std::printf("  %-5s %16s %18s %12s  %s\n", split.c_str(),
                plural(s.documents, "document", "documents").c_str(),
                plural(s.tokens, "token", "tokens").c_str(), plural(s.shards, "shard", "shards").c_str(),
                shard_names(stats, split).c_str());
  }
  if (stats.empty_files > 0)
    std::printf("  skipped %s\n", plural(stats.empty_files, "empty file", "empty files").c_str());
  if (!stats.removed_shards.empty())
    std::printf("  removed %s left by an earlier run\n",
                plural(static_cast<int64_t>(stats.removed_shards.size()), "stale shard", "stale shards").c_str());
  std::printf("  written to %s (with tokenizer.json and prepare.json)\n", args.options.out_dir.c_str());
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  auto args = std::make_shared<PrepareArguments>();
  CLI::App* cmd = app.add_subcommand(
      "prepare",
      "Tokenise text files into llm.c token shards (train and validation splits) for training.\n"
      "Each file is one document (or several, cut by --doc-boundary); an end-of-text token goes\n"
      "before each document; whole documents are assigned to the validation split.");
  PrepareOptions& o = args->options;
  cmd->add_option("--tokenizer", o.tokenizer, "gpt2 (GPT-2 byte-level BPE, vocab 50257) or byte (vocab 257)")
      ->required()
      ->check(CLI::IsMember({"gpt2", "byte"}));
  cmd->add_option("--vocab", o.ranks_path,
                  "GPT-2 ranks file (tiktoken format); default: $STAGFORMER_GPT2_RANKS or\n"
                  "third_party_data/gpt-tokenizer/r50k_base.tiktoken")
      ->check(CLI::ExistingFile);
  cmd->add_option("--out", o.out_dir, "output folder (created if missing)")->required();
  cmd->add_option("--val-fraction", o.val_fraction,
                  "fraction of documents (not tokens) put in the validation split, in [0, 1);\n"
                  "0 = no validation split")
      ->capture_default_str();
  cmd->add_option("--shard-tokens", o.shard_tokens, "tokens per shard file (the last one of a split is shorter)")
      ->capture_default_str();
  cmd->add_option("--doc-boundary", o.doc_boundary,
                  "PCRE2 regex (multiline): cut each file into documents before every line in\n"
                  "which it matches, e.g. '^CHAPTER ' (a single book can then be split)");
  cmd->add_option("--prefix", o.prefix, "shard file names: PREFIX_train_000000.bin, PREFIX_val_000000.bin")
      ->capture_default_str();
  cmd->add_option("--seed", o.seed, "seed of the train/validation assignment of documents")
      ->capture_default_str();
  cmd->add_option("-t,--threads", args->threads, "tokenising threads (0: the cores not busy with other work)")->capture_default_str();
  cmd->add_flag("--no-progress", args->no_progress, "do not show the progress bar");
  cmd->add_option("inputs", args->inputs,
                  "text files and folders (walked recursively, hidden files skipped, sorted by path)")
      ->type_name("PATH")
      ->required();
  cmd->footer(
      "Examples:\n"
      "  stagformer prepare --tokenizer gpt2 --out data/moby --doc-boundary '^CHAPTER ' \\\n"
      "      third_party_data/moby-dick.txt\n"
      "  stagformer prepare --tokenizer byte --out data/notes --val-fraction 0.1 notes/\n"
      "Writes OUT/PREFIX_{train,val}_NNNNNN.bin (llm.c format), OUT/tokenizer.json and\n"
      "OUT/prepare.json (counts, options, sha256 of every shard). See docs/data.md.");
  cmd->callback([args]() {
    set_threads(args->threads);
    args->options.progress = args->no_progress ? ProgressOutput::quiet : ProgressOutput::automatic;
    const PrepareStats stats = prepare_corpus(args->inputs, args->options);
    print_summary(*args, stats);
  });
}

}  // namespace sf::cli
