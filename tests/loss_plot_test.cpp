// loss_plot_test.cpp — the loss plot's y axis: logarithmic over a wide range, with ticks where a
// trained model's losses sit (between 2.0 and 2.6 after starting near 10.8); linear and finely
// ticked over a narrow one.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "support/test_util.h"
#include "train/loss_plot.h"
#include "train/metrics_log.h"

namespace sf {
namespace {

namespace fs = std::filesystem;

// Writes a metrics log with train losses falling from `first` to `last` over 300 steps.
std::string write_log(const std::string& dir, double first, double last) {
  const std::string path = (fs::path(dir) / "metrics.jsonl").string();
  MetricsLog log(path);
  for (int step = 0; step <= 300; step += 5) {
    const double t = step / 300.0;
    log.append({{"step", step}, {"loss", last + (first - last) * std::exp(-8 * t)}});
  }
  log.append({{"step", 300}, {"val_loss", last + 0.1}});
  return path;
}

std::string plot(const std::string& dir, double first, double last) {
  const std::string svg = (fs::path(dir) / "loss.svg").string();
  loss_plot_write({{"run", write_log(dir, first, last)}}, svg, "title");
  std::ifstream in(svg);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

bool has_tick(const std::string& svg, const std::string& label) {
  return svg.find("text-anchor=\"end\">" + label + "</text>") != std::string::npos;
}

TEST(LossPlot, WideRangesGetALogAxisWithTicksWhereTheLossesEnd) {
  const std::string dir = test::fresh_temp_dir("loss_plot_wide");
  const std::string svg = plot(dir, 10.8, 2.05);
  EXPECT_NE(svg.find("log scale"), std::string::npos);
  for (const char* label : {"2", "2.5", "3", "4", "5", "6", "8", "10"})
    EXPECT_TRUE(has_tick(svg, label)) << "no tick " << label;
  fs::remove_all(dir);
}

TEST(LossPlot, NarrowRangesStayLinear) {
  const std::string dir = test::fresh_temp_dir("loss_plot_narrow");
  const std::string svg = plot(dir, 2.6, 2.0);
  EXPECT_EQ(svg.find("log scale"), std::string::npos);
  for (const char* label : {"2.1", "2.2", "2.3", "2.4", "2.5"})
    EXPECT_TRUE(has_tick(svg, label)) << "no tick " << label;
  fs::remove_all(dir);
}

// Losses a fuzzer and a review found: a flat loss of 3e15 (the tick loop stopped moving and ran
// out of memory), two losses one ulp apart, and one near the largest double (the log axis's
// margin overflowed to inf, then an int). Each must give a finite picture, quickly.
TEST(LossPlot, ExtremeLossesStillGiveAPicture) {
  const std::string dir = test::fresh_temp_dir("loss_plot_extreme");
  const std::vector<std::vector<std::string>> cases{{"3184467440737010"},
                                                    {"1", "1.0000000000000004"},
                                                    {"1", "1.79e308"},
                                                    {"-1e308", "1e308"},
                                                    {"0"}};
  for (const auto& losses : cases) {
    const std::string path = (fs::path(dir) / "metrics.jsonl").string();
    {
      std::ofstream out(path, std::ios::trunc);
      for (size_t i = 0; i < losses.size(); ++i)
        out << "{\"step\": " << i << ", \"loss\": " << losses[i] << "}\n";
    }
    const std::string svg_path = (fs::path(dir) / "loss.svg").string();
    loss_plot_write({{"run", path}}, svg_path, "t");
    std::ifstream in(svg_path);
    std::stringstream text;
    text << in.rdbuf();
    const std::string svg = text.str();
    EXPECT_EQ(svg.find("nan"), std::string::npos) << losses.back();
    EXPECT_EQ(svg.find("inf"), std::string::npos) << losses.back();
    EXPECT_LT(svg.size(), 100000u) << losses.back();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sf
