// idle_cores_test.cpp — the free-core count behind the default thread count (cpu/idle_cores.h):
// /proc/stat parsing, busy time between two samples, cgroup quotas, and the rounding rule.
#include <gtest/gtest.h>

#include "cpu/idle_cores.h"

namespace sf {
namespace {

// Two samples of a 3-CPU machine 100 ticks apart: cpu0 fully busy, cpu1 idle (10 of them in
// iowait), cpu2 half busy.
const char* kBefore =
    "cpu  600 0 300 900 10 0 0 0 0 0\n"
    "cpu0 100 0 100 300 0 0 0 0 0 0\n"
    "cpu1 200 0 100 300 10 0 0 0 0 0\n"
    "cpu2 300 0 100 300 0 0 0 0 0 0\n"
    "intr 12345 0 0\n"
    "ctxt 999\n";
const char* kAfter =
    "cpu  780 0 320 1080 20 0 0 0 0 0\n"
    "cpu0 180 0 120 300 0 0 0 0 0 0\n"
    "cpu1 200 0 100 390 20 0 0 0 0 0\n"
    "cpu2 350 0 100 350 0 0 0 0 0 0\n"
    "intr 12399 0 0\n";

TEST(IdleCores, ParsesPerCpuLinesOnly) {
  const CpuTicks ticks = parse_proc_stat(kBefore);
  ASSERT_EQ(ticks.size(), 3u);
  EXPECT_EQ(ticks.at(1).first, 310u);   // idle + iowait
  EXPECT_EQ(ticks.at(1).second, 610u);  // every field
  EXPECT_TRUE(parse_proc_stat("").empty());
  EXPECT_TRUE(parse_proc_stat("cpu0 1 2\ncpux 1 2 3 4\ncpu-1 1 2 3 4\n").empty());
  // An old kernel's four fields are enough.
  EXPECT_EQ(parse_proc_stat("cpu7 1 2 3 4\n").at(7).second, 10u);
}

TEST(IdleCores, BusyTimeBetweenSamples) {
  const CpuTicks before = parse_proc_stat(kBefore), after = parse_proc_stat(kAfter);
  EXPECT_DOUBLE_EQ(busy_cores_between(before, after), 1.0 + 0.0 + 0.5);
  // Only the CPUs this process may use count.
  EXPECT_DOUBLE_EQ(busy_cores_between(before, after, std::vector<int>{1, 2}), 0.5);
  // A CPU whose counters went backwards (offline and back) or did not move is skipped.
  EXPECT_DOUBLE_EQ(busy_cores_between(after, before), 0.0);
  EXPECT_DOUBLE_EQ(busy_cores_between(before, before), 0.0);
}

TEST(IdleCores, CgroupQuota) {
  EXPECT_EQ(cgroup_quota_cores("max 100000\n"), std::nullopt);
  EXPECT_EQ(cgroup_quota_cores("200000 100000\n"), 2);
  EXPECT_EQ(cgroup_quota_cores("150000 100000"), 2);  // a part core is a core to run on
  EXPECT_EQ(cgroup_quota_cores("50000 100000"), 1);
  for (const char* bad : {"", "abc 100000", "100000", "100000 0", "-5 100000", "12x 100000"})
    EXPECT_EQ(cgroup_quota_cores(bad), std::nullopt) << bad;
}

TEST(IdleCores, FreeCoresRounding) {
  EXPECT_EQ(free_cores(2, 0.05), 2);  // a quiet machine's background
  EXPECT_EQ(free_cores(2, 0.6), 1);   // a core counts when 70% of it is idle
  EXPECT_EQ(free_cores(2, 0.29), 2);
  EXPECT_EQ(free_cores(2, 2.0), 1);   // never fewer than one
  EXPECT_EQ(free_cores(16, 3.2), 13);  // 12 idle cores and 0.8 of another
  EXPECT_EQ(free_cores(16, 3.5), 12);
  EXPECT_EQ(free_cores(0, 0.0), 1);
}

TEST(IdleCores, MeasuresThisMachine) {
  const CoreAvailability a = measure_core_availability(std::chrono::milliseconds(20));
  EXPECT_GE(a.usable, 1);
  EXPECT_GE(a.free, 1);
  EXPECT_LE(a.free, a.usable);
  EXPECT_GE(a.busy, 0.0);
}

}  // namespace
}  // namespace sf
