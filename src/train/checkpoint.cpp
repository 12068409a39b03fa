// checkpoint.cpp — atomic multi-file checkpoints and their validated restore.
#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "io/atomic_file.h"
#include "io/json_input.h"
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
  json j = json_read_file(path.string(), kJsonSmallFileBytes);
  SF_CHECK(j.is_object(), "{}: expected a JSON object, got {}", path.string(), json_excerpt(j));
  return j;
}

// A non-negative integer field of a checkpoint file (steps, counts, positions).
int64_t get_count(const json& j, const char* key, const fs::path& file) {
  return json_int(json_member(j, key, file.string()),
                  fmt::format("{}: field '{}'", file.string(), key), 0,
                  std::numeric_limits<int64_t>::max());
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

std::string checkpoint_latest_dir(const std::string& run_dir) {
  const fs::path root = checkpoints_dir(run_dir);
  const fs::path latest_path = root / "latest.json";
  SF_CHECK(fs::exists(latest_path), "{}: no checkpoint to resume from ({} missing)", run_dir,
           latest_path.string());
  const json latest = read_json(latest_path);
  const std::string name = json_string(json_member(latest, "dir", latest_path.string()),
                                       fmt::format("{}: field 'dir'", latest_path.string()));
  // Only the writer's own form: "", "." or ".." would pass as a child of checkpoints/ and load
  // from checkpoints/ itself or the run folder.
  const bool own_form = name.size() >= 13 && name.size() <= 25 && name.rfind("step_", 0) == 0 &&
                        std::all_of(name.begin() + 5, name.end(),
                                    [](char c) { return c >= '0' && c <= '9'; });
  SF_CHECK(own_form, "{}: field 'dir' must name a checkpoint folder step_NNNNNNNN, got {}",
           latest_path.string(), json_excerpt(latest["dir"]));
  const fs::path dir = root / name;
  std::error_code ec;
  SF_CHECK(dir.parent_path() == root && fs::is_directory(dir, ec),
           "{}: names checkpoint folder {} which does not exist", latest_path.string(), dir.string());
  return dir.string();
}

CheckpointProgress checkpoint_latest_progress(const std::string& run_dir) {
  const fs::path state_path = fs::path(checkpoint_latest_dir(run_dir)) / "state.json";
  const std::string where = state_path.string();
  const json st = read_json(state_path);
  CheckpointProgress p;
  p.step = get_count(st, "step", state_path);
  p.tokens_seen = get_count(st, "tokens_seen", state_path);
  p.elapsed_seconds =
      json_finite(json_member(st, "elapsed_seconds", where), where + ": field 'elapsed_seconds'");
  SF_CHECK(p.elapsed_seconds >= 0, "{}: field 'elapsed_seconds' is negative ({})", where,
           p.elapsed_seconds);
  return p;
}

TrainingState checkpoint_load(const std::string& run_dir, Model& model, AdamW& optimizer) {
  const fs::path dir = checkpoint_latest_dir(run_dir);

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
  const std::string where = state_path.string();
  state.step = get_count(st, "step", state_path);
  optimizer.set_step_count(get_count(st, "adamw_step", state_path));
  const json& data = json_member(st, "data", where);
  state.data.shard = get_count(data, "shard", state_path);
  state.data.offset = get_count(data, "offset", state_path);
  state.data.epoch = get_count(data, "epoch", state_path);
  const json& rng = json_member(st, "rng", where);
  SF_CHECK(rng.is_array() && rng.size() == state.rng.size(),
           "{}: field 'rng' must be an array of {} integers, got {}", where, state.rng.size(),
           json_excerpt(rng));
  for (size_t i = 0; i < state.rng.size(); ++i)
    state.rng[i] = json_uint64(rng[i], fmt::format("{}: field 'rng'[{}]", where, i));
  state.elapsed_seconds =
      json_finite(json_member(st, "elapsed_seconds", where), where + ": field 'elapsed_seconds'");
  SF_CHECK(state.elapsed_seconds >= 0, "{}: field 'elapsed_seconds' is negative ({})", where,
           state.elapsed_seconds);
  state.tokens_seen = get_count(st, "tokens_seen", state_path);
  return state;
}

}  // namespace sf
