// metrics_log.h — the training metrics log (JSON Lines) that plots and reports are drawn from.
//
// One JSON object per line, e.g.
//   {"step": 10, "loss": 3.21, "lr": 0.001, "grad_norm": 0.8, "tokens": 40960, "tok_per_s": 5123}
//   {"step": 100, "val_loss": 3.05, "val_ppl": 21.1}
// Every line has "step". On resume, lines with a step after the checkpoint's are dropped first,
// so the log of a resumed run reads like the log of an uninterrupted one.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sf {

class MetricsLog {
 public:
  // Opens (creating) `path` for appending. keep_up_to_step >= 0 first rewrites the file
  // (atomically) without the lines whose step is greater.
  MetricsLog(std::string path, int64_t keep_up_to_step = -1);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void append(const nlohmann::json& record);  // one line, flushed
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// A metrics log holds one short line per logged step: a million steps fit in this limit.
inline constexpr uint64_t kMetricsMaxFileBytes = uint64_t{1} << 30;

// Every record of a metrics log; malformed lines give an error naming the file and line. Every
// record is a JSON object whose "step" is a non-negative integer.
std::vector<nlohmann::json> metrics_read(const std::string& path);

}  // namespace sf
