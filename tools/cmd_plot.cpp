// cmd_plot.cpp — `stagformer plot`: one SVG with the loss curves of several runs.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "core/error.h"
#include "train/loss_plot.h"

namespace sf::cli {

namespace {

struct PlotArgs {
  std::vector<std::string> runs;  // RUN or RUN=LABEL
  std::string out = "loss.svg";
  std::string title = "loss";
};

void run(const PlotArgs& a) {
  std::vector<PlotSeries> series;
  for (const std::string& spec : a.runs) {
    const auto eq = spec.find('=');
    const std::string dir = spec.substr(0, eq);
    const std::string label =
        eq == std::string::npos ? std::filesystem::path(dir).filename().string() : spec.substr(eq + 1);
    series.push_back({label, (std::filesystem::path(dir) / "metrics.jsonl").string()});
  }
  loss_plot_write(series, a.out, a.title);
  std::printf("wrote %s\n", a.out.c_str());
}

}  // namespace

void add_plot_command(CLI::App& app) {
  auto a = std::make_shared<PlotArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plot",
      "Draw the training and validation loss of one or more runs into one SVG.\n"
      "Example: stagformer plot --out cmp.svg runs/base=baseline runs/stag=stagformer");
  cmd->add_option("runs", a->runs, "Run folders, optionally RUN=LABEL")->required();
  cmd->add_option("-o,--out", a->out, "SVG file to write")->capture_default_str();
  cmd->add_option("--title", a->title, "Title of the picture")->capture_default_str();
  cmd->callback([a] { run(*a); });
}

}  // namespace sf::cli
