// memory_bandwidth.h — the machine's achievable main-memory bandwidth, measured STREAM-style
// (the CPU backend's Backend::measure_memory_bandwidth).
//
// Benchmarks report the bandwidth a decode step achieves as a fraction of what the machine can
// do (design.md, "Benchmarks print what the field prints"); this is the "can do". Three kernels
// over double arrays much larger than the last-level cache, OpenMP over all threads, each array
// first touched by the thread that later streams it (so pages land on that thread's NUMA node):
//   copy   c[i] = a[i]              2 arrays moved per pass
//   triad  a[i] = b[i] + s * c[i]   3 arrays moved per pass (STREAM's headline kernel)
//   read   sum += a[i]              1 array read per pass (what decoding does to its weights)
// Bytes are counted as STREAM counts them (reads + writes, write-allocate traffic not counted),
// and each kernel reports its best pass of `repetitions` after one warm-up pass.
#pragma once

#include <cstdint>

#include "core/memory_bandwidth.h"

namespace sf {

// STREAM's sizing rule: each array at least 4 x the last-level caches of the machine (all of
// them together), and never below 256 MiB; at most 4 GiB.
int64_t memory_bandwidth_default_array_bytes();
// The machine's last-level cache in bytes, all instances together, from
// /sys/devices/system/cpu/cpu*/cache (0 when the system does not say, as in some VMs).
int64_t last_level_cache_total_bytes();

struct MemoryBandwidthOptions {
  int64_t array_bytes = 0;                    // per array (three arrays); 0: the default above
  int threads = 0;                            // 0: every processor OpenMP can use
  int repetitions = 5;                        // best of this many timed passes per kernel
};

// Runs the three kernels. Errors: array_bytes negative or below 1 MiB (it would measure the
// cache, not memory), repetitions < 1, threads < 0. Moves about 3 arrays * 6 passes * 3 kernels
// of memory plus the first touch: ~1 s on a server, several on a small VM, for 256 MiB arrays.
MemoryBandwidth memory_bandwidth_measure(const MemoryBandwidthOptions& options = {});

}  // namespace sf
