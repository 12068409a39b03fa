// run_compare.cpp — tolerant comparison of two training runs' metrics and weights.
#include "support/run_compare.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "io/safetensors.h"
#include "train/metrics_log.h"

namespace sf::test {

namespace {

// (step, field) -> value for the compared fields of a metrics log.
std::map<std::pair<int64_t, std::string>, double> compared_metrics(const std::string& run) {
  std::map<std::pair<int64_t, std::string>, double> out;
  for (const auto& record : metrics_read(run + "/metrics.jsonl"))
    for (const char* field : {"loss", "grad_norm", "val_loss"})
      if (record.contains(field))
        out[{record["step"].get<int64_t>(), field}] = record[field].get<double>();
  return out;
}

}  // namespace

void expect_metrics_close(const std::string& run_a, const std::string& run_b, double relative) {
  const auto a = compared_metrics(run_a);
  const auto b = compared_metrics(run_b);
  ASSERT_FALSE(b.empty()) << run_b << "/metrics.jsonl has no loss";
  ASSERT_EQ(a.size(), b.size()) << run_a << " and " << run_b << " logged different steps";
  for (const auto& [key, expected] : b) {
    const auto it = a.find(key);
    ASSERT_NE(it, a.end()) << run_a << " has no " << key.second << " at step " << key.first;
    EXPECT_LE(std::abs(it->second - expected), relative * std::abs(expected))
        << key.second << " at step " << key.first << ": " << it->second << " vs " << expected;
  }
}

void expect_weights_close(const std::string& file_a, const std::string& file_b, double relative) {
  const SafetensorsFile a(file_a), b(file_b);
  ASSERT_EQ(a.names().size(), b.names().size()) << file_a << " vs " << file_b;
  for (const std::string& name : b.names()) {
    ASSERT_TRUE(a.has(name)) << file_a << " has no " << name;
    const Tensor x = a.load(name), y = b.load(name);
    ASSERT_EQ(x.shape(), y.shape()) << name;
    ASSERT_EQ(y.dtype(), DType::f32) << name;
    const float* px = x.data<float>();
    const float* py = y.data<float>();
    double diff = 0.0, norm = 0.0;
    for (int64_t i = 0; i < y.numel(); ++i) {
      diff += (double(px[i]) - double(py[i])) * (double(px[i]) - double(py[i]));
      norm += double(py[i]) * double(py[i]);
    }
    EXPECT_LE(std::sqrt(diff), relative * std::sqrt(norm))
        << name << ": relative difference " << std::sqrt(diff / std::max(norm, 1e-300));
  }
}

}  // namespace sf::test
