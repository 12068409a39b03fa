// memory_bandwidth.cpp — STREAM-like copy / triad / read kernels and their timing.
#include "cpu/memory_bandwidth.h"

#include <omp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <string>

#include "core/error.h"

namespace sf {

namespace {

struct FreeDeleter {
  void operator()(double* p) const { std::free(p); }
};
using Array = std::unique_ptr<double[], FreeDeleter>;

Array array_allocate(int64_t values) {
  // 64-byte alignment (a cache line); the size must be a multiple of the alignment.
  const size_t bytes = (static_cast<size_t>(values) * sizeof(double) + 63) / 64 * 64;
  auto* p = static_cast<double*>(std::aligned_alloc(64, bytes));
  SF_CHECK(p != nullptr, "memory bandwidth: cannot allocate {} bytes", bytes);
  return Array(p);
}

// The part [begin, end) of n values that thread `t` of `count` owns. Every kernel uses the same
// split, so each thread streams the pages it first touched.
void thread_range(int64_t n, int64_t& begin, int64_t& end) {
  const int64_t t = omp_get_thread_num(), count = omp_get_num_threads();
  begin = n * t / count;
  end = n * (t + 1) / count;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "32768K", "1M" or a plain number of bytes -> bytes; 0 when unreadable.
int64_t cache_size_bytes(const std::string& text) {
  size_t used = 0;
  int64_t value = 0;
  try {
    value = std::stoll(text, &used);
  } catch (const std::exception&) {
    return 0;
  }
  const std::string unit = text.substr(used);
  if (unit == "K") return value << 10;
  if (unit == "M") return value << 20;
  if (unit == "G") return value << 30;
  return unit.empty() ? value : 0;
}

}  // namespace

int64_t last_level_cache_total_bytes() {
  // The highest-level cache of each CPU, counted once per instance (CPUs sharing an instance
  // list the same shared_cpu_list).
  namespace fs = std::filesystem;
  std::error_code ec;
  int max_level = 0;
  std::map<std::string, int64_t> instances;  // shared_cpu_list -> size, at max_level
  for (const fs::directory_entry& cpu : fs::directory_iterator("/sys/devices/system/cpu", ec)) {
    const std::string name = cpu.path().filename().string();
    if (name.rfind("cpu", 0) != 0 || name.size() < 4 ||
        !std::all_of(name.begin() + 3, name.end(), [](char ch) { return std::isdigit(static_cast<unsigned char>(ch)); }))
      continue;
    std::error_code cache_ec;
    for (const fs::directory_entry& index : fs::directory_iterator(cpu.path() / "cache", cache_ec)) {
      if (index.path().filename().string().rfind("index", 0) != 0) continue;
      const std::string type = read_line((index.path() / "type").string());
      if (type == "Instruction") continue;
      int level = 0;
      try {
        level = std::stoi(read_line((index.path() / "level").string()));
      } catch (const std::exception&) {
        continue;
      }
      const int64_t size = cache_size_bytes(read_line((index.path() / "size").string()));
      if (size <= 0 || level < max_level) continue;
      if (level > max_level) {
        max_level = level;
        instances.clear();
      }
      instances[read_line((index.path() / "shared_cpu_list").string())] = size;
    }
  }
  int64_t total = 0;
  for (const auto& [cpus, size] : instances) total += size;
  return total;
}

int64_t memory_bandwidth_default_array_bytes() {
  const int64_t floor = int64_t{256} << 20, ceiling = int64_t{4} << 30;
  return std::min(ceiling, std::max(floor, 4 * last_level_cache_total_bytes()));
}

MemoryBandwidth memory_bandwidth_measure(const MemoryBandwidthOptions& options) {
  SF_CHECK(options.array_bytes >= 0, "memory bandwidth: array_bytes must be >= 0 (0: automatic), got {}",
           options.array_bytes);
  const int64_t array_bytes =
      options.array_bytes > 0 ? options.array_bytes : memory_bandwidth_default_array_bytes();
  SF_CHECK(array_bytes >= (int64_t{1} << 20),
           "memory bandwidth: arrays of {} bytes would fit in a cache; use at least 1 MiB "
           "(0 picks at least 4 x the last-level caches, and 256 MiB or more)",
           array_bytes);
  SF_CHECK(options.repetitions >= 1, "memory bandwidth: repetitions must be >= 1, got {}",
           options.repetitions);
  SF_CHECK(options.threads >= 0, "memory bandwidth: threads must be >= 0, got {}", options.threads);
  const int threads = options.threads > 0 ? options.threads : omp_get_num_procs();
  const int64_t n = array_bytes / static_cast<int64_t>(sizeof(double));
  Array a = array_allocate(n), b = array_allocate(n), c = array_allocate(n);
  double* const pa = a.get();
  double* const pb = b.get();
  double* const pc = c.get();

  // First touch by the owning thread.
#pragma omp parallel num_threads(threads)
  {
    int64_t begin, end;
    thread_range(n, begin, end);
    for (int64_t i = begin; i < end; ++i) {
      pa[i] = 1.0;
      pb[i] = 2.0;
      pc[i] = 0.0;
    }
  }

  // With s = 0.5 the triad maps a -> 2 + a/2, which stays bounded (towards 4) however many
  // passes run, so the values can be checked exactly at the end.
  const double s = 0.5;
  double expected_a = 1.0;
  double best_copy = std::numeric_limits<double>::infinity();
  double best_triad = best_copy, best_read = best_copy;
  double last_sum = 0.0;
  for (int rep = 0; rep <= options.repetitions; ++rep) {  // rep 0: warm-up, not counted
    auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      int64_t begin, end;
      thread_range(n, begin, end);
      for (int64_t i = begin; i < end; ++i) pc[i] = pa[i];
    }
    const double copy_s = seconds_since(start);

    start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    {
      int64_t begin, end;
      thread_range(n, begin, end);
      for (int64_t i = begin; i < end; ++i) pa[i] = pb[i] + s * pc[i];
    }
    const double triad_s = seconds_since(start);
    expected_a = 2.0 + s * expected_a;

    start = std::chrono::steady_clock::now();
    double sum = 0.0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
    {
      int64_t begin, end;
      thread_range(n, begin, end);
      // Eight independent partial sums: one chain of dependent additions would be limited by
      // the adder's latency (a few GB/s per thread), not by memory.
      double lane[8] = {};
      int64_t i = begin;
      for (; i + 8 <= end; i += 8)
        for (int l = 0; l < 8; ++l) lane[l] += pa[i + l];
      double tail = 0.0;
      for (; i < end; ++i) tail += pa[i];
      sum += ((lane[0] + lane[4]) + (lane[1] + lane[5])) + ((lane[2] + lane[6]) + (lane[3] + lane[7])) + tail;
    }
    const double read_s = seconds_since(start);
    last_sum = sum;

    if (rep == 0) continue;
    best_copy = std::min(best_copy, copy_s);
    best_triad = std::min(best_triad, triad_s);
    best_read = std::min(best_read, read_s);
  }

  // The kernels really ran over every element (and the compiler could not drop them).
  const double expected_sum = expected_a * static_cast<double>(n);
  SF_CHECK(std::abs(last_sum - expected_sum) <= 1e-9 * expected_sum && pa[n / 2] == expected_a &&
               pc[n - 1] == 2.0 * (expected_a - 2.0),
           "memory bandwidth: the kernels computed wrong values (sum {} instead of {})", last_sum,
           expected_sum);

  const double bytes = static_cast<double>(n) * sizeof(double);
  MemoryBandwidth r;
  r.copy_gb_s = 2.0 * bytes / best_copy / 1e9;
  r.triad_gb_s = 3.0 * bytes / best_triad / 1e9;
  r.read_gb_s = bytes / best_read / 1e9;
  r.array_bytes = n * static_cast<int64_t>(sizeof(double));
  r.threads = threads;
  r.repetitions = options.repetitions;
  return r;
}

}  // namespace sf
