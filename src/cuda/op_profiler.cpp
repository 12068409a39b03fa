// op_profiler.cpp — event-bracketed per-operation timing (see op_profiler.h).
#include "cuda/op_profiler.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "cuda/cuda_check.h"

namespace sf::cuda {

OpProfiler::Scope::Scope(OpProfiler* profiler, std::string name) : profiler_(profiler) {
  if (!profiler_) return;
  Record r{std::move(name), nullptr, nullptr};
  SF_CUDA_CHECK(cudaEventCreate(&r.start));
  SF_CUDA_CHECK(cudaEventCreate(&r.stop));
  SF_CUDA_CHECK(cudaEventRecord(r.start, profiler_->stream_));
  index_ = profiler_->records_.size();
  profiler_->records_.push_back(std::move(r));
}

OpProfiler::Scope::~Scope() {
  if (profiler_) cudaEventRecord(profiler_->records_[index_].stop, profiler_->stream_);
}

void OpProfiler::report() {
  if (records_.empty()) return;
  cudaStreamSynchronize(stream_);
  struct Total {
    double ms = 0;
    long calls = 0;
  };
  std::map<std::string, Total> totals;
  double all = 0;
  for (Record& r : records_) {
    float ms = 0;
    if (cudaEventElapsedTime(&ms, r.start, r.stop) == cudaSuccess) {
      totals[r.name].ms += ms;
      totals[r.name].calls += 1;
      all += ms;
    }
    cudaEventDestroy(r.start);
    cudaEventDestroy(r.stop);
  }
  records_.clear();
  std::vector<std::pair<std::string, Total>> rows(totals.begin(), totals.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::fprintf(stderr, "\nGPU time per operation (SF_CUDA_PROFILE), total %.1f ms\n", all);
  std::fprintf(stderr, "%-44s %10s %8s %7s\n", "operation", "ms", "calls", "share");
  for (const auto& [name, t] : rows)
    std::fprintf(stderr, "%-44s %10.2f %8ld %6.1f%%\n", name.c_str(), t.ms, t.calls, 100.0 * t.ms / all);
}

OpProfiler::~OpProfiler() { report(); }

}  // namespace sf::cuda
