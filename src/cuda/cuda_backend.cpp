// cuda_backend.cpp — CudaBackend: argument checks, memory, copies and the dispatch of every
// Backend operation to cuBLASLt and the kernels (see cuda_backend.h).
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "core/error.h"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_check.h"
#include "cuda/host_uploads.h"
#include "cuda/kernels.h"
#include "cuda/matmul.h"
#include "cuda/op_profiler.h"
#include "cuda/pinned_readback.h"
#include "cuda/step_program.h"
#include "cuda/stream_recorder.h"

namespace sf {

namespace {

bool is_float(DType d) { return d == DType::f32 || d == DType::bf16; }

using TensorList = std::initializer_list<const Tensor*>;

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {
    SF_CUDA_CHECK(cudaSetDevice(device));
    SF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SF_CUDA_CHECK(cudaMalloc(&scalars_, 64 * sizeof(double)));
    matmul_ = std::make_unique<cuda::Matmul>(stream_);
    recorder_ = std::make_unique<cuda::StreamRecorder>(stream_);
    if (const char* flag = std::getenv("SF_CUDA_PROFILE"); flag && std::string(flag) == "1")
      profiler_ = std::make_unique<cuda::OpProfiler>(stream_);
  }
  ~CudaBackend() override {
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

  Device device() const override { return Device::cuda; }
  cudaStream_t stream() const { return stream_; }
  int index() const { return device_; }

  Tensor zeros(const Shape& shape, DType dtype) override {
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

  void copy(Tensor& dst, const Tensor& src) override {
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

  void convert(Tensor& dst, const Tensor& src) override {
    const auto op_timer = profile("convert");
    check(dst, "convert");
    check(src, "convert");
    SF_CHECK(dst.shape() == src.shape(), "convert: {} into {}", src.describe(), dst.describe());
    if (dst.dtype() == src.dtype()) return copy(dst, src);
    cuda::convert(dst.dtype(), dst.raw(), src.dtype(), src.raw(), src.numel(), enqueue());
  }

  void fill(Tensor& x, double value) override {
    const auto op_timer = profile("fill");
    check(x, "fill");
    cuda::fill(x.dtype(), x.raw(), x.numel(), static_cast<float>(value), enqueue());
  }
  void scale(Tensor& x, double alpha) override {
    const auto op_timer = profile("scale");
    check(x, "scale");
    cuda::scale(x.dtype(), x.raw(), x.numel(), static_cast<float>(alpha), enqueue());
  }
  void axpy(Tensor& y, double alpha, const Tensor& x) override {
    const auto op_timer = profile("axpy");
    check(y, "axpy");
    check(x, "axpy");
    same_shape(y, x, "axpy");
    cuda::axpy(y.dtype(), y.raw(), x.dtype(), x.raw(), x.numel(), static_cast<float>(alpha),
               enqueue());
  }
  double dot(const Tensor& a, const Tensor& b) override {
    const auto op_timer = profile("dot");
    check(a, "dot");
    check(b, "dot");
    same_shape(a, b, "dot");
    cuda::dot(a.dtype(), a.raw(), b.dtype(), b.raw(), a.numel(), scalars_, enqueue());
    return read_back(scalars_);
  }
  void dot_into(Tensor& total, double alpha, const Tensor& a, const Tensor& b) override {
    dot_to_device(total, alpha, a, b, /*accumulate=*/false);
  }
  void dot_add(Tensor& total, double alpha, const Tensor& a, const Tensor& b) override {
    dot_to_device(total, alpha, a, b, /*accumulate=*/true);
  }
  std::unique_ptr<HostReadback> make_readback() override {
    return std::make_unique<cuda::PinnedReadback>(enqueue());
  }
  double sum_squares(const Tensor& x) override {
    const auto op_timer = profile("sum_squares");
    check(x, "sum_squares");
    cuda::dot(x.dtype(), x.raw(), x.dtype(), nullptr, x.numel(), scalars_, enqueue());
    return read_back(scalars_);
  }
  double sum_squares_total(const std::vector<Tensor>& tensors) override {
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
  void sum_squares_total_into(Tensor& total, const std::vector<Tensor>& tensors) override {
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
  void synchronize() override { SF_CUDA_CHECK(cudaStreamSynchronize(enqueue())); }
  std::optional<MemoryBandwidth> measure_memory_bandwidth() override {
    SF_CHECK(!recorder_->capturing(), "measure_memory_bandwidth: not while recording");
    return cuda::measure_device_bandwidth(enqueue());
  }

  // ---- recording: CUDA graphs captured from the stream ---------------------------------------
  // (The per-operation profiler times each call with events: no recordings then.)
  bool can_record() const override { return !profiler_; }
  void begin_recording() override {
    SF_CHECK(!recorder_->capturing(), "begin_recording: a recording is already open");
    allocate_step_workspace();  // attention_step may need it, and no allocation can be captured
    recorder_->begin();
  }
  int end_recording() override { return recorder_->end(); }
  void abort_recording() override { recorder_->abort(); }
  bool replay(int id) override { return recorder_->replay(id); }
  void release_recording(int id) override { recorder_->release(id); }

  void matmul(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb, double alpha,
              double beta) override {
    check_matmul(out, a, ta, b, tb);
    const int64_t M = out.dim(0), N = out.dim(1), K = ta ? a.dim(0) : a.dim(1);
    const auto op_timer = profile(profiler_ ? fmt::format("matmul {}x{}x{} {}{} {}", M, N, K,
                                                          ta ? "T" : "N", tb ? "T" : "N",
                                                          dtype_name(out.dtype()))
                                            : std::string());
    if (K == 0) {  // an empty sum: out = beta * out
      if (beta == 0.0) fill(out, 0.0);
      else scale(out, beta);
      return;
    }
    if (small_product(out, a, ta, b, tb, alpha, beta)) {
      const cuda::SmallProduct p{out.raw(), a.raw(), b.raw(), beta == 1.0 ? out.raw() : nullptr,
                                 M, N, K};
      return cuda::linear_small_many(out.dtype(), &p, 1, stream_, &recorder_->program());
    }
    flush_program();
    matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), M, N, K,
                 static_cast<float>(alpha), static_cast<float>(beta));
  }

  // A decode-sized product (x @ W^T of at most kMaxSmallRows rows, one dtype, alpha 1, beta 0
  // or 1): the small-row kernel reads W once with wide loads, where cuBLASLt's tiles are
  // mostly empty.
  static bool small_product(const Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                            double alpha, double beta) {
    return !ta && tb && out.dim(0) <= cuda::kMaxSmallRows && alpha == 1.0 &&
           (beta == 0.0 || beta == 1.0) && a.dtype() == out.dtype() && b.dtype() == out.dtype();
  }

  void linear_many(const std::vector<LinearTask>& tasks) override {
    if (tasks.empty()) return;
    bool small = true;
    for (const LinearTask& t : tasks) {
      check_matmul(t.out, t.x, false, t.w, true);
      small = small && small_product(t.out, t.x, false, t.w, true, 1.0, t.accumulate ? 1.0 : 0.0) &&
              t.out.dtype() == tasks[0].out.dtype();
      if (t.norm.weight.defined()) {
        check(t.norm.weight, "linear_many");
        SF_CHECK(t.norm.weight.numel() == t.x.dim(1), "linear_many: norm {} for rows {}",
                 t.norm.weight.describe(), t.x.describe());
        small = small && t.norm.weight.dtype() == t.x.dtype();
      }
      if (t.gate.gate.defined()) {
        check(t.gate.gate, "linear_many");
        SF_CHECK(t.gate.gate.shape() == t.x.shape() && !t.norm.weight.defined(),
                 "linear_many: gate {} for rows {} (and not with a norm)", t.gate.gate.describe(),
                 t.x.describe());
        small = small && t.gate.gate.dtype() == t.x.dtype();
      }
    }
    if (!small) return Backend::linear_many(tasks);  // norms and gates, then cuBLASLt one by one
    const auto op_timer = profile("linear_many");
    std::vector<cuda::SmallProduct> products;
    for (const LinearTask& t : tasks)
      products.push_back({t.out.raw(), t.x.raw(), t.w.raw(), t.accumulate ? t.out.raw() : nullptr,
                          t.out.dim(0), t.out.dim(1), t.x.dim(1),
                          t.norm.weight.defined() ? t.norm.weight.raw() : nullptr,
                          static_cast<float>(t.norm.eps),
                          t.gate.gate.defined() ? t.gate.gate.raw() : nullptr, false});
    cuda::linear_small_many(tasks[0].out.dtype(), products.data(),
                            static_cast<int>(products.size()), stream_, &recorder_->program());
  }

  void matmul_batched(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                      double alpha, double beta) override {
    check_batched_operands(out, a, b);
    const Tensor a0 = a.ndim() == 3 ? a.select(0) : a, b0 = b.ndim() == 3 ? b.select(0) : b;
    check(out, "matmul_batched");
    check(a, "matmul_batched");
    check(b, "matmul_batched");
    check_matmul(out.select(0), a0, ta, b0, tb);
    const int64_t G = out.dim(0), M = out.dim(1), N = out.dim(2), K = ta ? a0.dim(0) : a0.dim(1);
    if (K == 0 || G <= 1) return Backend::matmul_batched(out, a, ta, b, tb, alpha, beta);
    if (small_product(out.select(0), a0, ta, b0, tb, alpha, beta)) {
      std::vector<cuda::SmallProduct> products;
      for (int64_t g = 0; g < G; ++g) {
        Tensor out_g = out.select(g);
        products.push_back({out_g.raw(), (a.ndim() == 3 ? a.select(g) : a).raw(),
                            (b.ndim() == 3 ? b.select(g) : b).raw(),
                            beta == 1.0 ? out_g.raw() : nullptr, M, N, K});
      }
      return cuda::linear_small_many(out.dtype(), products.data(), static_cast<int>(G), stream_, &recorder_->program());
    }
    const auto op_timer = profile(profiler_ ? fmt::format("matmul {}x{}x{}x{} {}{} {}", G, M, N,
                                                          K, ta ? "T" : "N", tb ? "T" : "N",
                                                          dtype_name(out.dtype()))
                                            : std::string());
    flush_program();
    matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), M, N, K,
                 static_cast<float>(alpha), static_cast<float>(beta), nullptr,
                 cuda::Matmul::Batch{G, a.ndim() == 3 ? a0.numel() : 0,
                                     b.ndim() == 3 ? b0.numel() : 0});
  }

  void matmul_add(Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb,
                  const Tensor& addend) override {
    check(addend, "matmul_add");
    SF_CHECK(addend.shape() == out.shape() && addend.dtype() == out.dtype(),
             "matmul_add: addend {} for out {}", addend.describe(), out.describe());
    if ((ta ? a.dim(0) : a.dim(1)) == 0 || addend.raw() == out.raw()) {  // degenerate or in place
      if (addend.raw() != out.raw()) copy(out, addend);
      return matmul(out, a, ta, b, tb, 1.0, 1.0);
    }
    const auto op_timer = profile("matmul_add");
    check_matmul(out, a, ta, b, tb);
    if (small_product(out, a, ta, b, tb, 1.0, 0.0)) {
      const cuda::SmallProduct p{out.raw(), a.raw(), b.raw(), addend.raw(), out.dim(0),
                                 out.dim(1), a.dim(1)};
      return cuda::linear_small_many(out.dtype(), &p, 1, stream_, &recorder_->program());
    }
    flush_program();
    matmul_->run(out.raw(), out.dtype(), a.raw(), ta, b.raw(), tb, a.dtype(), out.dim(0),
                 out.dim(1), ta ? a.dim(0) : a.dim(1), 1.0f, 1.0f, addend.raw());
  }

  void embedding_forward(Tensor& out, const Tensor& tokens, const Tensor& table) override {
    const auto op_timer = profile("embedding_forward");
    check(out, "embedding_forward");
    check(table, "embedding_forward");
    check_tokens(tokens, "embedding_forward");
    SF_CHECK(out.dtype() == table.dtype() && table.ndim() == 2 && out.dim(-1) == table.dim(1) &&
                 out.numel() == tokens.numel() * table.dim(1),
             "embedding_forward: tokens {} table {} out {}", tokens.describe(), table.describe(),
             out.describe());
    cuda::embedding_forward(out.dtype(), out.raw(), tokens_ptr(tokens), table.raw(),
                            tokens.numel(), table.dim(1), enqueue());
  }
  void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& tokens) override {
    const auto op_timer = profile("embedding_backward");
    check(dtable, "embedding_backward");
    check(dout, "embedding_backward");
    check_tokens(tokens, "embedding_backward");
    SF_CHECK(dtable.dtype() == DType::f32, "embedding_backward: the table gradient must be F32, got {}",
             dtable.describe());
    SF_CHECK(dtable.ndim() == 2 && dout.numel() == tokens.numel() * dtable.dim(1),
             "embedding_backward: dtable {} dout {} tokens {}", dtable.describe(), dout.describe(),
             tokens.describe());
    cuda::embedding_backward(static_cast<float*>(dtable.raw()), dout.dtype(), dout.raw(),
                             tokens_ptr(tokens), tokens.numel(), dtable.dim(1), enqueue());
  }

  void rmsnorm_forward(Tensor& out, Tensor& rstd, const Tensor& x, const Tensor& weight,
                       double eps) override {
    const auto op_timer = profile("rmsnorm_forward");
    check(out, "rmsnorm_forward");
    check(x, "rmsnorm_forward");
    check(weight, "rmsnorm_forward");
    check_f32(rstd, "rmsnorm_forward rstd");
    same_shape(out, x, "rmsnorm_forward");
    const int64_t D = x.dim(-1), rows = x.numel() / std::max<int64_t>(D, 1);
    SF_CHECK(out.dtype() == x.dtype() && weight.numel() == D && rstd.numel() == rows,
             "rmsnorm_forward: x {} weight {} rstd {} out {}", x.describe(), weight.describe(),
             rstd.describe(), out.describe());
    cuda::rmsnorm_forward(x.dtype(), out.raw(), static_cast<float*>(rstd.raw()), x.raw(),
                          weight.dtype(), weight.raw(), rows, D, static_cast<float>(eps), enqueue());
  }
  void rmsnorm_backward(Tensor& dx, Tensor& dweight, const Tensor& dout, const Tensor& x,
                        const Tensor& weight, const Tensor& rstd) override {
    const auto op_timer = profile("rmsnorm_backward");
    for (const Tensor* t : TensorList{&dx, &dout, &x, &weight}) check(*t, "rmsnorm_backward");
    check_f32(dweight, "rmsnorm_backward dweight");
    check_f32(rstd, "rmsnorm_backward rstd");
    same_shape(dx, x, "rmsnorm_backward");
    same_shape(dout, x, "rmsnorm_backward");
    const int64_t D = x.dim(-1), rows = x.numel() / std::max<int64_t>(D, 1);
    SF_CHECK(dx.dtype() == x.dtype() && dout.dtype() == x.dtype() && weight.numel() == D &&
                 dweight.numel() == D && rstd.numel() == rows,
             "rmsnorm_backward: x {} dx {} dout {} weight {} dweight {} rstd {}", x.describe(),
             dx.describe(), dout.describe(), weight.describe(), dweight.describe(), rstd.describe());
    cuda::rmsnorm_backward(x.dtype(), dx.raw(), static_cast<float*>(dweight.raw()), dout.raw(),
                           x.raw(), weight.dtype(), weight.raw(),
                           static_cast<const float*>(rstd.raw()), rows, D, enqueue());
  }

  void rope_forward(Tensor& x, double theta, int64_t offset) override { rope(x, theta, offset, false); }
  void rope_backward(Tensor& dx, double theta, int64_t offset) override { rope(dx, theta, offset, true); }

  void attention_forward(Tensor& out, Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, AttentionMask mask) override {
    const auto op_timer = profile("attention_forward");
    const cuda::AttentionDims d = attention_dims(q, k, v, "attention_forward");
    check(out, "attention_forward");
    check_f32(lse, "attention_forward lse");
    same_shape(out, q, "attention_forward");
    SF_CHECK(out.dtype() == q.dtype() && lse.numel() == d.batch * d.q_heads * d.q_len,
             "attention_forward: out {} lse {} for q {}", out.describe(), lse.describe(), q.describe());
    cuda::attention_forward(q.dtype(), d, mask.shift, mask.window, q.raw(), k.raw(), v.raw(),
                            out.raw(), static_cast<float*>(lse.raw()), enqueue());
  }
  void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                          const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                          const Tensor& v, AttentionMask mask) override {
    attention_backward_rope(dq, dk, dv, dout, out, lse, q, k, v, mask, false, false, 0.0);
  }
  void attention_backward_rope(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout,
                               const Tensor& out, const Tensor& lse, const Tensor& q,
                               const Tensor& k, const Tensor& v, AttentionMask mask, bool rope_q,
                               bool rope_k, double theta) override {
    const auto op_timer = profile("attention_backward");
    const cuda::AttentionDims d = attention_dims(q, k, v, "attention_backward");
    for (const Tensor* t : TensorList{&dout, &out}) check(*t, "attention_backward");
    const cuda::AttentionGradStrides strides{check_rows(dq, 2, "attention_backward dq"),
                                             check_rows(dk, 2, "attention_backward dk"),
                                             check_rows(dv, 2, "attention_backward dv")};
    check_f32(lse, "attention_backward lse");
    same_shape(dq, q, "attention_backward dq");
    same_shape(dk, k, "attention_backward dk");
    same_shape(dv, v, "attention_backward dv");
    same_shape(dout, q, "attention_backward dout");
    same_shape(out, q, "attention_backward out");
    for (const Tensor* t : TensorList{&dq, &dk, &dv, &dout, &out})
      SF_CHECK(t->dtype() == q.dtype(), "attention_backward: {} next to q {}", t->describe(),
               q.describe());
    const size_t bytes = cuda::attention_backward_workspace_bytes(q.dtype(), d);
    SF_CHECK(d.head_dim % 2 == 0 || !(rope_q || rope_k),
             "attention_backward_rope: RoPE needs an even head_dim, got {}", d.head_dim);
    // One table for both (asking twice could grow it and free the first pointer); it is built
    // before the workspace, as building may wait for the stream.
    cuda::AttentionRopeUndo rope;
    if (rope_q || rope_k) {
      const float* table = rope_table(theta, d.head_dim, std::max(d.q_len, d.kv_len));
      rope.q_table = rope_q ? table : nullptr;
      rope.k_table = rope_k ? table : nullptr;
    }
    void* workspace = grown(workspace_, workspace_bytes_, bytes);
    cuda::attention_backward(q.dtype(), d, mask.shift, mask.window, dout.raw(), out.raw(),
                             static_cast<const float*>(lse.raw()), q.raw(), k.raw(), v.raw(),
                             dq.raw(), dk.raw(), dv.raw(), workspace, enqueue(), rope, strides);
  }

  void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) override {
    const auto op_timer = profile("swiglu_forward");
    for (const Tensor* t : TensorList{&out, &gate, &up}) check(*t, "swiglu_forward");
    same_shape(out, gate, "swiglu_forward");
    same_shape(up, gate, "swiglu_forward");
    same_dtype({&out, &gate, &up}, "swiglu_forward");
    cuda::swiglu_forward(out.dtype(), out.raw(), gate.raw(), up.raw(), out.numel(), enqueue());
  }
  void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate,
                       const Tensor& up) override {
    const auto op_timer = profile("swiglu_backward");
    for (const Tensor* t : TensorList{&dout, &gate, &up}) check(*t, "swiglu_backward");
    // dgate and dup may be the two halves of one [rows, 2F] matrix: one row stride for both.
    const int64_t stride = check_rows(dgate, 1, "swiglu_backward dgate");
    SF_CHECK(check_rows(dup, 1, "swiglu_backward dup") == stride,
             "swiglu_backward: dgate and dup rows are {} and {} elements apart", stride,
             dup.row_stride(1));
    for (const Tensor* t : TensorList{&dgate, &dup, &dout, &up}) same_shape(*t, gate, "swiglu_backward");
    same_dtype({&dgate, &dup, &dout, &gate, &up}, "swiglu_backward");
    const int64_t cols = gate.ndim() == 0 ? 1 : gate.dim(-1);
    cuda::swiglu_backward(gate.dtype(), dgate.raw(), dup.raw(), dout.raw(), gate.raw(), up.raw(),
                          cols == 0 ? 0 : gate.numel() / cols, cols, enqueue(), stride);
  }

  int64_t cross_entropy_forward(Tensor& losses, const Tensor& logits,
                                const Tensor& targets) override {
    const auto op_timer = profile("cross_entropy_forward");
    check(logits, "cross_entropy_forward");
    check_f32(losses, "cross_entropy_forward losses");
    check_tokens(targets, "cross_entropy_forward");
    const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
    SF_CHECK(targets.numel() == rows && losses.numel() == rows,
             "cross_entropy_forward: logits {} targets {} losses {}", logits.describe(),
             targets.describe(), losses.describe());
    auto* counted = reinterpret_cast<int64_t*>(scalars_);
    cuda::cross_entropy_forward(logits.dtype(), static_cast<float*>(losses.raw()), counted,
                                logits.raw(), tokens_ptr(targets), rows, V, enqueue());
    return read_back(counted);
  }
  void cross_entropy_forward_backward(Tensor& losses, Tensor& dlogits, const Tensor& logits,
                                      const Tensor& targets) override {
    const auto op_timer = profile("cross_entropy_forward_backward");
    check(logits, "cross_entropy_forward_backward");
    check(dlogits, "cross_entropy_forward_backward");
    check_f32(losses, "cross_entropy_forward_backward losses");
    check_tokens(targets, "cross_entropy_forward_backward");
    same_shape(dlogits, logits, "cross_entropy_forward_backward");
    const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
    SF_CHECK(dlogits.dtype() == logits.dtype() && targets.numel() == rows && losses.numel() == rows,
             "cross_entropy_forward_backward: logits {} dlogits {} targets {} losses {}",
             logits.describe(), dlogits.describe(), targets.describe(), losses.describe());
    cuda::cross_entropy_forward_backward(logits.dtype(), static_cast<float*>(losses.raw()),
                                         dlogits.raw(), logits.raw(), tokens_ptr(targets), rows, V,
                                         enqueue());
  }
  void cross_entropy_backward(Tensor& dlogits, const Tensor& logits, const Tensor& targets,
                              double scale) override {
    const auto op_timer = profile("cross_entropy_backward");
    check(dlogits, "cross_entropy_backward");
    check(logits, "cross_entropy_backward");
    check_tokens(targets, "cross_entropy_backward");
    same_shape(dlogits, logits, "cross_entropy_backward");
    SF_CHECK(dlogits.dtype() == logits.dtype(), "cross_entropy_backward: dlogits {} logits {}",
             dlogits.describe(), logits.describe());
    const int64_t V = logits.dim(-1), rows = logits.numel() / std::max<int64_t>(V, 1);
    SF_CHECK(targets.numel() == rows, "cross_entropy_backward: logits {} targets {}",
             logits.describe(), targets.describe());
    cuda::cross_entropy_backward(logits.dtype(), dlogits.raw(), logits.raw(), tokens_ptr(targets),
                                 rows, V, static_cast<float>(scale), enqueue());
  }

  void rope_at(Tensor& x, const Tensor& positions, double theta) override {
    const auto op_timer = profile("rope_at");
    check(x, "rope_at");
    check_tokens(positions, "rope_at");
    SF_CHECK(x.ndim() == 3 && positions.numel() == x.dim(0) && x.dim(2) % 2 == 0,
             "rope_at: x {} positions {}", x.describe(), positions.describe());
    cuda::rope_at(x.dtype(), x.raw(), tokens_ptr(positions), x.dim(0), x.dim(1), x.dim(2), theta,
                  enqueue());
  }
  void kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) override {
    const auto op_timer = profile("kv_cache_write");
    check(cache, "kv_cache_write");
    check(rows, "kv_cache_write");
    check_tokens(slots, "kv_cache_write");
    const int64_t B = cache.dim(0), C = cache.dim(1), W = cache.numel() / std::max<int64_t>(B * C, 1);
    SF_CHECK(cache.dtype() == rows.dtype() && rows.numel() == B * W && slots.numel() == B,
             "kv_cache_write: cache {} rows {} slots {}", cache.describe(), rows.describe(),
             slots.describe());
    cuda::kv_cache_write(cache.dtype(), cache.raw(), rows.raw(), tokens_ptr(slots), B, C, W, enqueue());
  }
  void kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                            int64_t first_position) override {
    const auto op_timer = profile("kv_cache_write_range");
    check(cache, "kv_cache_write_range");
    check(rows, "kv_cache_write_range");
    const int64_t W = check_kv_cache_write_range(cache, rows, sequence, first_position);
    cuda::kv_cache_write_range(cache.dtype(), cache.raw(), rows.raw(), sequence, first_position,
                               rows.dim(0), cache.dim(1), W, enqueue());
  }
  void attention_step(Tensor& out, Tensor& q, Tensor& k, const Tensor& v, Tensor& k_cache,
                      Tensor& v_cache, const AttentionStepRows& rows, bool rope_q, bool rope_k,
                      double theta) override {
    const auto op_timer = profile("attention_step");
    for (const Tensor* t : TensorList{&out, &q, &k, &v, &k_cache, &v_cache}) check(*t, "attention_step");
    for (const Tensor* t : {&rows.position, &rows.key_position, &rows.slot, &rows.key_begin, &rows.key_end})
      check_tokens(*t, "attention_step");
    same_dtype({&out, &q, &k, &v, &k_cache, &v_cache}, "attention_step");
    const int64_t N = q.dim(0);
    SF_CHECK(q.ndim() == 3 && k.ndim() == 3 && k_cache.ndim() == 4 && out.shape() == q.shape() &&
                 v.shape() == k.shape() && k_cache.shape() == v_cache.shape() && k.dim(0) == N &&
                 (rows.block_rows == 0 ? k_cache.dim(0) == N
                                       : rows.block_rows <= rows.cache_block_rows &&
                                             k_cache.dim(0) >= rows.cache_rows_used(N)) &&
                 k.dim(1) == k_cache.dim(2) && k.dim(2) == q.dim(2) &&
                 k_cache.dim(3) == q.dim(2) && q.dim(1) % k.dim(1) == 0 && q.dim(2) % 2 == 0 &&
                 rows.position.numel() == N && rows.key_position.numel() == N &&
                 rows.slot.numel() == N && rows.key_begin.numel() == N && rows.key_end.numel() == N,
             "attention_step: q {} k {} v {} k_cache {} out {}", q.describe(), k.describe(),
             v.describe(), k_cache.describe(), out.describe());
    const int64_t max_head_dim = cuda::attention_step_max_head_dim(q.dtype(), q.dim(2));
    SF_CHECK(q.dim(2) <= max_head_dim,
             "attention_step: head_dim {} is above the {} the decode kernel holds for {}", q.dim(2),
             max_head_dim, dtype_name(q.dtype()));
    if (!recorder_->capturing()) allocate_step_workspace();  // (a recording allocated it before capturing)
    cuda::attention_step(q.dtype(), out.raw(), q.raw(), k.raw(), v.raw(), k_cache.raw(),
                         v_cache.raw(), tokens_ptr(rows.position), tokens_ptr(rows.key_position),
                         tokens_ptr(rows.slot), tokens_ptr(rows.key_begin),
                         tokens_ptr(rows.key_end), N, rows.block_rows, rows.cache_block_rows,
                         k_cache.dim(1), q.dim(1), k.dim(1), q.dim(2),
                         theta, rope_q, rope_k, step_workspace_, stream_, &recorder_->program());
  }
  void attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, const Tensor& key_begin,
                        const Tensor& key_end) override {
    const auto op_timer = profile("attention_decode");
    for (const Tensor* t : TensorList{&out, &q, &k_cache, &v_cache}) check(*t, "attention_decode");
    check_tokens(key_begin, "attention_decode");
    check_tokens(key_end, "attention_decode");
    same_dtype({&out, &q, &k_cache, &v_cache}, "attention_decode");
    SF_CHECK(q.ndim() == 3 && k_cache.ndim() == 4 && k_cache.shape() == v_cache.shape() &&
                 out.shape() == q.shape() && k_cache.dim(0) == q.dim(0) &&
                 k_cache.dim(3) == q.dim(2) && q.dim(1) % k_cache.dim(2) == 0 &&
                 key_begin.numel() == q.dim(0) && key_end.numel() == q.dim(0),
             "attention_decode: q {} k {} v {} out {}", q.describe(), k_cache.describe(),
             v_cache.describe(), out.describe());
    cuda::attention_decode(q.dtype(), out.raw(), q.raw(), k_cache.raw(), v_cache.raw(),
                           tokens_ptr(key_begin), tokens_ptr(key_end), q.dim(0), k_cache.dim(1),
                           q.dim(1), k_cache.dim(2), q.dim(2), enqueue());
  }

  void adamw_update(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                    const AdamWStep& s) override {
    const auto op_timer = profile("adamw_update");
    for (const Tensor* t : TensorList{&param, &grad, &m, &v}) check_f32(*t, "adamw_update");
    for (const Tensor* t : TensorList{&grad, &m, &v}) same_shape(*t, param, "adamw_update");
    check_adamw_step(s);
    cuda::adamw_update(static_cast<float*>(param.raw()), static_cast<const float*>(grad.raw()),
                       static_cast<float*>(m.raw()), static_cast<float*>(v.raw()), param.numel(),
                       adamw_args(s), enqueue());
  }

  // ---- many tensors in one launch (tables of pointers and sizes uploaded per call) ----------
  void fill_many(const std::vector<Tensor>& tensors, double value) override {
    const auto op_timer = profile("fill_many");
    if (tensors.empty()) return;
    std::vector<uint64_t> pointers, sizes;
    for (const Tensor& t : tensors) {
      check(t, "fill_many");
      SF_CHECK(t.dtype() == tensors[0].dtype(), "fill_many: {} next to {}", t.describe(),
               tensors[0].describe());
      pointers.push_back(reinterpret_cast<uint64_t>(t.raw()));
      sizes.push_back(static_cast<uint64_t>(t.numel()));
    }
    const cuda::ManyTable table = upload_many({pointers}, sizes);
    cuda::fill_many(tensors[0].dtype(), table.column<void>(0), table.layout,
                    static_cast<float>(value), enqueue());
  }

  void convert_many(const std::vector<Tensor>& dst, const std::vector<Tensor>& src) override {
    const auto op_timer = profile("convert_many");
    SF_CHECK(dst.size() == src.size(), "convert_many: {} destinations for {} sources", dst.size(),
             src.size());
    if (dst.empty()) return;
    std::vector<uint64_t> to, from, sizes;
    for (size_t i = 0; i < dst.size(); ++i) {
      check(dst[i], "convert_many");
      check(src[i], "convert_many");
      SF_CHECK(dst[i].shape() == src[i].shape() && dst[i].dtype() == dst[0].dtype() &&
                   src[i].dtype() == src[0].dtype(),
               "convert_many: {} into {} (one source dtype, one destination dtype, same shapes)",
               src[i].describe(), dst[i].describe());
      to.push_back(reinterpret_cast<uint64_t>(dst[i].raw()));
      from.push_back(reinterpret_cast<uint64_t>(src[i].raw()));
      sizes.push_back(static_cast<uint64_t>(src[i].numel()));
    }
    const cuda::ManyTable table = upload_many({to, from}, sizes);
    cuda::convert_many(dst[0].dtype(), table.column<void>(0), src[0].dtype(),
                       table.column<const void>(1), table.layout, enqueue());
  }

  // AdamW and the refresh of the working copies (where given) in one pass: see AdamWTensors.
  void adamw_update_many(const std::vector<AdamWTensors>& params, const AdamWStep& s) override {
    const auto op_timer = profile("adamw_update_many");
    if (params.empty()) return;
    check_adamw_step(s);
    if (s.clip_sum_squares.defined()) {
      check_f64_scalar(s.clip_sum_squares, "adamw_update_many clip_sum_squares");
      SF_CHECK(s.clip_sum_squares.device() == Device::cuda,
               "adamw_update_many: clip_sum_squares {} is not on the GPU",
               s.clip_sum_squares.describe());
    }
    std::vector<uint64_t> values, grads, ms, vs, working, sizes;
    std::vector<float> decays;
    const Tensor* first_working = nullptr;  // every working copy of one launch has its dtype
    for (const AdamWTensors& p : params) {
      for (const Tensor* t : TensorList{&p.param, &p.grad, &p.m, &p.v}) check_f32(*t, "adamw_update_many");
      for (const Tensor* t : TensorList{&p.grad, &p.m, &p.v}) same_shape(*t, p.param, "adamw_update_many");
      if (p.working.defined()) {
        check(p.working, "adamw_update_many");
        adamw_check_working(p, "adamw_update_many");
        if (!first_working) first_working = &p.working;
        SF_CHECK(p.working.dtype() == first_working->dtype(),
                 "adamw_update_many: working copies of one call share a dtype: {} next to {}",
                 p.working.describe(), first_working->describe());
      }
      values.push_back(reinterpret_cast<uint64_t>(p.param.raw()));
      grads.push_back(reinterpret_cast<uint64_t>(p.grad.raw()));
      ms.push_back(reinterpret_cast<uint64_t>(p.m.raw()));
      vs.push_back(reinterpret_cast<uint64_t>(p.v.raw()));
      working.push_back(p.working.defined() ? reinterpret_cast<uint64_t>(p.working.raw()) : 0);
      sizes.push_back(static_cast<uint64_t>(p.param.numel()));
      AdamWStep own = s;
      own.weight_decay = p.weight_decay;
      decays.push_back(adamw_args(own).decay);
    }
    std::vector<uint64_t> decay_words((decays.size() + 1) / 2);  // two floats per word
    std::memcpy(decay_words.data(), decays.data(), decays.size() * sizeof(float));
    const cuda::ManyTable table = upload_many({values, grads, ms, vs, working}, sizes, decay_words);
    cuda::AdamWTable t;
    t.params = table.column<float>(0);
    t.grads = table.column<const float>(1);
    t.m = table.column<float>(2);
    t.v = table.column<float>(3);
    t.working = table.column<void>(4);
    t.decays = reinterpret_cast<const float*>(table.extra);
    t.layout = table.layout;
    t.working_dtype = first_working ? first_working->dtype() : DType::f32;
    if (s.clip_sum_squares.defined()) {
      t.clip_sum_squares = static_cast<const double*>(s.clip_sum_squares.raw());
      t.max_norm = s.max_norm;
    }
    cuda::adamw_update_many(t, adamw_args(s), enqueue());
  }

 private:
  static void check_adamw_step(const AdamWStep& s) {
    SF_CHECK(s.step >= 1 && std::isfinite(s.lr) && s.lr >= 0.0 && s.eps > 0.0 &&
                 std::isfinite(s.grad_scale),
             "adamw_update: invalid step {} lr {} eps {} grad_scale {}", s.step, s.lr, s.eps,
             s.grad_scale);
  }
  // The per-step constants, in double and rounded once (as the CPU kernel does).
  static cuda::AdamWArgs adamw_args(const AdamWStep& s) {
    const double t = static_cast<double>(s.step);
    cuda::AdamWArgs a;
    a.decay = static_cast<float>(1.0 - s.lr * s.weight_decay);
    a.step_size = static_cast<float>(s.lr / (1.0 - std::pow(s.beta1, t)));
    a.bias_correction2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(s.beta2, t)));
    a.beta1 = static_cast<float>(s.beta1);
    a.one_minus_beta1 = static_cast<float>(1.0 - s.beta1);
    a.beta2 = static_cast<float>(s.beta2);
    a.one_minus_beta2 = static_cast<float>(1.0 - s.beta2);
    a.eps = static_cast<float>(s.eps);
    a.grad_scale = static_cast<float>(s.grad_scale);
    return a;
  }
  static std::vector<uint64_t> concat(std::initializer_list<std::vector<uint64_t>> parts) {
    std::vector<uint64_t> all;
    for (const auto& part : parts) all.insert(all.end(), part.begin(), part.end());
    return all;
  }
  cuda::ManyTable upload_many(std::initializer_list<std::vector<uint64_t>> columns,
                              const std::vector<uint64_t>& sizes, const std::vector<uint64_t>& extra = {}) {
    return uploads_.many(columns, sizes, extra, enqueue(), recorder_->capturing(), [this] {
      recorder_->invalidate();  // recordings that use a dropped table are stale now
      SF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    });
  }
  // Sum of squares of F32 tensors into a device double (`total`), through per-tensor results
  // in a buffer of the backend's own.
  void sum_squares_f32(const std::vector<Tensor>& tensors, double* total) {
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
  void fill_f64_zero(Tensor& t) {
    SF_CUDA_CHECK(cudaMemsetAsync(t.raw(), 0, t.nbytes(), enqueue()));
  }
  void check_matmul(const Tensor& out, const Tensor& a, bool ta, const Tensor& b, bool tb) const {
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

  void rope(Tensor& x, double theta, int64_t offset, bool inverse) {
    check(x, inverse ? "rope_backward" : "rope_forward");
    SF_CHECK(x.ndim() == 4 && x.dim(3) % 2 == 0, "rope: expected [B, T, H, even head_dim], got {}",
             x.describe());
    SF_CHECK(offset >= 0, "rope: negative position offset {}", offset);
    const float* table = rope_table(theta, x.dim(3), offset + x.dim(1));
    cuda::rope(x.dtype(), x.raw(), table, x.dim(0) * x.dim(1), x.dim(1), x.dim(2), x.dim(3),
               offset, inverse, enqueue());
  }

  // The (cos, sin) table of rope() for (theta, head_dim), covering positions [0, positions):
  // built on first use, rebuilt larger (doubling) when a longer sequence needs it.
  const float* rope_table(double theta, int64_t head_dim, int64_t positions) {
    RopeTable* table = nullptr;
    for (RopeTable& t : rope_tables_)
      if (t.theta == theta && t.head_dim == head_dim) table = &t;
    if (!table) table = &rope_tables_.emplace_back(RopeTable{theta, head_dim});
    if (table->positions < positions) {
      const int64_t grown_positions = std::max(positions, 2 * table->positions);
      grown(table->data, table->bytes, grown_positions * head_dim * sizeof(float));
      cuda::rope_table(static_cast<float*>(table->data), grown_positions, head_dim, theta, enqueue());
      table->positions = grown_positions;
    }
    return static_cast<const float*>(table->data);
  }

  cuda::AttentionDims attention_dims(const Tensor& q, const Tensor& k, const Tensor& v,
                                     const char* op) const {
    for (const Tensor* t : {&q, &k, &v}) check(*t, op);
    SF_CHECK(q.ndim() == 4 && k.ndim() == 4 && k.shape() == v.shape() && q.dim(0) == k.dim(0) &&
                 q.dim(3) == k.dim(3) && k.dim(2) > 0 && q.dim(2) % k.dim(2) == 0 &&
                 q.dtype() == k.dtype() && q.dtype() == v.dtype(),
             "{}: q {} k {} v {}", op, q.describe(), k.describe(), v.describe());
    cuda::AttentionDims d;
    d.batch = q.dim(0);
    d.q_len = q.dim(1);
    d.q_heads = q.dim(2);
    d.head_dim = q.dim(3);
    d.kv_len = k.dim(1);
    d.kv_heads = k.dim(2);
    return d;
  }

  // attention_step's workspace for the partial results of its key splits and their arrival
  // counts: a fixed size, so that the split count (and a recorded step's launch shape)
  // depends on the shapes alone.
  void allocate_step_workspace() {
    if (step_workspace_.partials) return;
    // One allocation: the partials, then the arrival counts (zero-filled: the kernel expects
    // them so and leaves them so).
    void* memory = nullptr;
    const size_t partial_bytes = kStepPartialFloats * sizeof(float);
    const size_t bytes = partial_bytes + kStepCounters * sizeof(unsigned);
    SF_CUDA_CHECK(cudaMalloc(&memory, bytes));
    SF_CUDA_CHECK(cudaMemsetAsync(memory, 0, bytes, enqueue()));  // (never while capturing)
    step_workspace_.partials = static_cast<float*>(memory);
    step_workspace_.partial_floats = kStepPartialFloats;
    step_workspace_.counters = reinterpret_cast<unsigned*>(static_cast<char*>(memory) + partial_bytes);
    step_workspace_.counter_count = kStepCounters;
  }

  // A device scratch buffer that grows to `bytes` (never shrinks); its contents are not kept.
  void* grown(void*& buffer, size_t& capacity, size_t bytes) {
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

  void dot_to_device(Tensor& total, double alpha, const Tensor& a, const Tensor& b,
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

}  // namespace

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
  return std::make_unique<CudaBackend>(device);
}

cudaStream_t cuda_stream(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  SF_CHECK(cuda != nullptr, "cuda_stream: the backend is not the CUDA backend");
  return cuda->stream();
}

std::string cuda_device_description(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  SF_CHECK(cuda != nullptr, "cuda_device_description: the backend is not the CUDA backend");
  cudaDeviceProp prop{};
  SF_CUDA_CHECK(cudaGetDeviceProperties(&prop, cuda->index()));
  return fmt::format("{}, {} SMs, {:.1f} GiB", prop.name, prop.multiProcessorCount,
                     prop.totalGlobalMem / 1073741824.0);
}

}  // namespace sf
