// memory_bandwidth.h — a measured memory bandwidth: what benchmarks compare the bandwidth a
// decode step achieves with (design.md, "Benchmarks print what the field prints"). Each backend
// measures its own memory (Backend::measure_memory_bandwidth): the CPU's main memory with
// STREAM-like kernels (cpu/memory_bandwidth.h).
#pragma once

#include <algorithm>
#include <cstdint>

namespace sf {

struct MemoryBandwidth {
  double copy_gb_s = 0.0;   // 1 GB = 1e9 bytes, as STREAM and llama-bench count
  double triad_gb_s = 0.0;
  double read_gb_s = 0.0;
  int64_t array_bytes = 0;  // per array
  int threads = 0;
  int repetitions = 0;

  // The peak a decode step is compared with: the best of the kernels measured.
  double peak_gb_s() const { return std::max({copy_gb_s, triad_gb_s, read_gb_s}); }
};

}  // namespace sf
