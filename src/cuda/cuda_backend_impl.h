// cuda_backend_impl.h — the CudaBackend class behind make_cuda_backend (cuda_backend.h): its
// state, its argument checks and the declarations of its Backend operations. Private to the
// CUDA backend's sources: cuda_backend.cpp (construction, memory, copies, reductions,
// recording), cuda_backend_train.cpp (the training operations) and cuda_backend_decode.cpp
// (the incremental-decoding operations).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/error.h"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/host_uploads.h"
#include "cuda/kernels.h"
#include "cuda/matmul.h"
#include "cuda/op_profiler.h"
#include "cuda/stream_recorder.h"

namespace sf::cuda_detail {

inline bool is_float(DType d) { return d == DType::f32 || d == DType::bf16; }

using TensorList = std::initializer_list<const Tensor*>;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device);
  ~CudaBackend() override;

  Device device() const override { return Device::cuda; }
  cudaStream_t stream() const { return stream_; }
  int index() const { return device_; }

  // ---- memory, copies and reductions (cuda_backend.cpp) --------------------------------------
  Tensor zeros(const Shape& shape, DType dtype) override;
  void copy(Tensor& dst, const Tensor& src) override;
  void convert(Tensor& dst, const Tensor& src) override;
  void fill(Tensor& x, double value) override;
  void scale(Tensor& x, double alpha) override;
  void axpy(Tensor& y, double alpha, const Tensor& x) override;
  double dot(const Tensor& a, const Tensor& b) override;
  void dot_into(Tensor& total, double alpha, const Tensor& a, const Tensor& b) override;
  void dot_add(Tensor& total, double alpha, const Tensor& a, const Tensor& b) override;
  std::unique_ptr<HostReadback> make_readback() override;
  double sum_squares(const Tensor& x) override;
  double sum_squares_total(const std::vector<Tensor>& tensors) override;
  void sum_squares_total_into(Tensor& total, const std::vector<Tensor>& tensors) override;
  void synchronize() override { SF_CUDA_CHECK(cudaStreamSynchronize(enqueue())); }
  std::optional<MemoryBandwidth> measure_memory_bandwidth() override;

  // ---- recording: CUDA graphs captured from the stream ---------------------------------------
  // (The per-operation profiler times each call with events: no recordings then.)
  bool can_record() const override { return !profiler_; }
  void begin_recording() override;
  int end_recording() override { return recorder_->end(); }
  void abort_recording() override { recorder_->abort(); }
  bool replay(int id) override { return recorder_->replay(id); }
  void release_recording(int id) override { recorder_->release(id); }

  // ---- training operations (cuda_backend_train.cpp) -----------------------------------------
  void matmul(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb, double alpha,
              double beta) override;

  // A decode-sized product (x @ W^T of at most kMaxSmallRows rows, one dtype, alpha 1, beta 0
  // or 1): the small-row kernel reads W once with wide loads, where cuBLASLt's tiles are
  // mostly empty.
  static bool small_product(const Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                            double alpha, double beta) {
    return !ta && tb && out.dim(0) <= cuda::kMaxSmallRows && alpha == 1.0 &&
           (beta == 0.0 || beta == 1.0) && a.dtype() == out.dtype() && b.dtype() == out.dtype();
  }

  void matmul_batched(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                      double alpha, double beta) override;
  void matmul_add(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                  const Tensor& addend) override;
  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) override;
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) override;
  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                       double eps) override;
  void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                        const Tensor& weight, const Tensor& rstd) override;
  void rope_forward(Tensor& x, double theta, int64_t offset) override;
  void rope_backward(Tensor& dx, double theta, int64_t offset) override;
  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, AttentionMask mask) override;
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                          const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                          const Tensor& v, AttentionMask mask) override;
  void attention_backward_rope(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                               const Tensor& out, const Tensor& lse, const Tensor& q,
                               const Tensor& k, const Tensor& v, AttentionMask mask, bool rope_q,
                               bool rope_k, double theta) override;
  void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) override;
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up) override;
  int64_t cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                const Tensor& targets) override;
  void cross_entropy_forward_backward(Tensor& losses, Tensor& dlogits, const Tensor& logits,
                                      const Tensor& targets) override;
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                              double scale) override;
  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& s) override;

  // ---- many tensors in one launch (tables of pointers and sizes uploaded per call) ----------
  void fill_many(const std::vector<Tensor>& tensors, double value) override;
  void convert_many(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) override;
  // AdamW and the refresh of the working copies (where given) in one pass: see AdamWTensors.
  void adamw_update_many(const std::vector<AdamWTensors>& params, const AdamWStep& s) override;

  // ---- incremental decoding (cuda_backend_decode.cpp) ----------------------------------------
  void linear_many(const std::vector<LinearTask>& tasks) override;
  void rope_at(Tensor& x, const Tensor& positions, double theta) override;
  void kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) override;
  void kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                            int64_t first_position) override;
  void attention_step(Tensor& out, Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache,
                      Tensor& v_cache, const AttentionStepRows& rows, bool rope_q, bool rope_k,
                      double theta) override;
  void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, const Tensor& key_begin,
                        const Tensor& key_end) override;

 private:
  // cuda_backend_train.cpp
  static void check_adamw_step(const AdamWStep& s);
  static cuda::AdamWArgs adamw_args(const AdamWStep& s);
  void rope(Tensor& x, double theta, int64_t offset, bool inverse);
  const float* rope_table(double theta, int64_t head_dim, int64_t positions);
  cuda::AttentionDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const char* op) const;

  // cuda_backend_decode.cpp
  void allocate_step_workspace();

  // cuda_backend.cpp
  cuda::ManyTable upload_many(std::initializer_list<std::vector<uint64_t>> columns,
                              const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& extra = {});
  void sum_squares_f32(const std::vector<Tensor>& tensors, double* total);
  void fill_f64_zero(Tensor& t);
  void check_matmul(const Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb) const;
  void* grown(void*& buffer, size_t& capacity, size_t bytes);
  void dot_to_device(Tensor& total, double alpha, const Tensor& a, const Tensor& b,
                     bool accumulate);

  // ---- argument checks -----------------------------------------------------------------------
  void check(const Tensor& t, const char* op) const {
    check_float_on_gpu(t, op);
    SF_CHECK(t.is_contiguous(), "{}: tensor {} must be contiguous", op, t.describe());
  }
  void check_float_on_gpu(const Tensor& t, const char* op) const {
    SF_CHECK(t.defined(), "{}: undefined tensor", op);
    SF_CHECK(t.device() == Device::cuda, "{}: tensor {} is not on the GPU", op, t.describe());
    SF_CHECK(is_float(t.dtype()), "{}: tensor {} must be F32 or BF16 on the CUDA backend", op,
             t.describe());
  }
  // An output that may be row-strided (backend.h): returns the elements from one row of its
  // last `width_dims` dimensions to the next.
  int64_t check_rows(const Tensor& t, int width_dims, const char* op) const {
    check_float_on_gpu(t, op);
    const int64_t stride = t.ndim() >= width_dims ? t.row_stride(width_dims) : -1;
    SF_CHECK(stride >= 0, "{}: tensor {} is neither contiguous nor row-strided", op, t.describe());
    return stride;
  }
  void check_f32(const Tensor& t, const char* op) const {
    check(t, op);
    SF_CHECK(t.dtype() == DType::f32, "{}: tensor {} must be F32", op, t.describe());
  }
  void check_tokens(const Tensor& t, const char* op) const {
    SF_CHECK(t.defined() && t.device() == Device::cuda && t.dtype() == DType::i32 && t.is_contiguous(),
             "{}: expected a contiguous I32 tensor on the GPU, got {}", op,
             t.defined() ? t.describe() : std::string("undefined"));
  }
  static const int32_t* tokens_ptr(const Tensor& t) { return static_cast<const int32_t*>(t.raw()); }
  static void same_shape(const Tensor& a, const Tensor& b, const char* op) {
    SF_CHECK(a.shape() == b.shape(), "{}: shapes differ: {} vs {}", op, a.describe(), b.describe());
  }
  static void same_dtype(TensorList tensors, const char* op) {
    for (const Tensor* t : tensors)
      SF_CHECK(t->dtype() == (*tensors.begin())->dtype(), "{}: {} next to {}", op, t->describe(),
               (*tensors.begin())->describe());
  }

  // One value computed on the device, read back (waits for the stream).
  template <class T> T read_back(const T* device_value) {
    T host{};
    SF_CUDA_CHECK(cudaMemcpyAsync(&host, device_value, sizeof host, cudaMemcpyDeviceToHost, enqueue()));
    SF_CUDA_CHECK(cudaStreamSynchronize(enqueue()));
    return host;
  }

  cuda::OpProfiler::Scope profile(std::string name) {
    return cuda::OpProfiler::Scope(profiler_.get(), profiler_ ? std::move(name) : std::string());
  }

  int device_;
  cudaStream_t stream_ = nullptr;
  // Recordings of the stream (CUDA graphs). While one is open, the decode kernels' launches
  // gather into a persistent program; every other operation enqueues through enqueue(), which
  // launches it first.
  std::unique_ptr<cuda::StreamRecorder> recorder_;
  void flush_program() { recorder_->flush_program(); }
  cudaStream_t enqueue() {
    flush_program();
    return stream_;
  }
  std::unique_ptr<cuda::OpProfiler> profiler_;  // SF_CUDA_PROFILE=1 only
  std::unique_ptr<cuda::Matmul> matmul_;
  double* scalars_ = nullptr;     // small device results (dot, counts)
  void* workspace_ = nullptr;     // attention backward scratch, grown on demand
  // 8 MiB. Splits of 256 keys: a 2048-position cache at batch 1 takes 8 (270 K floats for 32
  // heads of 128 dimensions); at batch 32 the same heads get 15 splits, and fewer splits of
  // longer chunks beyond that.
  static constexpr int64_t kStepPartialFloats = int64_t{2} << 20;
  static constexpr int64_t kStepCounters = int64_t{1} << 16;  // rows x query heads
  cuda::AttentionStepWorkspace step_workspace_;
  size_t workspace_bytes_ = 0;
  void* sum_results_ = nullptr;   // sum_squares_many's per-tensor sums
  size_t sum_results_bytes_ = 0;
  cuda::HostUploads uploads_;  // staged uploads and multi-tensor tables
  struct RopeTable {
    double theta;
    int64_t head_dim;
    int64_t positions = 0;
    void* data = nullptr;
    size_t bytes = 0;
  };
  std::vector<RopeTable> rope_tables_;
};

}  // namespace sf::cuda_detail
