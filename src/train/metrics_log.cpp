// metrics_log.cpp — JSON Lines metrics: append, truncate-on-resume, read back.
#include "train/metrics_log.h"

#include <fstream>
#include <limits>
#include <string_view>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_input.h"

namespace sf {

using json = nlohmann::json;

std::vector<json> metrics_read(const std::string& path) {
  const std::vector<uint8_t> bytes = read_file(path, kMetricsMaxFileBytes);
  const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  std::vector<json> records;
  int64_t number = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    ++number;
    if (line.empty()) continue;
    const std::string where = fmt::format("{}:{}", path, number);
    json j = json_parse(line, where);
    SF_CHECK(j.is_object(), "{}: not a metrics record (a JSON object with a 'step')", where);
    // Readers use the step as a number: checked here, once.
    json_int(json_member(j, "step", where), where + ": field 'step'", 0,
             std::numeric_limits<int64_t>::max());
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
