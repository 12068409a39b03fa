// bench_report.cpp — the bench report: speed-ups between results, the machine's description,
// the llama-bench-style markdown table and the JSON.
#include <fmt/ranges.h>
#include <sched.h>
#include <unistd.h>  // environ

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "infer/bench.h"

namespace sf {

namespace {

using json = nlohmann::json;

// Decimal units, as bandwidth in GB/s is decimal.
std::string bytes_decimal(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} {}", bytes, units[u]) : fmt::format("{:.2f} {}", bytes, units[u]);
}

std::string params_short(int64_t n) {
  const double v = static_cast<double>(n);
  if (n >= 1'000'000'000) return fmt::format("{:.2f} B", v / 1e9);
  if (n >= 1'000'000) return fmt::format("{:.2f} M", v / 1e6);
  if (n >= 1'000) return fmt::format("{:.2f} K", v / 1e3);
  return std::to_string(n);
}

const BenchResult* find_result(const std::vector<BenchResult>& results, bool baseline,
                               const std::string& decode, char kind) {
  for (const BenchResult& r : results)
    if (r.baseline == baseline && r.decode == decode && !r.test.empty() && r.test[0] == kind)
      return &r;
  return nullptr;
}

}  // namespace

// ---- the report --------------------------------------------------------------------------------

std::vector<BenchSpeedup> bench_speedups(const std::vector<BenchResult>& results) {
  std::vector<BenchSpeedup> out;
  auto ratio = [&](const BenchResult* a, const BenchResult* b, const std::string& name,
                   const std::string& description) {
    if (!a || !b || a->mean_ts <= 0.0 || b->mean_ts <= 0.0) return;
    BenchSpeedup s;
    s.name = name;
    s.description = description;
    s.value = a->mean_ts / b->mean_ts;
    const double ra = a->stddev_ts / a->mean_ts, rb = b->stddev_ts / b->mean_ts;
    s.stddev = s.value * std::sqrt(ra * ra + rb * rb);
    out.push_back(s);
  };
  const BenchResult* staggered = find_result(results, false, "staggered", 't');
  const BenchResult* sequential = find_result(results, false, "sequential", 't');
  const BenchResult* recurrent = find_result(results, false, "recurrent", 't');
  const BenchResult* pp = find_result(results, false, "any", 'p');
  const BenchResult* base_tg = find_result(results, true, "sequential", 't');
  const BenchResult* base_pp = find_result(results, true, "any", 'p');
  if (staggered)
    ratio(staggered, sequential, staggered->test + ": staggered / sequential",
          "same model: the stacks decode a token concurrently vs one after the other");
  if (recurrent)
    ratio(recurrent, sequential, recurrent->test + ": recurrent / sequential",
          "same model: one pass of the shared blocks per step vs p passes");
  if (base_tg) {
    ratio(staggered, base_tg, base_tg->test + ": staggered / baseline",
          fmt::format("{} decoding staggered vs {}, the baseline of equal total depth",
                      staggered ? staggered->model : "", base_tg->model));
    ratio(sequential, base_tg, base_tg->test + ": sequential / baseline",
          fmt::format("{} decoding sequentially vs {}: the cost of the cross-attention",
                      sequential ? sequential->model : "", base_tg->model));
    ratio(recurrent, base_tg, base_tg->test + ": recurrent / baseline",
          fmt::format("{} decoding recurrently vs {}", recurrent ? recurrent->model : "",
                      base_tg->model));
  }
  if (base_pp)
    ratio(pp, base_pp, base_pp->test + ": model / baseline",
          fmt::format("prefill throughput of {} vs {}", pp ? pp->model : "", base_pp->model));
  return out;
}

MachineInfo machine_describe() {
  MachineInfo m;
  m.cpu = "unknown CPU";
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) != 0) continue;
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string value = line.substr(colon + 1);
    const size_t first = value.find_first_not_of(" \t");
    if (first != std::string::npos) m.cpu = value.substr(first);
    break;
  }
  // Processors this process may run on (its affinity mask), as OpenMP counts them.
  cpu_set_t set;
  CPU_ZERO(&set);
  m.logical_cpus = sched_getaffinity(0, sizeof(set), &set) == 0
                       ? CPU_COUNT(&set)
                       : static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  std::ifstream load("/proc/loadavg");
  double one_minute = -1.0;
  if (load >> one_minute) m.load_average = one_minute;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry = *e;
    for (const char* prefix : {"OMP_", "GOMP_", "OPENBLAS_"})
      if (entry.rfind(prefix, 0) == 0) m.environment.push_back(entry);
  }
  std::sort(m.environment.begin(), m.environment.end());
  return m;
}

std::string bench_date_now() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string bench_markdown(const BenchReport& report) {
  // Columns as llama-bench prints them: text left-aligned, numbers right-aligned.
  struct Column {
    const char* title;
    bool right;
  };
  const std::vector<Column> columns = {{"model", false},   {"params", true}, {"backend", false},
                                       {"threads", true},  {"batch", true},  {"decode", false},
                                       {"test", true},     {"t/s", true}};
  std::vector<std::vector<std::string>> rows;
  for (const BenchResult& r : report.results)
    rows.push_back({r.model, params_short(r.params), r.backend, std::to_string(r.threads),
                    std::to_string(r.batch), r.decode, r.test,
                    fmt::format("{:.2f} ± {:.2f}", r.mean_ts, r.stddev_ts)});
  // Width in characters: "±" is two bytes in UTF-8 but one column on screen.
  auto width_of = [](const std::string& s) {
    size_t w = 0;
    for (unsigned char ch : s) w += (ch & 0xC0) != 0x80;
    return w;
  };
  std::vector<size_t> widths;
  for (size_t i = 0; i < columns.size(); ++i) {
    size_t w = std::max<size_t>(3, std::string(columns[i].title).size());
    for (const auto& row : rows) w = std::max(w, width_of(row[i]));
    widths.push_back(w);
  }
  auto cell = [&](const std::string& text, size_t i) {
    const std::string pad(widths[i] - width_of(text), ' ');
    return columns[i].right ? pad + text : text + pad;
  };
  std::string out;
  auto add_row = [&](const std::vector<std::string>& cells) {
    out += "|";
    for (size_t i = 0; i < cells.size(); ++i) {
      out += ' ';
      out += cell(cells[i], i);
      out += " |";
    }
    out += "\n";
  };
  std::vector<std::string> titles;
  for (const Column& col : columns) titles.push_back(col.title);
  add_row(titles);
  out += "|";
  for (size_t i = 0; i < columns.size(); ++i) {
    out += ' ';
    out.append(widths[i] - (columns[i].right ? 1 : 0), '-');
    out += columns[i].right ? ": |" : " |";
  }
  out += "\n";
  for (const auto& row : rows) add_row(row);

  out += "\n";
  std::vector<std::string> described;
  for (const BenchResult& r : report.results) {
    const std::string line = fmt::format("- weights of {}: {}", r.model, r.weights);
    if (std::find(described.begin(), described.end(), line) == described.end()) described.push_back(line);
  }
  for (const std::string& line : described) out += line + "\n";
  for (const std::string& note : report.notes) out += "- note: " + note + "\n";
  for (const BenchSpeedup& s : report.speedups)
    out += fmt::format("- speed-up {} = {:.3f} ± {:.3f} ({})\n", s.name, s.value, s.stddev, s.description);
  for (const BenchResult& r : report.results) {
    if (!r.is_tg()) continue;
    const DecodeStepBytes& b = *r.step_bytes;
    std::string peak;
    if (report.peak) {
      const double fraction = r.mean_gb_s / report.peak->peak_gb_s();
      peak = fmt::format(" = {:.1f}% of the measured peak", 100.0 * fraction);
      // The peak is measured on arrays far larger than any cache; a step whose bytes partly
      // stay in a cache between steps (a small model's weights in a CPU's last-level cache,
      // the KV cache in a GPU's L2) can be served faster than memory delivers.
      if (fraction > 1.0) peak += " (above it: part of the bytes came from a cache)";
    }
    std::string shared;
    if (b.weights_distinct < b.weights)
      shared = fmt::format(" (shared blocks counted once per pass; distinct weights {})",
                           bytes_decimal(b.weights_distinct));
    out += fmt::format(
        "- bandwidth {} {} {}: {:.2f} ± {:.2f} GB/s{}; {} read per step: weights {}{}, "
        "embedding rows {}, KV cache {} (mean over the run)\n",
        r.test, r.model, r.decode, r.mean_gb_s, r.stddev_gb_s, peak, bytes_decimal(b.total()),
        bytes_decimal(b.weights), shared, bytes_decimal(b.embedding_rows), bytes_decimal(b.kv_cache));
  }
  if (report.peak) {
    const MemoryBandwidth& m = *report.peak;
    if (m.threads > 0)  // the CPU's STREAM-like kernels
      out += fmt::format(
          "- peak memory bandwidth (measured): {:.2f} GB/s (copy {:.2f}, triad {:.2f}, read {:.2f} "
          "GB/s; 3 x {} MiB arrays, {} threads, best of {})\n",
          m.peak_gb_s(), m.copy_gb_s, m.triad_gb_s, m.read_gb_s, m.array_bytes >> 20, m.threads,
          m.repetitions);
    else  // a GPU: device-to-device copy and a streaming read kernel
      out += fmt::format(
          "- peak memory bandwidth (measured on the device): {:.2f} GB/s (copy {:.2f} GB/s "
          "counting reads and writes, read {:.2f} GB/s; {} MiB arrays, best of {})\n",
          m.peak_gb_s(), m.copy_gb_s, m.read_gb_s, m.array_bytes >> 20, m.repetitions);
  } else {
    out += "- peak memory bandwidth: not measured (--no-bandwidth)\n";
  }
  const MachineInfo& machine = report.machine;
  out += fmt::format("- machine: {}, {} logical CPUs{}{}\n", machine.cpu, machine.logical_cpus,
                     machine.load_average >= 0
                         ? fmt::format(", load average {:.2f} at the start", machine.load_average)
                         : "",
                     machine.environment.empty()
                         ? ""
                         : "; environment: " + fmt::format("{}", fmt::join(machine.environment, " ")));
  out += fmt::format("- date: {}\n", report.date);
  out += fmt::format("- command: `{}`\n", report.command);
  return out;
}

json bench_json(const BenchReport& report) {
  json results = json::array();
  for (const BenchResult& r : report.results) {
    json j = {{"model", r.model},
              {"weights", r.weights},
              {"baseline", r.baseline},
              {"params", r.params},
              {"backend", r.backend},
              {"threads", r.threads},
              {"batch", r.batch},
              {"decode", r.decode},
              {"test", r.test},
              {"tokens", r.tokens},
              {"repetitions", r.seconds.size()},
              {"avg_ts", r.mean_ts},
              {"stddev_ts", r.stddev_ts},
              {"samples_ts", r.tokens_per_second},
              {"samples_s", r.seconds}};
    if (r.step_bytes) {
      const DecodeStepBytes& b = *r.step_bytes;
      j["bytes_per_step"] = {{"total", b.total()},
                             {"weights", b.weights},
                             {"weights_distinct", b.weights_distinct},
                             {"embedding_rows", b.embedding_rows},
                             {"kv_cache_mean", b.kv_cache}};
      j["avg_gb_s"] = r.mean_gb_s;
      j["stddev_gb_s"] = r.stddev_gb_s;
      j["peak_fraction"] = report.peak ? json(r.mean_gb_s / report.peak->peak_gb_s()) : json(nullptr);
    }
    results.push_back(j);
  }
  json speedups = json::array();
  for (const BenchSpeedup& s : report.speedups)
    speedups.push_back({{"name", s.name}, {"description", s.description}, {"value", s.value},
                        {"stddev", s.stddev}});
  json peak = nullptr;
  if (report.peak) {
    const MemoryBandwidth& m = *report.peak;
    peak = {{"peak_gb_s", m.peak_gb_s()}, {"copy_gb_s", m.copy_gb_s},   {"triad_gb_s", m.triad_gb_s},
            {"read_gb_s", m.read_gb_s},   {"array_bytes", m.array_bytes}, {"arrays", 3},
            {"threads", m.threads},       {"repetitions", m.repetitions}};
  }
  json summary = {{"speedups", speedups},
                  {"memory_bandwidth", peak},
                  {"machine",
                   {{"cpu", report.machine.cpu},
                    {"logical_cpus", report.machine.logical_cpus},
                    {"load_average", report.machine.load_average},
                    {"environment", report.machine.environment}}},
                  {"date", report.date},
                  {"command", report.command},
                  {"notes", report.notes}};
  return {{"results", results}, {"summary", summary}};
}

}  // namespace sf
