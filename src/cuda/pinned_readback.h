// pinned_readback.h — the CUDA backend's HostReadback (core/host_readback.h): device values
// copied into pinned host memory on the backend's stream, with an event marking the copy done.
//
// Pinned memory makes the device-to-host copy truly asynchronous (into pageable memory the
// host would wait for it), and waiting on the event, not on the stream, leaves the work queued
// after the copy running: the trainer queues step n + 1 before it reads step n's loss and norm.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/host_readback.h"

namespace sf::cuda {

class PinnedReadback final : public HostReadback {
 public:
  explicit PinnedReadback(cudaStream_t stream);
  ~PinnedReadback() override;
  PinnedReadback(const PinnedReadback&) = delete;
  PinnedReadback& operator=(const PinnedReadback&) = delete;

  void start(const Tensor& values) override;
  std::vector<double> wait() override;
  bool pending() const override { return pending_; }

 private:
  cudaStream_t stream_;
  cudaEvent_t copied_ = nullptr;
  double* host_ = nullptr;  // pinned, `capacity_` doubles
  int64_t capacity_ = 0;
  int64_t count_ = 0;       // values of the pending read
  bool pending_ = false;
};

}  // namespace sf::cuda
