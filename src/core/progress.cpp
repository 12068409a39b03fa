// progress.cpp — the progress bar: formatting helpers, throttled redraws, terminal vs log style.
#include "core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace sf {

namespace {

// Three significant digits with a k/M/G/T/P/E suffix. `value` is finite.
std::string format_three_digits(double value) {
  static constexpr const char* kSuffixes[] = {"", "k", "M", "G", "T", "P", "E"};
  constexpr int kLastSuffix = 6;
  const char* sign = value < 0 ? "-" : "";
  double magnitude = std::fabs(value);
  int suffix = 0;
  // 999.5 and above would round to "1000": show it as "1.00k" instead.
  while (magnitude >= 999.5 && suffix < kLastSuffix) {
    magnitude /= 1000.0;
    ++suffix;
  }
  // The thresholds are where rounding to the chosen precision would add a digit (9.996 -> 10.0).
  const int decimals = magnitude < 9.995 ? 2 : magnitude < 99.95 ? 1 : 0;
  return fmt::format("{}{:.{}f}{}", sign, magnitude, decimals, kSuffixes[suffix]);
}

}  // namespace

std::string format_human_count(int64_t value) {
  if (value > -1000 && value < 1000) return std::to_string(value);
  return format_three_digits(static_cast<double>(value));
}

std::string format_human_rate(double value) {
  if (!std::isfinite(value)) return "?";
  return format_three_digits(value);
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?:??";
  const auto total = static_cast<int64_t>(std::llround(seconds));
  const int64_t hours = total / 3600;
  const int64_t minutes = total / 60 % 60;
  const int64_t secs = total % 60;
  if (hours > 0) return fmt::format("{}:{:02}:{:02}", hours, minutes, secs);
  return fmt::format("{}:{:02}", minutes, secs);
}

double eta_seconds(int64_t done, int64_t total, double rate) {
  if (total <= 0 || done > total || !(rate > 0) || !std::isfinite(rate)) return -1;
  return static_cast<double>(total - done) / rate;
}

std::string format_bar(double fraction, int width) {
  if (width <= 0) return "";
  if (!(fraction > 0)) fraction = 0;  // NaN too
  fraction = std::min(fraction, 1.0);
  const int filled = std::min(width, static_cast<int>(std::floor(fraction * width)));
  return std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), '.');
}

std::string format_progress_line(const ProgressSnapshot& s, int bar_width) {
  std::string line;
  if (!s.label.empty()) line += s.label + " ";
  // Bytes read best glued to the multiplier ("1.20MB/s"); other units stand apart ("1.20M tok/s").
  const std::string unit = s.unit.empty() || s.unit == "B" ? s.unit : fmt::format(" {}", s.unit);
  if (s.total > 0) {
    const double fraction = static_cast<double>(s.done) / static_cast<double>(s.total);
    const int percent = static_cast<int>(std::clamp(std::floor(fraction * 100.0), 0.0, 100.0));
    if (bar_width > 0) line += fmt::format("[{}] ", format_bar(fraction, bar_width));
    // "1.20MB/2.70MB" (glued unit on both) but "1.23M/2.70M tok" (spaced unit once).
    const std::string done_unit = unit.starts_with(' ') ? "" : unit;
    line += fmt::format("{:3}% {}{}/{}{}", percent, format_human_count(s.done), done_unit,
                        format_human_count(s.total), unit);
  } else {
    line += format_human_count(s.done) + unit;
  }
  const double rate = s.elapsed_seconds > 0
                          ? static_cast<double>(s.done - s.start) / s.elapsed_seconds
                          : std::nan("");
  line += fmt::format("  {}{}/s", format_human_rate(rate), unit);
  for (const auto& [key, value] : s.fields) line += "  " + key + " " + value;
  if (s.finished) {
    line += "  in " + format_duration(s.elapsed_seconds);
  } else if (s.total > 0) {
    line += "  ETA " + format_duration(eta_seconds(s.done, s.total, rate));
  } else {
    line += "  " + format_duration(s.elapsed_seconds);
  }
  return line;
}

ProgressBar::ProgressBar(std::string label, int64_t total, std::string unit, ProgressOptions options)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total), options_(options),
      output_(options.output), start_(Clock::now()), last_draw_(start_) {
  if (options_.stream == nullptr) output_ = ProgressOutput::quiet;
  if (output_ == ProgressOutput::automatic) {
    output_ = ::isatty(::fileno(options_.stream)) ? ProgressOutput::terminal : ProgressOutput::plain;
  }
}

ProgressBar::~ProgressBar() {
  if (line_open_) {
    std::fputc('\n', options_.stream);
    std::fflush(options_.stream);
  }
}

double ProgressBar::elapsed_seconds() const {
  return std::chrono::duration<double>(Clock::now() - start_).count();
}

void ProgressBar::set_field(const std::string& key, const std::string& value) {
  for (auto& field : fields_) {
    if (field.first == key) {
      field.second = value;
      return;
    }
  }
  fields_.emplace_back(key, value);
}

void ProgressBar::update(int64_t done) {
  done_ = done;
  if (finished_ || output_ == ProgressOutput::quiet) return;
  const double interval = output_ == ProgressOutput::terminal ? options_.terminal_interval_seconds
                                                              : options_.plain_interval_seconds;
  // A terminal shows the bar at once; a log gets its first line only after one interval, so
  // short work leaves just the final line.
  const bool first_terminal_draw = output_ == ProgressOutput::terminal && !drawn_;
  const double since_last = std::chrono::duration<double>(Clock::now() - last_draw_).count();
  if (first_terminal_draw || since_last >= interval) draw(/*final_line=*/false);
}

void ProgressBar::finish() {
  if (finished_) return;
  finished_ = true;
  if (output_ == ProgressOutput::quiet) return;
  draw(/*final_line=*/true);
}

ProgressSnapshot ProgressBar::snapshot() const {
  ProgressSnapshot s;
  s.label = label_;
  s.done = done_;
  s.total = total_;
  s.start = done_before_;
  s.unit = unit_;
  s.elapsed_seconds = elapsed_seconds();
  s.fields = fields_;
  s.finished = finished_;
  return s;
}

void ProgressBar::draw(bool final_line) {
  const std::string line = format_progress_line(snapshot(), options_.bar_width);
  if (output_ == ProgressOutput::terminal) {
    // "\033[K" clears what a longer previous line left to the right.
    std::fprintf(options_.stream, "\r%s\033[K%s", line.c_str(), final_line ? "\n" : "");
    line_open_ = !final_line;
  } else {
    std::fprintf(options_.stream, "%s\n", line.c_str());
  }
  std::fflush(options_.stream);
  drawn_ = true;
  last_draw_ = Clock::now();
}

}  // namespace sf
