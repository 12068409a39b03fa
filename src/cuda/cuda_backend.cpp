// cuda_backend.cpp — CudaBackend (cuda_backend_impl.h): construction, memory, copies, the
// elementwise and reduction operations, recording, and make_cuda_backend with the other
// functions of cuda_backend.h. The training and decoding operations are in
// cuda_backend_train.cpp and cuda_backend_decode.cpp.
#include "cuda/cuda_backend.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/cuda_backend_impl.h"
#include "cuda/cuda_check.h"
#include "cuda/host_uploads.h"
#include "cuda/kernels.h"
#include "cuda/matmul.h"
#include "cuda/op_profiler.h"
#include "cuda/pinned_readback.h"
#include "cuda/stream_recorder.h"

namespace sf {

namespace cuda_detail {

CudaBackend::CudaBackend(int device) : device_(device) {
  SF_CUDA_CHECK(cudaSetDevice(device));
  SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  SF_CUDA_CHECK(cudaMalloc(&scalars_, 64 * sizeof(double)));
  matmul_ = std::make_unique<cuda::Matmul>(stream_);
  recorder_ = std::make_unique<cuda::StreamRecorder>(stream_);
  if (const char* flag = std::getenv("SF_CUDA_PROFILE"); flag && std::string(flag) == "1")
    profiler_ = std::make_unique<cuda::OpProfiler>(stream_);
}

CudaBackend::~CudaBackend() {
  profiler_.reset();  // prints its table
  recorder_.reset();  // an open recording is dropped, the recordings freed
  matmul_.reset();
  cudaStreamSynchronize(stream_);
  if (workspace_) cudaFree(workspace_);
  if (step_workspace_.partials) cudaFree(step_workspace_.partials);
  if (sum_results_) cudaFree(sum_results_);
  if (scalars_) cudaFree(scalars_);
  for (RopeTable& t : rope_tables_) cudaFree(t.data);
  cudaStreamDestroy(stream_);
}

Tensor CudaBackend::zeros(const Shape& shape, DType dtype) {
  const size_t bytes = shape_nbytes(shape, dtype);
  void* data = nullptr;
  if (bytes > 0) {
    const cudaError_t status = cudaMalloc(&data, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      size_t free_bytes = 0, total_bytes = 0;
      cudaMemGetInfo(&free_bytes, &total_bytes);
      fail(fmt::format("CUDA out of memory: a {} {} tensor needs {:.1f} MiB but GPU {} has "
                       "{:.1f} MiB free of {:.1f} MiB; use a smaller --batch or --seq",
                       dtype_name(dtype), shape_str(shape), bytes / 1048576.0, device_,
                       free_bytes / 1048576.0, total_bytes / 1048576.0));
    }
    SF_CUDA_CHECK(status);
    SF_CUDA_CHECK(cudaMemsetAsync(data, 0, bytes, enqueue()));
  }
  auto buffer = std::make_shared<Buffer>(Device::cuda, data, bytes, [](void* p) {
    if (p) cudaFree(p);
  });
  return Tensor(std::move(buffer), dtype, shape);
}

void CudaBackend::copy(Tensor& dst, const Tensor& src) {
  const auto op_timer = profile("copy");
  SF_CHECK(dst.defined() && src.defined(), "copy: undefined tensor");
  SF_CHECK(dst.dtype() == src.dtype() && dst.shape() == src.shape(), "copy: {} into {}",
           src.describe(), dst.describe());
  SF_CHECK(dst.is_contiguous() && src.is_contiguous(), "copy: {} into {} needs contiguous tensors",
           src.describe(), dst.describe());
  if (src.nbytes() == 0) return;
  if (src.device() == Device::cpu && dst.device() == Device::cuda && !recorder_->capturing() &&
      src.nbytes() <= cuda::HostUploads::kStagingBytes)
    return uploads_.staged(dst.raw(), src.raw(), src.nbytes(), enqueue());
  SF_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), src.nbytes(), cudaMemcpyDefault, enqueue()));
  // A host destination must hold the data when copy() returns.
  if (dst.device() == Device::cpu) SF_CUDA_CHECK(cudaStreamSynchronize(enqueue()));
}

void CudaBackend::convert(Tensor& dst, const Tensor& src) {
  const auto op_timer = profile("convert");
  check(dst, "convert");
  check(src, "convert");
  SF_CHECK(dst.shape() == src.shape(), "convert: {} into {}", src.describe(), dst.describe());
  if (dst.dtype() == src.dtype()) return copy(dst, src);
  cuda::convert(dst.dtype(), dst.raw(), src.dtype(), src.raw(), src.numel(), enqueue());
}

void CudaBackend::fill(Tensor& x, double value) {
  const auto op_timer = profile("fill");
  check(x, "fill");
  cuda::fill(x.dtype(), x.raw(), x.numel(), static_cast<float>(value), enqueue());
}

void CudaBackend::scale(Tensor& x, double alpha) {
  const auto op_timer = profile("scale");
  check(x, "scale");
  cuda::scale(x.dtype(), x.raw(), x.numel(), static_cast<float>(alpha), enqueue());
}

void CudaBackend::axpy(Tensor& y, double alpha, const Tensor& x) {
  const auto op_timer = profile("axpy");
  check(y, "axpy");
  check(x, "axpy");
  same_shape(y, x, "axpy");
  cuda::axpy(y.dtype(), y.raw(), x.dtype(), x.raw(), x.numel(), static_cast<float>(alpha),
             enqueue());
}

double CudaBackend::dot(const Tensor& a, const Tensor& b) {
  const auto op_timer = profile("dot");
  check(a, "dot");
  check(b, "dot");
  same_shape(a, b, "dot");
  cuda::dot(a.dtype(), a.raw(), b.dtype(), b.raw(), a.numel(), scalars_, enqueue());
  return read_back(scalars_);
}

void CudaBackend::dot_into(Tensor& total, double alpha, const Tensor& a, const Tensor& b) {
  dot_to_device(total, alpha, a, b, /*accumulate=*/false);
}

void CudaBackend::dot_add(Tensor& total, double alpha, const Tensor& a, const Tensor& b) {
  dot_to_device(total, alpha, a, b, /*accumulate=*/true);
}

std::unique_ptr<HostReadback> CudaBackend::make_readback() {
  return std::make_unique<cuda::PinnedReadback>(enqueue());
}

double CudaBackend::sum_squares(const Tensor& x) {
  const auto op_timer = profile("sum_squares");
  check(x, "sum_squares");
  cuda::dot(x.dtype(), x.raw(), x.dtype(), nullptr, x.numel(), scalars_, enqueue());
  return read_back(scalars_);
}

double CudaBackend::sum_squares_total(const std::vector<Tensor>& tensors) {
  const auto op_timer = profile("sum_squares_total");
  double total = 0.0;
  std::vector<Tensor> f32;
  for (const Tensor& t : tensors) {
    check(t, "sum_squares_total");
    if (t.dtype() == DType::f32) f32.push_back(t);
    else total += sum_squares(t);  // anything but F32 one at a time
  }
  if (f32.empty()) return total;
  sum_squares_f32(f32, scalars_);
  return total + read_back(scalars_);
}

void CudaBackend::sum_squares_total_into(Tensor& total, const std::vector<Tensor>& tensors) {
  check_f64_scalar(total, "sum_squares_total_into");
  SF_CHECK(total.device() == Device::cuda, "sum_squares_total_into: {} is not on the GPU",
           total.describe());
  for (const Tensor& t : tensors) {
    check(t, "sum_squares_total_into");
    if (t.dtype() != DType::f32) return Backend::sum_squares_total_into(total, tensors);
  }
  const auto op_timer = profile("sum_squares_total");
  if (tensors.empty()) return fill_f64_zero(total);
  sum_squares_f32(tensors, static_cast<double*>(total.raw()));
}

std::optional<MemoryBandwidth> CudaBackend::measure_memory_bandwidth() {
  SF_CHECK(!recorder_->capturing(), "measure_memory_bandwidth: not while recording");
  return cuda::measure_device_bandwidth(enqueue());
}

void CudaBackend::begin_recording() {
  SF_CHECK(!recorder_->capturing(), "begin_recording: a recording is already open");
  allocate_step_workspace();  // attention_step may need it, and no allocation can be captured
  recorder_->begin();
}

cuda::ManyTable CudaBackend::upload_many(std::initializer_list<std::vector<uint64_t>> columns,
                                         const std::vector<uint64_t>& sizes,
                                         const std::vector<uint64_t>& extra) {
  return uploads_.many(columns, sizes, extra, enqueue(), recorder_->capturing(), [this] {
    recorder_->invalidate();  // recordings that use a dropped table are stale now
    SF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  });
}

// Sum of squares of F32 tensors into a device double (`total`), through per-tensor results
// in a buffer of the backend's own.
void CudaBackend::sum_squares_f32(const std::vector<Tensor>& tensors, double* total) {
  std::vector<uint64_t> pointers, sizes;
  for (const Tensor& t : tensors) {
    pointers.push_back(reinterpret_cast<uint64_t>(t.raw()));
    sizes.push_back(static_cast<uint64_t>(t.numel()));
  }
  const cuda::ManyTable table = upload_many({pointers}, sizes);
  auto* results = static_cast<double*>(
      grown(sum_results_, sum_results_bytes_, sizeof(double) * tensors.size()));
  cuda::sum_squares_many(table.column<const float>(0), table.layout, results, total, enqueue());
}

void CudaBackend::fill_f64_zero(Tensor& t) {
  SF_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), enqueue()));
}

void CudaBackend::check_matmul(const Tensor& out, const Tensor& a, bool ta, const Tensor& b,
                               bool tb) const {
  check(out, "matmul");
  check(a, "matmul");
  check(b, "matmul");
  SF_CHECK(a.ndim() == 2 && b.ndim() == 2 && out.ndim() == 2, "matmul: needs 2-D tensors, got {} {} {}",
           a.describe(), b.describe(), out.describe());
  const int64_t M = ta ? a.dim(1) : a.dim(0), K = ta ? a.dim(0) : a.dim(1);
  const int64_t Kb = tb ? b.dim(1) : b.dim(0), N = tb ? b.dim(0) : b.dim(1);
  SF_CHECK(K == Kb && out.dim(0) == M && out.dim(1) == N, "matmul: {}{} @ {}{} into {}",
           a.describe(), ta ? "^T" : "", b.describe(), tb ? "^T" : "", out.describe());
  SF_CHECK(a.dtype() == b.dtype() && (out.dtype() == a.dtype() || out.dtype() == DType::f32),
           "matmul: inputs {} and {} with output {} (inputs share a dtype; the output is that "
           "dtype or F32)", a.describe(), b.describe(), out.describe());
}

// A device scratch buffer that grows to `bytes` (never shrinks); its contents are not kept.
void* CudaBackend::grown(void*& buffer, size_t& capacity, size_t bytes) {
  if (bytes > capacity) {
    recorder_->invalidate();  // recordings that use the old buffer are stale now
    SF_CUDA_CHECK(cudaStreamSynchronize(enqueue()));  // queued work may still use the old one
    if (buffer) SF_CUDA_CHECK(cudaFree(buffer));
    buffer = nullptr;
    SF_CUDA_CHECK(cudaMalloc(&buffer, bytes));
    capacity = bytes;
  }
  return buffer;
}

void CudaBackend::dot_to_device(Tensor& total, double alpha, const Tensor& a, const Tensor& b,
                                bool accumulate) {
  const char* op = accumulate ? "dot_add" : "dot_into";
  const auto op_timer = profile(op);
  check_f64_scalar(total, op);
  SF_CHECK(total.device() == Device::cuda, "{}: {} is not on the GPU", op, total.describe());
  check(a, op);
  check(b, op);
  same_shape(a, b, op);
  cuda::dot(a.dtype(), a.raw(), b.dtype(), b.raw(), a.numel(), static_cast<double*>(total.raw()),
            enqueue(), alpha, accumulate);
}

}  // namespace cuda_detail

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: not an error to keep
    return 0;
  }
  return count;
}

bool cuda_device_available() { return cuda_device_count() > 0; }

std::unique_ptr<Backend> make_cuda_backend(int device) {
  const int count = cuda_device_count();
  SF_CHECK(count > 0, "--device cuda: no CUDA GPU is visible (cudaGetDeviceCount found none; "
                      "check the driver and CUDA_VISIBLE_DEVICES)");
  if (device < 0) {
    device = 0;
    if (const char* local_rank = std::getenv("LOCAL_RANK")) {
      char* end = nullptr;
      const long value = std::strtol(local_rank, &end, 10);
      SF_CHECK(end != local_rank && *end == '\0' && value >= 0,
               "LOCAL_RANK='{}' is not a GPU index", local_rank);
      device = static_cast<int>(value);
    }
  }
  SF_CHECK(device < count, "GPU {} requested but only {} CUDA device(s) are visible", device, count);
  return std::make_unique<cuda_detail::CudaBackend>(device);
}

cudaStream_t cuda_stream(Backend& backend) {
  auto* cuda = dynamic_cast<cuda_detail::CudaBackend*>(&backend);
  SF_CHECK(cuda != nullptr, "cuda_stream: the backend is not the CUDA backend");
  return cuda->stream();
}

std::string cuda_device_description(Backend& backend) {
  auto* cuda = dynamic_cast<cuda_detail::CudaBackend*>(&backend);
  SF_CHECK(cuda != nullptr, "cuda_device_description: the backend is not the CUDA backend");
  cudaDeviceProp prop{};
  SF_CUDA_CHECK(cudaGetDeviceProperties(&prop, cuda->index()));
  return fmt::format("{}, {} SMs, {:.1f} GiB", prop.name, prop.multiProcessorCount,
                     prop.totalGlobalMem / 1073741824.0);
}

}  // namespace sf
