// nccl_collective.h — sf::Collective over NCCL: one process per GPU, on one host or several.
//
// The constructor joins the job that `env` describes (distributed/rendezvous.h): rank 0 makes the NCCL
// unique id, the rendezvous hands it to every rank, and each rank creates its communicator on
// its GPU. Operations are enqueued on the given stream (the CUDA backend's, so they are ordered
// after the kernels that produced the gradients) and each call returns when its result is
// ready. Every wait is bounded by env.op_timeout_s (SF_DIST_TIMEOUT): a rank that died or hangs
// makes the others fail with a clear error instead of hanging forever, and the communicator is
// then aborted. NVLink multicast (NVLS) is kept off: NCCL_NVLS_ENABLE=0 (docs/data-parallel.md).
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "distributed/collective.h"
#include "distributed/rendezvous.h"

namespace sf {

class NcclCollective final : public Collective {
 public:
  // `device`: this rank's CUDA device (usually env.local_rank); `stream`: where operations run.
  NcclCollective(const DistEnv& env, int device, cudaStream_t stream);
  ~NcclCollective() override;
  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  using Collective::all_reduce_sum;
  // Tensors: contiguous F32 on this rank's CUDA device.
  void all_reduce_sum(std::vector<Tensor>& tensors) override;
  double all_reduce_sum(double value) override;
  void barrier() override;

  // "NCCL 2.28.9" (the library actually loaded).
  static std::string version();

 private:
  // Waits until NCCL has accepted the last call (`result` may be ncclInProgress on a
  // non-blocking communicator) and then until the stream has run it; throws, after aborting
  // the communicator, on an NCCL error or when op_timeout_s passes. `what` names the operation.
  void finish(ncclResult_t result, const char* what);
  // Only the first half: waits until NCCL has accepted the call (bounded by `timeout_s`).
  void wait_accepted(ncclResult_t result, const char* what, double timeout_s);
  [[noreturn]] void abort_and_fail(const std::string& message);

  int rank_;
  int world_size_;
  int device_;
  cudaStream_t stream_;
  double op_timeout_s_;
  ncclComm_t comm_ = nullptr;
  double* scratch_ = nullptr;  // one device double for host scalars and the barrier
};

}  // namespace sf
