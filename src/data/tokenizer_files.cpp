// tokenizer_files.cpp — tokenizer.json I/O and the ranks-file search.
#include "data/tokenizer_files.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_input.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::json;

TokenizerSpec tokenizer_spec_of(const Tokenizer& t) {
  return TokenizerSpec{t.name(), t.vocab_size(), t.eot_id()};
}

void tokenizer_spec_save(const TokenizerSpec& spec, const std::string& path) {
  const json j{{"kind", spec.kind}, {"vocab_size", spec.vocab_size}, {"eot_id", spec.eot_id}};
  write_file_atomic(path, j.dump(2) + "\n");
}

TokenizerSpec tokenizer_spec_load(const std::string& path) {
  const json j = json_read_file(path, kJsonSmallFileBytes);
  SF_CHECK(j.is_object(), "{}: not a tokenizer description (a JSON object), got {}", path,
           json_excerpt(j));
  auto field = [&](const char* key) -> const json& { return json_member(j, key, path); };
  auto where = [&](const char* key) { return fmt::format("{}: field '{}'", path, key); };
  TokenizerSpec spec;
  spec.kind = json_string(field("kind"), where("kind"));
  SF_CHECK(spec.kind == "gpt2" || spec.kind == "byte",
           "{}: expected gpt2 or byte, got {}", where("kind"), json_excerpt(field("kind")));
  spec.vocab_size = static_cast<int32_t>(json_int(field("vocab_size"), where("vocab_size"), 1, INT32_MAX));
  spec.eot_id = static_cast<int32_t>(json_int(field("eot_id"), where("eot_id"), 0, INT32_MAX));
  SF_CHECK(spec.eot_id < spec.vocab_size, "{}: eot_id {} is not below vocab_size {}", path,
           spec.eot_id, spec.vocab_size);
  return spec;
}

std::string default_ranks_path() {
  if (const char* env = std::getenv("STAGFORMER_GPT2_RANKS"); env && *env) {
    SF_CHECK(fs::exists(env), "STAGFORMER_GPT2_RANKS={}: no such file", env);
    return env;
  }
  const fs::path relative = fs::path("third_party_data") / "gpt-tokenizer" / "r50k_base.tiktoken";
  std::vector<fs::path> tried{fs::current_path() / relative};
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    for (fs::path dir = exe.parent_path(); !dir.empty(); dir = dir.parent_path()) {
      tried.push_back(dir / relative);
      if (dir == dir.root_path()) break;
    }
  }
  std::string list;
  for (const fs::path& p : tried) {
    if (fs::exists(p, ec)) return p.string();
    list += "\n  " + p.string();
  }
  fail("GPT-2 ranks file r50k_base.tiktoken not found (run scripts/setup.sh, or pass --vocab FILE, "
       "or set STAGFORMER_GPT2_RANKS); tried:" + list);
}

std::unique_ptr<Tokenizer> tokenizer_from_spec(const TokenizerSpec& spec,
                                               const std::string& ranks_path) {
  const std::string ranks =
      spec.kind == "gpt2" ? (ranks_path.empty() ? default_ranks_path() : ranks_path) : "";
  auto tokenizer = make_tokenizer(spec.kind, ranks);
  SF_CHECK(tokenizer->vocab_size() == spec.vocab_size && tokenizer->eot_id() == spec.eot_id,
           "tokenizer '{}' has vocab {} and end-of-text {}, but the data/model expects vocab {} "
           "and end-of-text {}",
           spec.kind, tokenizer->vocab_size(), tokenizer->eot_id(), spec.vocab_size, spec.eot_id);
  return tokenizer;
}

}  // namespace sf
