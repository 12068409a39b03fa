// pinned_readback.cpp — PinnedReadback: a queued device-to-host copy into pinned memory and the
// event that says it has run.
#include "cuda/pinned_readback.h"

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace sf::cuda {

PinnedReadback::PinnedReadback(cudaStream_t stream) : stream_(stream) {
  SF_CUDA_CHECK(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
}

PinnedReadback::~PinnedReadback() {
  // A copy still queued writes into host_: let it land before the memory goes.
  if (pending_) cudaEventSynchronize(copied_);
  if (host_) cudaFreeHost(host_);
  cudaEventDestroy(copied_);
}

void PinnedReadback::start(const Tensor& values) {
  check_readback_start(values, pending_);
  SF_CHECK(values.device() == Device::cuda, "HostReadback::start: {} is not on the GPU",
           values.describe());
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  SF_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capture));
  // A recorded copy would write the host buffer at every replay, long after wait() returned.
  SF_CHECK(capture == cudaStreamCaptureStatusNone,
           "HostReadback::start: cannot read back while the backend is recording");
  if (values.numel() > capacity_) {
    if (host_) SF_CUDA_CHECK(cudaFreeHost(host_));
    host_ = nullptr;
    SF_CUDA_CHECK(cudaMallocHost(&host_, values.numel() * sizeof(double)));
    capacity_ = values.numel();
  }
  count_ = values.numel();
  SF_CUDA_CHECK(cudaMemcpyAsync(host_, values.raw(), count_ * sizeof(double),
                                cudaMemcpyDeviceToHost, stream_));
  SF_CUDA_CHECK(cudaEventRecord(copied_, stream_));
  pending_ = true;
}

std::vector<double> PinnedReadback::wait() {
  SF_CHECK(pending_, "HostReadback::wait: no read was started");
  pending_ = false;
  SF_CUDA_CHECK(cudaEventSynchronize(copied_));
  return std::vector<double>(host_, host_ + count_);
}

}  // namespace sf::cuda
