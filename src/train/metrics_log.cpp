// metrics_log.cpp — JSON Lines metrics: append, truncate-on-resume, read back.
#include "train/metrics_log.h"

#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace sf {

using json = nlohmann::json;

std::vector<json> metrics_read(const std::string& path) {
  std::ifstream in(path);
  SF_CHECK(in.good(), "{}: cannot open metrics log", path);
  std::vector<json> records;
  std::string line;
  int64_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    SF_CHECK(!j.is_discarded() && j.is_object() && j.contains("step"),
             "{}:{}: not a metrics record (a JSON object with a 'step')", path, number);
    records.push_back(std::move(j));
  }
  return records;
}

MetricsLog::MetricsLog(std::string path, int64_t keep_up_to_step) : path_(std::move(path)) {
  if (keep_up_to_step >= 0 && std::ifstream(path_).good()) {
    std::string kept;
    for (const json& r : metrics_read(path_))
      if (r["step"].get<int64_t>() <= keep_up_to_step) kept += r.dump() + "\n";
    write_file_atomic(path_, kept);
  }
  file_ = std::fopen(path_.c_str(), "a");
  SF_CHECK(file_ != nullptr, "{}: cannot open metrics log for writing", path_);
}

MetricsLog::~MetricsLog() {
  if (file_) std::fclose(file_);
}

void MetricsLog::append(const json& record) {
  const std::string line = record.dump() + "\n";
  SF_CHECK(std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0,
           "{}: write failed", path_);
}

}  // namespace sf
