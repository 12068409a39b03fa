// fuzz_metrics.cpp — fuzzes what reads a training metrics log (metrics.jsonl): metrics_read and
// the resume rewrite MetricsLog(path, keep_up_to_step) (train/metrics_log.h), and the SVG loss
// plot of `stagformer plot` (loss_plot_write, train/loss_plot.h). The input is the whole log,
// written to scratch files once per input. A log rewritten for a resume at step 100 must read
// back with no integer step above 100.
//
// fuzz-dict: json metrics   (tests/fuzz/*.dict that scripts/fuzz.sh joins)
#include "fuzz_util.h"
#include "train/loss_plot.h"
#include "train/metrics_log.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = sf::fuzz::scratch_path("metrics.jsonl");
  static const std::string resumed_path = sf::fuzz::scratch_path("resumed/metrics.jsonl");
  static const std::string svg_path = sf::fuzz::scratch_path("loss.svg");
  constexpr int64_t kResumeStep = 100;
  sf::fuzz::write_bytes(path, data, size);
  sf::fuzz::write_bytes(resumed_path, data, size);

  sf::fuzz::run_loader("metrics_read", [&] { sf::metrics_read(path); });
  sf::fuzz::run_loader("loss_plot_write", [&] {
    sf::loss_plot_write({{"fuzz <run> & co", path}}, svg_path, "fuzz");
  });
  sf::fuzz::run_loader("MetricsLog(path, keep_up_to_step)", [&] {
    {
      sf::MetricsLog log(resumed_path, kResumeStep);
      log.append({{"step", kResumeStep}, {"loss", 1.5}});
    }
    for (const nlohmann::json& r : sf::metrics_read(resumed_path))
      sf::fuzz::require(!r["step"].is_number_integer() || r["step"].get<int64_t>() <= kResumeStep,
                        "a log rewritten for a resume at step 100 keeps no later step");
  });
  return 0;
}
