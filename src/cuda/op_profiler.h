// op_profiler.h — per-operation GPU time of the CUDA backend, for finding where a step goes.
//
// Enabled by the environment variable SF_CUDA_PROFILE=1: every Backend call is bracketed by two
// CUDA events on the backend's stream; at the end (the backend's destruction) the elapsed
// times are summed per operation (matrix products per shape) and printed to stderr as a table,
// largest first. Events only time the GPU work of each call, so the table adds up to the busy
// time of the stream; the gap to the wall time is launch and host overhead.
#pragma once

#include <cuda_runtime.h>

#include <string>
#include <vector>

namespace sf::cuda {

class OpProfiler {
 public:
  explicit OpProfiler(cudaStream_t stream) : stream_(stream) {}
  ~OpProfiler();

  // Brackets one operation; the returned guard records the stop event when it goes away.
  class Scope {
   public:
    Scope(OpProfiler* profiler, std::string name);
    ~Scope();
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    OpProfiler* profiler_;
    size_t index_ = 0;
  };

  void report();  // prints the table (and forgets the events)

 private:
  struct Record {
    std::string name;
    cudaEvent_t start, stop;
  };
  cudaStream_t stream_;
  std::vector<Record> records_;
};

}  // namespace sf::cuda
