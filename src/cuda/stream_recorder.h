// stream_recorder.h — recordings of one stream's work as CUDA graphs, replayed by id: what
// CudaBackend's begin_recording, end_recording, abort_recording, replay and release_recording
// do (core/backend.h). A decode step is recorded once and replayed at every later step.
//
// While a recording is open the decode kernels' launches gather into step programs
// (step_program.h); the backend launches the pending program before anything else it enqueues
// (flush_program) and end() launches the last one. Before a recording is instantiated its small
// memsets become kernel nodes (recording_memsets.h; SF_RECORDING_KEEP_MEMSETS=1 keeps them).
// A recording is stale once the backend has replaced a buffer recordings may use (invalidate()):
// replay() then says false, and the caller records again.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "cuda/step_program.h"

namespace sf::cuda {

class StreamRecorder {
 public:
  explicit StreamRecorder(cudaStream_t stream);
  ~StreamRecorder();
  StreamRecorder(const StreamRecorder&) = delete;
  StreamRecorder& operator=(const StreamRecorder&) = delete;

  void begin();      // starts capturing the stream (an error if a recording is open)
  int end();         // ends it and returns the new recording's id
  void abort();      // ends an open recording and drops it (nothing if none is open)
  bool replay(int id);       // launches recording `id`; false when it is stale
  void release(int id);      // frees recording `id` (nothing if it is gone already)
  bool capturing() const { return capturing_; }
  void invalidate() { ++generation_; }

  StepProgram& program() { return program_; }
  void flush_program() { program_.flush(stream_); }

 private:
  struct Recording {
    cudaGraphExec_t exec = nullptr;
    int64_t generation = 0;        // generation_ when recorded
    std::vector<void*> programs;   // the step programs it launches (their device memory)
  };
  cudaStream_t stream_;
  StepProgram program_;
  std::vector<Recording> recordings_;
  int64_t generation_ = 0;
  bool capturing_ = false;
  bool keep_memsets_ = false;
};

}  // namespace sf::cuda
