// loss_plot.cpp — SVG line chart of training and validation loss.
#include "train/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "io/atomic_file.h"
#include "train/metrics_log.h"

namespace sf {

namespace {

struct Curve {
  std::vector<std::pair<double, double>> train, val;  // (step, loss)
};

const char* const kColors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `count` ticks over `span`.
double nice_step(double span, int count) {
  const double raw = span / std::max(count, 1);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * magnitude) return m * magnitude;
  return 10.0 * magnitude;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

void loss_plot_write(const std::vector<PlotSeries>& series, const std::string& svg_path,
                     const std::string& title) {
  std::vector<Curve> curves;
  double x_max = 1, y_min = std::numeric_limits<double>::infinity(), y_max = -y_min;
  for (const PlotSeries& s : series) {
    Curve c;
    for (const auto& r : metrics_read(s.metrics_path)) {
      const double step = r["step"].get<double>();
      if (r.contains("loss") && r["loss"].is_number()) c.train.emplace_back(step, r["loss"].get<double>());
      if (r.contains("val_loss") && r["val_loss"].is_number())
        c.val.emplace_back(step, r["val_loss"].get<double>());
    }
    SF_CHECK(!c.train.empty() || !c.val.empty(), "{}: no loss values to plot", s.metrics_path);
    for (const auto* pts : {&c.train, &c.val})
      for (const auto& [x, y] : *pts) {
        if (!std::isfinite(y)) continue;
        x_max = std::max(x_max, x);
        y_min = std::min(y_min, y);
        y_max = std::max(y_max, y);
      }
    curves.push_back(std::move(c));
  }
  if (!(y_max > y_min)) {
    y_min -= 0.5;
    y_max += 0.5;
  }
  const double W = 800, H = 500, left = 70, right = 20, top = 40, bottom = 55;
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + pw * x / x_max; };
  auto py = [&](double y) { return top + ph * (1.0 - (y - y_min) / (y_max - y_min)); };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
      W, H, W / 2, escape(title));
  // Axes, grid and ticks.
  const double xs = nice_step(x_max, 8), ys = nice_step(y_max - y_min, 6);
  for (double x = 0; x <= x_max + 1e-9; x += xs)
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:g}</text>\n",
        px(x), top, top + ph, top + ph + 16, x);
  for (double y = std::ceil(y_min / ys) * ys; y <= y_max + 1e-9; y += ys)
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.3g}</text>\n",
        left, py(y), left + pw, left - 6, py(y) + 4, y);
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n"
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">optimizer step</text>\n"
      "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">loss "
      "(nats/token)</text>\n",
      left, top, pw, ph, left + pw / 2, H - 12, top + ph / 2, top + ph / 2);
  // Curves and legend.
  for (size_t i = 0; i < curves.size(); ++i) {
    const char* color = kColors[i % (sizeof(kColors) / sizeof(kColors[0]))];
    std::string points;
    for (const auto& [x, y] : curves[i].train)
      if (std::isfinite(y)) points += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
    if (!points.empty())
      svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-opacity=\"0.55\" "
                         "stroke-width=\"1.2\" points=\"{}\"/>\n",
                         color, points);
    for (const auto& [x, y] : curves[i].val)
      if (std::isfinite(y))
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", px(x),
                           py(y), color);
    const double ly = top + 16 + 18 * static_cast<double>(i);
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{3}\" stroke-width=\"2\"/>"
        "<circle cx=\"{4}\" cy=\"{1}\" r=\"3.5\" fill=\"{3}\"/>"
        "<text x=\"{5}\" y=\"{6}\">{7} (line: train, dots: validation)</text>\n",
        left + pw - 300, ly, left + pw - 276, color, left + pw - 264, left + pw - 254, ly + 4,
        escape(series[i].label));
  }
  svg += "</svg>\n";
  write_file_atomic(svg_path, svg);
}

}  // namespace sf
