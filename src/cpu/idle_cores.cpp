// idle_cores.cpp — the free-core count behind the default thread count (idle_cores.h).
#include "cpu/idle_cores.h"

#include <sched.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cmath>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace sf {

namespace {

std::string read_text(const char* path) {
  std::ifstream in(path);
  if (!in) return {};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::vector<int> affinity_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

}  // namespace

CpuTicks parse_proc_stat(const std::string& text) {
  CpuTicks ticks;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    // "cpu<N> user nice system idle iowait irq softirq steal guest guest_nice"; guest time is
    // already inside user and nice, so only the first eight fields are added up.
    if (line.size() < 4 || line.compare(0, 3, "cpu") != 0 || !std::isdigit(line[3])) continue;
    std::istringstream fields(line.substr(3));
    int id = -1;
    if (!(fields >> id) || id < 0) continue;
    unsigned long long value[8] = {};
    int count = 0;
    while (count < 8 && fields >> value[count]) ++count;
    if (count < 4) continue;  // user nice system idle at least
    unsigned long long total = 0;
    for (int i = 0; i < count; ++i) total += value[i];
    const unsigned long long idle = value[3] + (count > 4 ? value[4] : 0);
    ticks[id] = {idle, total};
  }
  return ticks;
}

double busy_cores_between(const CpuTicks& before, const CpuTicks& after,
                          const std::optional<std::vector<int>>& allowed) {
  double busy = 0.0;
  for (const auto& [id, end] : after) {
    if (allowed && std::find(allowed->begin(), allowed->end(), id) == allowed->end()) continue;
    const auto start = before.find(id);
    if (start == before.end()) continue;
    // Counters only grow; a CPU taken offline and back may restart them: skip it then.
    if (end.first < start->second.first || end.second < start->second.second) continue;
    const unsigned long long total = end.second - start->second.second;
    const unsigned long long idle = end.first - start->second.first;
    if (total == 0 || idle > total) continue;
    busy += static_cast<double>(total - idle) / static_cast<double>(total);
  }
  return busy;
}

std::optional<int> cgroup_quota_cores(const std::string& cpu_max) {
  std::istringstream in(cpu_max);
  std::string quota;
  long long period = 0;
  if (!(in >> quota >> period) || quota == "max" || period <= 0) return std::nullopt;
  char* end = nullptr;
  const long long q = std::strtoll(quota.c_str(), &end, 10);
  if (end == quota.c_str() || *end != '\0' || q <= 0) return std::nullopt;
  return static_cast<int>(std::max<long long>(1, (q + period - 1) / period));
}

int free_cores(int usable, double busy) {
  usable = std::max(1, usable);
  const int free = static_cast<int>(std::floor(static_cast<double>(usable) - busy + 0.3));
  return std::clamp(free, 1, usable);
}

CoreAvailability measure_core_availability(std::chrono::milliseconds window) {
  CoreAvailability a;
  const std::vector<int> cpus = affinity_cpus();
  const int cpu_count = std::max<int>(1, static_cast<int>(cpus.size()));
  const std::optional<int> quota = cgroup_quota_cores(read_text("/sys/fs/cgroup/cpu.max"));
  a.usable = quota ? std::min(cpu_count, *quota) : cpu_count;
  a.free = a.usable;
  const CpuTicks before = parse_proc_stat(read_text("/proc/stat"));
  if (before.empty()) return a;
  std::this_thread::sleep_for(window);
  const CpuTicks after = parse_proc_stat(read_text("/proc/stat"));
  if (after.empty()) return a;
  const std::optional<std::vector<int>> allowed =
      cpus.empty() ? std::nullopt : std::optional<std::vector<int>>(cpus);
  a.busy = busy_cores_between(before, after, allowed);
  // Other work takes from the CPUs we may run on; a quota then caps what we may use of the rest.
  a.free = std::min(a.usable, free_cores(cpu_count, a.busy));
  a.measured = true;
  return a;
}

}  // namespace sf
