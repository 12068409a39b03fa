// stream_recorder.cpp — StreamRecorder (stream_recorder.h).
#include "cuda/stream_recorder.h"

#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/recording_memsets.h"

namespace sf::cuda {

StreamRecorder::StreamRecorder(cudaStream_t stream) : stream_(stream) {
  if (const char* flag = std::getenv("SF_RECORDING_KEEP_MEMSETS"); flag && std::strcmp(flag, "1") == 0)
    keep_memsets_ = true;
}

StreamRecorder::~StreamRecorder() {
  abort();
  for (Recording& r : recordings_) {
    if (r.exec) cudaGraphExecDestroy(r.exec);
    StepProgram::free_buffers(r.programs);
  }
}

void StreamRecorder::begin() {
  SF_CHECK(!capturing_, "begin_recording: a recording is already open");
  // Relaxed: the launchers' cudaFuncSetAttribute and attribute queries are not stream work.
  SF_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed));
  capturing_ = true;
  program_.set_collecting(true);  // the decode kernels' runs become programs (step_program.h)
}

int StreamRecorder::end() {
  SF_CHECK(capturing_, "end_recording: no recording is open");
  flush_program();
  program_.set_collecting(false);
  std::vector<void*> programs = program_.take_buffers();
  capturing_ = false;
  cudaGraph_t graph = nullptr;
  SF_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
  if (!keep_memsets_) {
    try {
      replace_small_memsets(graph);  // cuBLASLt's 4-byte memsets (recording_memsets.h)
    } catch (...) {
      cudaGraphDestroy(graph);
      StepProgram::free_buffers(programs);
      throw;
    }
  }
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  if (status != cudaSuccess) StepProgram::free_buffers(programs);
  SF_CUDA_CHECK(status);
  recordings_.push_back({exec, generation_, std::move(programs)});
  return static_cast<int>(recordings_.size()) - 1;
}

void StreamRecorder::abort() {
  if (!capturing_) return;
  capturing_ = false;
  program_.discard();
  program_.set_collecting(false);
  std::vector<void*> programs = program_.take_buffers();
  StepProgram::free_buffers(programs);  // (never replayed)
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream_, &graph);  // ends the capture, valid or not
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
}

bool StreamRecorder::replay(int id) {
  SF_CHECK(id >= 0 && id < static_cast<int>(recordings_.size()) && recordings_[id].exec,
           "replay: no recording {}", id);
  if (recordings_[id].generation != generation_) return false;
  SF_CUDA_CHECK(cudaGraphLaunch(recordings_[id].exec, stream_));
  return true;
}

void StreamRecorder::release(int id) {
  if (id < 0 || id >= static_cast<int>(recordings_.size()) || !recordings_[id].exec) return;
  cudaGraphExecDestroy(recordings_[id].exec);
  recordings_[id].exec = nullptr;
  StepProgram::free_buffers(recordings_[id].programs);
}

}  // namespace sf::cuda
