// cuda_backend_decode.cpp — CudaBackend's incremental-decoding operations (cuda_backend_impl.h):
// the small-row products of a step (linear_many), RoPE at given positions, KV-cache writes, the
// attention of a decode step and its workspace.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "cuda/attention_kernels.h"
#include "cuda/cuda_backend_impl.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels.h"
#include "cuda/stream_recorder.h"

namespace sf::cuda_detail {

void CudaBackend::linear_many(const std::vector<LinearTask>& tasks) {
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

void CudaBackend::rope_at(Tensor& x, const Tensor& positions, double theta) {
  const auto op_timer = profile("rope_at");
  check(x, "rope_at");
  check_tokens(positions, "rope_at");
  SF_CHECK(x.ndim() == 3 && positions.numel() == x.dim(0) && x.dim(2) % 2 == 0,
           "rope_at: x {} positions {}", x.describe(), positions.describe());
  cuda::rope_at(x.dtype(), x.raw(), tokens_ptr(positions), x.dim(0), x.dim(1), x.dim(2), theta,
                enqueue());
}

void CudaBackend::kv_cache_write(Tensor& cache, const Tensor& rows, const Tensor& slots) {
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

void CudaBackend::kv_cache_write_range(Tensor& cache, const Tensor& rows, int64_t sequence,
                                       int64_t first_position) {
  const auto op_timer = profile("kv_cache_write_range");
  check(cache, "kv_cache_write_range");
  check(rows, "kv_cache_write_range");
  const int64_t W = check_kv_cache_write_range(cache, rows, sequence, first_position);
  cuda::kv_cache_write_range(cache.dtype(), cache.raw(), rows.raw(), sequence, first_position,
                             rows.dim(0), cache.dim(1), W, enqueue());
}

void CudaBackend::attention_step(Tensor& out, Tensor& q, Tensor& k, const Tensor& v,
                                 Tensor& k_cache, Tensor& v_cache, const AttentionStepRows& rows,
                                 bool rope_q, bool rope_k, double theta) {
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

void CudaBackend::attention_decode(Tensor& out, const Tensor& q, const Tensor& k_cache,
                                   const Tensor& v_cache, const Tensor& key_begin,
                                   const Tensor& key_end) {
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

// attention_step's workspace for the partial results of its key splits and their arrival
// counts: a fixed size, so that the split count (and a recorded step's launch shape)
// depends on the shapes alone.
void CudaBackend::allocate_step_workspace() {
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

}  // namespace sf::cuda_detail
