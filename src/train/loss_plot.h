// loss_plot.h — draws the loss curves of a metrics log as an SVG picture (no plotting library).
//
// Training loss (thin line; a moving average in a darker line when there are many points) and
// validation loss (markers) against the optimizer step, with axes, ticks and a legend. Several
// runs can be drawn in one picture to compare a StagFormer with its baseline.
#pragma once

#include <string>
#include <vector>

namespace sf {

struct PlotSeries {
  std::string label;         // legend text, e.g. "stagformer 2x2"
  std::string metrics_path;  // metrics.jsonl of the run
};

// Writes `svg_path` atomically. Throws sf::Error if a log cannot be read or holds no loss.
void loss_plot_write(const std::vector<PlotSeries>& series, const std::string& svg_path,
                     const std::string& title);

}  // namespace sf
