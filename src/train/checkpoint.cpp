// checkpoint.cpp — atomic multi-file checkpoints and their validated restore.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/model_io.h"

namespace sf {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

fs::path checkpoints_dir(const std::string& run_dir) { return fs::path(run_dir) / "checkpoints"; }

std::string step_dir_name(int64_t step) { return fmt::format("step_{:08d}", step); }

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  SF_CHECK(in.good(), "{}: cannot open", path.string());
  std::stringstream buffer;
  buffer << in.rdbuf();
  json j = json::parse(buffer.str(), nullptr, /*allow_exceptions=*/false);
  SF_CHECK(!j.is_discarded() && j.is_object(), "{}: not a valid JSON object", path.string());
  return j;
}

int64_t get_int(const json& j, const char* key, const fs::path& file) {
  SF_CHECK(j.contains(key) && j[key].is_number_integer(), "{}: field '{}' missing or not an integer",
           file.string(), key);
  return j[key].get<int64_t>();
}

void copy_to_host_and(Backend& backend, const Tensor& t, std::vector<std::pair<std::string, Tensor>>& out,
                      const std::string& name) {
  if (t.device() == Device::cpu) {
    out.emplace_back(name, t);
    return;
  }
  Tensor host = Tensor::zeros(t.shape(), t.dtype());
  backend.copy(host, t);
  out.emplace_back(name, host);
}

}  // namespace

std::string checkpoint_save(const std::string& run_dir, Model& model, const AdamW& optimizer,
                            const TrainingState& state, const CheckpointOptions& options) {
  SF_CHECK(options.keep >= 1, "checkpoint keep must be >= 1, got {}", options.keep);
  const fs::path root = checkpoints_dir(run_dir);
  const fs::path dir = root / step_dir_name(state.step);
  std::error_code ec;
  fs::remove_all(dir, ec);  // a leftover of an interrupted save of this same step
  fs::create_directories(dir, ec);
  SF_CHECK(!ec, "{}: cannot create checkpoint folder ({})", dir.string(), ec.message());
  auto written = [&](const fs::path& p) {
    if (options.after_file_written) options.after_file_written(p.string());
  };

  model_save(model, dir.string());  // model.safetensors + config.json
  written(dir / "model.safetensors");

  std::vector<std::pair<std::string, Tensor>> moments;
  for (const auto& [name, t] : optimizer.state_tensors())
    copy_to_host_and(model.backend(), t, moments, name);
  write_safetensors((dir / "optimizer.safetensors").string(), moments,
                    {{"adamw_step", std::to_string(optimizer.step_count())}});
  written(dir / "optimizer.safetensors");

  json rng = json::array();
  for (uint64_t w : state.rng) rng.push_back(w);
  const json st{{"step", state.step},
                {"data", {{"shard", state.data.shard}, {"offset", state.data.offset},
                          {"epoch", state.data.epoch}}},
                {"rng", rng},
                {"elapsed_seconds", state.elapsed_seconds},
                {"tokens_seen", state.tokens_seen},
                {"adamw_step", optimizer.step_count()}};
  write_file_atomic((dir / "state.json").string(), st.dump(2) + "\n");
  written(dir / "state.json");
  fsync_dir(dir);

  // The switch: from here on the new checkpoint is the latest.
  const json latest{{"step", state.step}, {"dir", step_dir_name(state.step)}};
  write_file_atomic((root / "latest.json").string(), latest.dump() + "\n");
  written(root / "latest.json");

  // Prune: keep the newest `keep` complete checkpoints; drop anything else named step_*.
  std::vector<fs::path> steps;
  for (const auto& entry : fs::directory_iterator(root, ec))
    if (entry.is_directory() && entry.path().filename().string().rfind("step_", 0) == 0)
      steps.push_back(entry.path());
  std::sort(steps.begin(), steps.end());
  std::vector<fs::path> keep_set;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const bool newer_than_latest = it->filename().string() > step_dir_name(state.step);
    if (newer_than_latest) continue;  // from an abandoned future (a run restarted earlier)
    if (static_cast<int>(keep_set.size()) < options.keep) keep_set.push_back(*it);
  }
  for (const fs::path& p : steps)
    if (std::find(keep_set.begin(), keep_set.end(), p) == keep_set.end()) fs::remove_all(p, ec);
  return dir.string();
}

bool checkpoint_exists(const std::string& run_dir) {
  return fs::exists(checkpoints_dir(run_dir) / "latest.json");
}

TrainingState checkpoint_load(const std::string& run_dir, Model& model, AdamW& optimizer) {
  const fs::path root = checkpoints_dir(run_dir);
  const fs::path latest_path = root / "latest.json";
  SF_CHECK(fs::exists(latest_path), "{}: no checkpoint to resume from ({} missing)", run_dir,
           latest_path.string());
  const json latest = read_json(latest_path);
  SF_CHECK(latest.contains("dir") && latest["dir"].is_string(), "{}: field 'dir' missing",
           latest_path.string());
  const fs::path dir = root / latest["dir"].get<std::string>();
  SF_CHECK(dir.parent_path() == root && fs::is_directory(dir),
           "{}: names checkpoint folder {} which does not exist", latest_path.string(), dir.string());

  // The saved config must be the model's config: resuming with other shapes cannot work.
  const ModelConfig saved = config_load((dir / "config.json").string());
  SF_CHECK(config_to_json(saved) == config_to_json(model.config()),
           "{}: checkpoint config differs from the run's model config (saved {}, now {})",
           (dir / "config.json").string(), config_to_json(saved).dump(),
           config_to_json(model.config()).dump());
  // Also tells the next forward to refresh the mixed-precision working copies (model_io.cpp).
  model_load_weights(model, (dir / "model.safetensors").string());

  const std::string opt_path = (dir / "optimizer.safetensors").string();
  SafetensorsFile opt_file(opt_path);
  for (const auto& [name, t] : optimizer.state_tensors()) {
    SF_CHECK(opt_file.has(name), "{}: missing tensor '{}'", opt_path, name);
    Tensor dst = t;
    if (dst.device() == Device::cpu) {
      opt_file.load_into(name, dst);
    } else {
      Tensor host = Tensor::zeros(dst.shape(), dst.dtype());
      opt_file.load_into(name, host);
      model.backend().copy(dst, host);
    }
  }
  SF_CHECK(opt_file.names().size() == optimizer.state_tensors().size(),
           "{}: {} tensors, the optimizer has {}", opt_path, opt_file.names().size(),
           optimizer.state_tensors().size());

  const fs::path state_path = dir / "state.json";
  const json st = read_json(state_path);
  TrainingState state;
  state.step = get_int(st, "step", state_path);
  optimizer.set_step_count(get_int(st, "adamw_step", state_path));
  SF_CHECK(st.contains("data") && st["data"].is_object(), "{}: field 'data' missing",
           state_path.string());
  state.data.shard = get_int(st["data"], "shard", state_path);
  state.data.offset = get_int(st["data"], "offset", state_path);
  state.data.epoch = get_int(st["data"], "epoch", state_path);
  SF_CHECK(st.contains("rng") && st["rng"].is_array() && st["rng"].size() == state.rng.size(),
           "{}: field 'rng' must be an array of {} integers", state_path.string(), state.rng.size());
  for (size_t i = 0; i < state.rng.size(); ++i) {
    SF_CHECK(st["rng"][i].is_number_unsigned() || st["rng"][i].is_number_integer(),
             "{}: field 'rng' must hold integers", state_path.string());
    state.rng[i] = st["rng"][i].get<uint64_t>();
  }
  SF_CHECK(st.contains("elapsed_seconds") && st["elapsed_seconds"].is_number(),
           "{}: field 'elapsed_seconds' missing", state_path.string());
  state.elapsed_seconds = st["elapsed_seconds"].get<double>();
  state.tokens_seen = get_int(st, "tokens_seen", state_path);
  return state;
}

}  // namespace sf
