// loss_plot.cpp — SVG line chart of training and validation loss.
#include "train/loss_plot.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "train/metrics_log.h"

namespace sf {

namespace {

struct Curve {
  std::vector<std::pair<double, double>> train, val;  // (step, loss)
};

// Losses are drawn within +-kPlotMax: every margin and log10 of the axis stays finite.
constexpr double kPlotMax = 1e300;

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

// The y axis. Losses fall from ~ln(vocab) (10.8 for GPT-2's) to 2-3, and the part worth reading
// is the low one: over a range of 2x or more the axis is logarithmic (the gap between 2.0 and
// 2.6 gets as much room as the one between 8 and 10.4), with ticks at 1, 1.2, 1.5, 2, 2.5, 3, 4,
// 5, 6, 8 times powers of ten (fewer when they crowd); a narrow range stays linear.
struct YAxis {
  double lo = 0, hi = 1;
  bool log_scale = false;
  std::vector<double> ticks;
  double fraction(double y) const {  // 0 at lo, 1 at hi
    return log_scale ? std::log(y / lo) / std::log(hi / lo) : (y - lo) / (hi - lo);
  }
};

// Tick values k * step for the integers k with k * step in [lo, hi], at most `limit` of them.
// Counted with an integer index: `y += step` stops moving once step is below half the spacing
// of doubles at y, and such a loop never ends (a fuzzer found it with a loss of 3e15).
std::vector<double> linear_ticks(double lo, double hi, double step, int limit) {
  std::vector<double> ticks;
  const double first = std::ceil(lo / step);
  for (int i = 0; i < limit; ++i) {
    const double y = (first + i) * step;
    if (y > hi + 1e-9 * std::max(1.0, std::abs(hi))) break;
    ticks.push_back(y);
  }
  return ticks;
}

YAxis y_axis(double y_min, double y_max) {
  YAxis a;
  a.log_scale = y_min > 0 && y_max / y_min >= 2.0;
  if (!a.log_scale) {
    a.lo = y_min;
    a.hi = y_max;
    a.ticks = linear_ticks(y_min, y_max, nice_step(y_max - y_min, 6), 20);
    return a;
  }
  // (the values are at most kPlotMax, so the margin stays finite and the powers below exist)
  a.lo = y_min / 1.03;  // a margin: no point on the frame
  a.hi = y_max * 1.03;
  const int k_lo = static_cast<int>(std::floor(std::log10(a.lo)));
  const int k_hi = static_cast<int>(std::ceil(std::log10(a.hi)));
  for (const std::vector<double>& mantissas :
       {std::vector<double>{1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8}, {1, 1.5, 2, 3, 5, 7}, {1, 2, 5}, {1}}) {
    a.ticks.clear();
    for (int k = k_lo; k <= k_hi; ++k)
      for (double m : mantissas) {
        const double y = m * std::pow(10.0, k);
        if (y >= a.lo && y <= a.hi) a.ticks.push_back(y);
      }
    if (a.ticks.size() <= 12) break;
  }
  if (a.ticks.size() > 12) {  // powers of ten over a huge range: every n-th
    const size_t stride = (a.ticks.size() + 11) / 12;
    std::vector<double> kept;
    for (size_t i = 0; i < a.ticks.size(); i += stride) kept.push_back(a.ticks[i]);
    a.ticks = std::move(kept);
  }
  return a;
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
    for (auto* pts : {&c.train, &c.val})
      for (auto& [x, y] : *pts) {
        if (!std::isfinite(y)) continue;
        y = std::clamp(y, -kPlotMax, kPlotMax);  // absurd losses: drawn at the edge, not inf
        x_max = std::max(x_max, x);
        y_min = std::min(y_min, y);
        y_max = std::max(y_max, y);
      }
    curves.push_back(std::move(c));
  }
  if (!(y_min <= y_max)) y_min = y_max = 0;  // no finite value: an empty frame
  // A flat (or nearly flat) curve gets a range around it, relative to its size: +-0.5 would
  // vanish below the spacing of doubles at a loss of 1e16.
  if (!(y_max - y_min > 1e-9 * std::max(1.0, std::abs(y_max)))) {
    const double middle = (y_min + y_max) / 2, half = std::max(0.5, 1e-3 * std::abs(middle));
    y_min = middle - half;
    y_max = middle + half;
  }
  const double W = 800, H = 500, left = 70, right = 20, top = 40, bottom = 55;
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + pw * x / x_max; };
  const YAxis axis = y_axis(y_min, y_max);
  auto py = [&](double y) { return top + ph * (1.0 - axis.fraction(y)); };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
      W, H, W / 2, escape(title));
  // Axes, grid and ticks.
  for (double x : linear_ticks(0, x_max, nice_step(x_max, 8), 20))
    svg += fmt::format(
        "<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#eee\"/>"
        "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\">{4:g}</text>\n",
        px(x), top, top + ph, top + ph + 16, x);
  for (double y : axis.ticks)
    svg += fmt::format(
        "<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\" stroke=\"#eee\"/>"
        "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\">{5:.3g}</text>\n",
        left, py(y), left + pw, left - 6, py(y) + 4, y);
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n"
      "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">optimizer step</text>\n"
      "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">loss "
      "(nats/token{})</text>\n",
      left, top, pw, ph, left + pw / 2, H - 12, top + ph / 2, top + ph / 2,
      axis.log_scale ? ", log scale" : "");
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
