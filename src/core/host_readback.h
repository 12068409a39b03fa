// host_readback.h — reading a few device values back to the host without waiting for the work
// queued after them.
//
// A training loop reads each step's loss and gradient norm. Read with a plain copy, the host
// waits until the whole queue has drained, and the next step's launch then starts on an idle
// GPU. A HostReadback splits the read in two: start() queues the copy behind the work queued
// so far and returns at once; wait() blocks until that copy alone has run. In between the host
// queues the next step, so the GPU goes from one step to the next without a gap
// (docs/training-gpu.md, "The step pipeline").
//
// Backend::make_readback() gives the backend's implementation. The one here copies at once
// (right for the CPU backend, whose operations have all run when they return).
#pragma once

#include <vector>

#include "core/tensor.h"

namespace sf {

class Backend;

class HostReadback {
 public:
  virtual ~HostReadback() = default;
  // Queues a copy of `values` (contiguous F64 on the backend that made this readback), taken
  // once the work queued before this call has written them. Work queued afterwards may change
  // `values` without changing what wait() returns. Starting again before wait() is an error.
  virtual void start(const Tensor& values) = 0;
  // Waits for the copy of the last start() (not for work queued after it) and returns the
  // values. An error without a start() since the last wait().
  virtual std::vector<double> wait() = 0;
  // True between start() and wait().
  virtual bool pending() const = 0;
};

// Copies in start(), with Backend::copy: for backends whose queued work has run when a call
// returns (the CPU), and as the fallback of any other.
class CopyingReadback final : public HostReadback {
 public:
  explicit CopyingReadback(Backend& backend) : backend_(backend) {}
  void start(const Tensor& values) override;
  std::vector<double> wait() override;
  bool pending() const override { return pending_; }

 private:
  Backend& backend_;
  std::vector<double> values_;
  bool pending_ = false;
};

// The checks every implementation makes: `values` F64 and contiguous; no read already pending.
void check_readback_start(const Tensor& values, bool pending);

}  // namespace sf
