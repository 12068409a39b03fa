// progress.h — a progress bar for long work (tokenising a corpus, training, evaluating), and the
// pure formatting helpers it is made of (human units, rates, durations), exposed for tests.
//
// On a terminal (isatty of the stream) one line is redrawn in place with '\r', at most ~10 times
// a second:
//   train [############..................]  41% 1.23M/3.00M tok  512k tok/s  loss 3.21  ETA 0:03
//   prepare [##############################] 100% 1.20MB/1.20MB  4.27MB/s  in 0:00
// (the unit "B" is glued to the multiplier, as in "MB"; other units stand apart).
// When the stream is not a terminal (CI logs, files) a plain line is printed at most every ~5 s,
// so logs stay short, and always one final line. The rate is the average since the bar started:
// steadier than an instantaneous rate, which makes a steadier ETA. Work done before the bar
// started (a resumed training run: start_from) counts in "done" but not in the rate or the ETA. With an unknown total
// (total = 0) the bar and the percentage are left out and the elapsed time replaces the ETA.
//
// No global state. Thread-compatible: one ProgressBar is driven from one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace sf {

// "512", "1.23k", "45.6M", "789G": three significant digits with k/M/G/T/P suffixes (powers of
// 1000). Integers below 1000 are printed exactly; negative values keep their sign.
std::string format_human_count(int64_t value);
// Like format_human_count, but for non-integers: values below 1000 also get three significant
// digits ("3.50", "45.0", "512"). NaN or infinity give "?".
std::string format_human_rate(double value);
// "0:03", "12:34", "1:02:03" (hours appear only when needed). Negative, NaN or infinite
// durations (unknown) give "?:??".
std::string format_duration(double seconds);
// Seconds left at `rate` units per second, or -1 when unknown (no total, no rate yet, or done
// beyond the total).
double eta_seconds(int64_t done, int64_t total, double rate);
// `width` characters, the first round-down(fraction * width) of them '#', the rest '.'
// (fraction clamped to [0, 1]).
std::string format_bar(double fraction, int width);

// Everything one line of the bar shows.
struct ProgressSnapshot {
  std::string label;
  int64_t done = 0;
  int64_t total = 0;  // 0 = unknown
  std::string unit;   // "tok", "B", "step"
  double elapsed_seconds = 0;
  std::vector<std::pair<std::string, std::string>> fields;  // extra "key value" pairs
  bool finished = false;  // the final line shows the elapsed time instead of the ETA
  int64_t start = 0;      // done before elapsed_seconds began: not part of the rate or the ETA
};
// One line of text, without '\r' or '\n':
//   "label [####......] 45% 1.23M/2.70M tok  512k tok/s  loss 3.21  ETA 0:03"
// The rate is (done - start) / elapsed_seconds.
// Unknown total: "label 1.23M tok  512k tok/s  loss 3.21  0:05". Finished: "... in 0:05".
std::string format_progress_line(const ProgressSnapshot& snapshot, int bar_width);

enum class ProgressOutput {
  automatic,  // terminal style when isatty(fileno(stream)), else plain
  terminal,   // redraw one line with '\r'
  plain,      // a full line now and then, and a final one
  quiet,      // print nothing
};

struct ProgressOptions {
  ProgressOutput output = ProgressOutput::automatic;
  std::FILE* stream = stderr;
  int bar_width = 30;
  double terminal_interval_seconds = 0.1;  // at most ~10 redraws per second
  double plain_interval_seconds = 5.0;     // at most one log line every ~5 s
};

class ProgressBar {
 public:
  // `total` in `unit`s (0 when unknown). Nothing is printed until the first update.
  ProgressBar(std::string label, int64_t total, std::string unit, ProgressOptions options = {});
  // Ends a terminal line left open (e.g. while an exception unwinds) so the next message starts
  // on a fresh line; prints no final line: only finish() says the work completed.
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Sets the amount done so far (absolute), then redraws if enough time has passed.
  void update(int64_t done);
  // Adds `amount` to the amount done.
  void advance(int64_t amount) { update(done_ + amount); }
  // Sets the amount done before this bar's work began (e.g. the steps of a resumed run's earlier
  // segments): shown as done, left out of the rate and the ETA. Call before the first update.
  void start_from(int64_t done) {
    done_before_ = done;
    done_ = done;
  }
  // Sets (or replaces) an extra field shown after the rate, e.g. set_field("loss", "3.21").
  // Shown from the next redraw on.
  void set_field(const std::string& key, const std::string& value);
  // Changes the total (e.g. when it becomes known).
  void set_total(int64_t total) { total_ = total; }
  // Prints the final line (always, in terminal and plain style) and ends it. Later calls do
  // nothing.
  void finish();

  int64_t done() const { return done_; }
  int64_t total() const { return total_; }
  double elapsed_seconds() const;
  // True when output goes to a terminal (terminal style, resolved from `automatic`).
  bool is_terminal() const { return output_ == ProgressOutput::terminal; }

 private:
  using Clock = std::chrono::steady_clock;
  ProgressSnapshot snapshot() const;
  void draw(bool final_line);

  std::string label_;
  std::string unit_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  int64_t done_before_ = 0;  // start_from
  std::vector<std::pair<std::string, std::string>> fields_;
  ProgressOptions options_;
  ProgressOutput output_;  // resolved: never automatic
  Clock::time_point start_;
  Clock::time_point last_draw_;
  bool drawn_ = false;       // something printed since start
  bool line_open_ = false;   // terminal style: a line without its '\n' is on screen
  bool finished_ = false;
};

}  // namespace sf
