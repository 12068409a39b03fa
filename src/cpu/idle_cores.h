// idle_cores.h — how many of this process's CPU cores are free right now, for the default
// thread count.
//
// Our OpenMP threads (and OpenBLAS's, the same pool) spin for a while after each parallel
// region. On a machine whose cores are busy with other work that spinning collapses throughput
// (2 threads against 2 busy processes on 2 cores decoded at 20 tok/s where 1 thread gave 547),
// so the default is not "all cores" but the cores that are idle when the command starts:
//   usable = the CPUs in this process's affinity mask, capped by a cgroup CPU quota (cpu.max);
//   busy   = the time those CPUs spent working during a short sample of /proc/stat (the
//            machine's other work: this process sleeps meanwhile);
//   free   = (CPUs of the mask - busy), a core counted when at least 70% of one is idle, at
//            least 1 and at most usable.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sf {

// Per CPU id: (idle ticks, total ticks) from /proc/stat's "cpuN ..." lines (idle + iowait count
// as idle). Lines that do not parse are skipped; the aggregate "cpu" line is not a CPU.
using CpuTicks = std::map<int, std::pair<unsigned long long, unsigned long long>>;
CpuTicks parse_proc_stat(const std::string& text);

// The number of cores the busy time of `cpus` between two samples amounts to (0 .. cpus
// counted), over the CPUs present in both samples and, when `allowed` is given, in it.
double busy_cores_between(const CpuTicks& before, const CpuTicks& after,
                          const std::optional<std::vector<int>>& allowed = std::nullopt);

// The CPU quota of a cgroup v2 "cpu.max" text ("max 100000" or "250000 100000"), rounded up to
// whole cores; nullopt when unlimited or malformed.
std::optional<int> cgroup_quota_cores(const std::string& cpu_max);

struct CoreAvailability {
  int usable = 1;      // affinity mask, capped by the cgroup quota
  double busy = 0.0;   // cores' worth of other work during the sample
  int free = 1;        // the suggested thread count: 1 .. usable
  bool measured = false;  // false when /proc/stat could not be read (free = usable then)
};

// Samples /proc/stat `window` apart (the caller sleeps meanwhile).
CoreAvailability measure_core_availability(
    std::chrono::milliseconds window = std::chrono::milliseconds(100));

// From the parts, for tests: free = clamp(floor(usable - busy + 0.3), 1, usable).
int free_cores(int usable, double busy);

}  // namespace sf
