// nccl_collective.cpp — NcclCollective: the communicator made through the rendezvous, grouped
// all-reduces on the backend's stream, waits bounded by SF_DIST_TIMEOUT, abort on failure.
//
// The communicator is non-blocking (ncclConfig_t::blocking = 0): no NCCL call blocks inside
// NCCL, so every wait is one of ours and has a deadline. The rules of such a communicator: a
// call may return ncclInProgress, and then ncclCommGetAsyncError is polled until it reports
// ncclSuccess before the next NCCL call or kernel on the stream; after any error the only valid
// call is ncclCommAbort.
#include "cuda/nccl_collective.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <thread>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace sf {

namespace {

using Clock = std::chrono::steady_clock;

// Calls per ncclGroupStart/ncclGroupEnd: NCCL versions have capped how many operations one
// group may hold (2048 in some), so a model's gradient tensors go in groups of at most this.
constexpr size_t kMaxCallsPerGroup = 1024;

std::string nccl_text(ncclResult_t result, ncclComm_t comm) {
  const char* detail = ncclGetLastError(comm);
  if (detail != nullptr && *detail != '\0')
    return fmt::format("{} ({})", ncclGetErrorString(result), detail);
  return ncclGetErrorString(result);
}

Clock::time_point deadline_after(double seconds) {
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double>(seconds));
}

// Busy-polling answers within microseconds when the other ranks are ready; a rank that waits
// long (rank 0 writing a checkpoint) should not burn a core for it.
void pause_after(Clock::time_point started) {
  if (Clock::now() - started < std::chrono::milliseconds(2))
    std::this_thread::yield();
  else
    std::this_thread::sleep_for(std::chrono::microseconds(100));
}

// NVLink SHARP multicast (NVLS) stays off whatever the environment says: see
// docs/data-parallel.md. NCCL reads the variable when the communicator is created.
void keep_nvls_off() {
  const char* value = std::getenv("NCCL_NVLS_ENABLE");
  if (value != nullptr && std::strcmp(value, "0") == 0) return;
  if (value != nullptr)
    std::fprintf(stderr,
                 "stagformer: NCCL_NVLS_ENABLE=%s overridden to 0 (NVLink multicast stays off, "
                 "see docs/data-parallel.md)\n",
                 value);
  ::setenv("NCCL_NVLS_ENABLE", "0", 1);
}

}  // namespace

NcclCollective::NcclCollective(const DistEnv& env, int device, cudaStream_t stream)
    : rank_(env.rank),
      world_size_(env.world_size),
      device_(device),
      stream_(stream),
      op_timeout_s_(env.op_timeout_s) {
  keep_nvls_off();
  SF_CUDA_CHECK(cudaSetDevice(device_));

  ncclUniqueId id{};
  std::string root_id;
  if (rank_ == 0) {
    const ncclResult_t made = ncclGetUniqueId(&id);
    SF_CHECK(made == ncclSuccess, "NCCL error on rank 0 in ncclGetUniqueId: {}",
             nccl_text(made, nullptr));
    root_id.assign(id.internal, sizeof id.internal);
  }
  const std::string shared_id = rendezvous_share(env, root_id);
  SF_CHECK(shared_id.size() == sizeof id.internal,
           "NCCL: rank {} received a {}-byte unique id from the rendezvous, expected {} bytes "
           "(a different stagformer or NCCL version on rank 0?)",
           rank_, shared_id.size(), sizeof id.internal);
  std::memcpy(id.internal, shared_id.data(), sizeof id.internal);

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // every wait is ours and has a deadline (see the file comment)
  config.commName = "stagformer";
  const ncclResult_t created = ncclCommInitRankConfig(&comm_, world_size_, id, rank_, &config);
  wait_accepted(created, "ncclCommInitRankConfig", env.init_timeout_s);

  const cudaError_t allocated = cudaMalloc(&scratch_, sizeof(double));
  if (allocated != cudaSuccess)
    abort_and_fail(fmt::format("NCCL: rank {} cannot allocate its scratch value on device {}: {}",
                               rank_, device_, cudaGetErrorString(allocated)));
}

NcclCollective::~NcclCollective() {
  if (comm_ != nullptr) {
    if (std::uncaught_exceptions() > 0) {
      // Unwinding after an error: the other ranks may be gone or mid-operation, and a clean
      // shutdown would wait for them. Abort returns at once and cancels what is in flight.
      ncclCommAbort(comm_);
    } else {
      // Normal end: finalize (flushes; may wait for the other ranks) with a deadline, destroy.
      ncclResult_t state = ncclCommFinalize(comm_);
      const auto started = Clock::now();
      const auto deadline = deadline_after(op_timeout_s_);
      while (state == ncclInProgress && Clock::now() < deadline) {
        if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess) break;
        pause_after(started);
      }
      if (state == ncclSuccess)
        ncclCommDestroy(comm_);
      else
        ncclCommAbort(comm_);
    }
  }
  // Last: cudaFree waits for the device, which must not still run an operation of a dead job.
  if (scratch_ != nullptr) cudaFree(scratch_);
}

void NcclCollective::abort_and_fail(const std::string& message) {
  if (comm_ != nullptr) {
    ncclCommAbort(comm_);
    comm_ = nullptr;
  }
  fail(message);
}

void NcclCollective::wait_accepted(ncclResult_t result, const char* what, double timeout_s) {
  const auto started = Clock::now();
  const auto deadline = deadline_after(timeout_s);
  while (result == ncclInProgress) {
    SF_CHECK(comm_ != nullptr, "NCCL: rank {} has no communicator (aborted after an error)", rank_);
    ncclResult_t state = ncclSuccess;
    const ncclResult_t queried = ncclCommGetAsyncError(comm_, &state);
    result = queried != ncclSuccess ? queried : state;
    if (result != ncclInProgress) break;
    if (Clock::now() > deadline)
      abort_and_fail(fmt::format(
          "NCCL: rank {} of {}: {} did not complete within {} s; another rank has probably "
          "failed, stopped or was never started (SF_DIST_INIT_TIMEOUT / SF_DIST_TIMEOUT set the "
          "wait)",
          rank_, world_size_, what, timeout_s));
    pause_after(started);
  }
  if (result != ncclSuccess)
    abort_and_fail(fmt::format("NCCL error on rank {} of {} in {}: {}", rank_, world_size_, what,
                               nccl_text(result, comm_)));
}

void NcclCollective::finish(ncclResult_t result, const char* what) {
  wait_accepted(result, what, op_timeout_s_);
  const auto started = Clock::now();
  const auto deadline = deadline_after(op_timeout_s_);
  for (;;) {
    const cudaError_t done = cudaStreamQuery(stream_);
    if (done == cudaSuccess) return;
    if (done != cudaErrorNotReady)
      abort_and_fail(fmt::format("CUDA error on rank {} while waiting for {}: {} ({})", rank_,
                                 what, cudaGetErrorString(done), cudaGetErrorName(done)));
    // A failure the network transport noticed (a peer's connection reset) shows up here.
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &state) != ncclSuccess ||
        (state != ncclSuccess && state != ncclInProgress))
      abort_and_fail(fmt::format("NCCL error on rank {} of {} during {}: {}", rank_, world_size_,
                                 what, nccl_text(state, comm_)));
    if (Clock::now() > deadline)
      abort_and_fail(fmt::format(
          "NCCL: rank {} of {}: {} did not complete within {} s; another rank has probably "
          "failed or stopped (SF_DIST_TIMEOUT sets the wait)",
          rank_, world_size_, what, op_timeout_s_));
    pause_after(started);
  }
}

void NcclCollective::all_reduce_sum(std::vector<Tensor>& tensors) {
  for (const Tensor& t : tensors)
    SF_CHECK(t.dtype() == DType::f32 && t.device() == Device::cuda && t.is_contiguous(),
             "NCCL all-reduce: expected contiguous F32 CUDA tensors, got {}", t.describe());
  SF_CHECK(comm_ != nullptr, "NCCL: rank {} has no communicator (aborted after an error)", rank_);
  for (size_t first = 0; first < tensors.size(); first += kMaxCallsPerGroup) {
    const size_t last = std::min(tensors.size(), first + kMaxCallsPerGroup);
    const ncclResult_t started = ncclGroupStart();
    if (started != ncclSuccess)
      abort_and_fail(fmt::format("NCCL error on rank {} in ncclGroupStart: {}", rank_,
                                 nccl_text(started, comm_)));
    for (size_t i = first; i < last; ++i) {
      Tensor& t = tensors[i];
      if (t.numel() == 0) continue;
      const ncclResult_t queued =
          ncclAllReduce(t.raw(), t.raw(), static_cast<size_t>(t.numel()), ncclFloat32, ncclSum,
                        comm_, stream_);
      if (queued != ncclSuccess && queued != ncclInProgress) {
        ncclGroupEnd();
        abort_and_fail(fmt::format("NCCL error on rank {} in ncclAllReduce of {}: {}", rank_,
                                   t.describe(), nccl_text(queued, comm_)));
      }
    }
    wait_accepted(ncclGroupEnd(), "the gradient all-reduce (ncclGroupEnd)", op_timeout_s_);
  }
  finish(ncclSuccess, "the gradient all-reduce");
}

double NcclCollective::all_reduce_sum(double value) {
  SF_CHECK(comm_ != nullptr, "NCCL: rank {} has no communicator (aborted after an error)", rank_);
  SF_CUDA_CHECK(cudaMemcpyAsync(scratch_, &value, sizeof value, cudaMemcpyHostToDevice, stream_));
  finish(ncclAllReduce(scratch_, scratch_, 1, ncclFloat64, ncclSum, comm_, stream_),
         "an all-reduce of a host value (ncclAllReduce)");
  double sum = 0.0;
  SF_CUDA_CHECK(cudaMemcpyAsync(&sum, scratch_, sizeof sum, cudaMemcpyDeviceToHost, stream_));
  SF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  return sum;
}

void NcclCollective::barrier() {
  // NCCL has no barrier: an all-reduce of one value completes on a rank only once every rank
  // has contributed to it.
  all_reduce_sum(0.0);
}

std::string NcclCollective::version() {
  int code = 0;
  if (ncclGetVersion(&code) != ncclSuccess) return "NCCL (unknown version)";
  return fmt::format("NCCL {}.{}.{}", code / 10000, code % 10000 / 100, code % 100);
}

}  // namespace sf
