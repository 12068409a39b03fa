// matmul.h — row-major matrix products through cuBLASLt, with cached plans.
//
// out[M, N] = alpha * op(a) @ op(b) + beta * out, op = identity or transpose, all row-major and
// contiguous. a and b are F32 or BF16 (the same); out is the same dtype, or F32 next to BF16
// inputs (weight gradients accumulate straight into the F32 master gradients). Arithmetic is
// fp32 (CUBLAS_COMPUTE_32F: no TF32 for F32 inputs, so the F32 path matches the CPU reference
// to fp32 rounding). A plan (descriptors + algorithm) is made once per (shape, transposes,
// dtypes, beta != 0) and reused. The algorithm is autotuned: the heuristic's top candidates are
// each timed on the real operands (into a scratch output, so nothing is overwritten) and the
// fastest kept — the heuristic's first choice was measured 3-6x off the best for some of the
// model's shapes (768x768 projections over 16k rows). SF_MATMUL_TUNE_LOG=1 prints every
// candidate's time. Strided batches (Batch) are one call.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "core/dtype.h"

namespace sf::cuda {

// Strided batches: `count` products, operand g at base + g * stride (elements); a stride of 0
// gives every product the same matrix. out's stride is m * n (the outputs are stacked).
struct MatmulBatch {
  int64_t count = 1;
  int64_t stride_a = 0, stride_b = 0;
};

class Matmul {
 public:
  explicit Matmul(cudaStream_t stream);
  ~Matmul();
  Matmul(const Matmul&) = delete;
  Matmul& operator=(const Matmul&) = delete;

  using Batch = MatmulBatch;

  // out = alpha * op(a) op(b) + beta * addend, where addend = out when `addend` is null.
  void run(void* out, DType out_dtype, const void* a, bool transpose_a, const void* b,
           bool transpose_b, DType in_dtype, int64_t m, int64_t n, int64_t k, float alpha,
           float beta, const void* addend = nullptr, Batch batch = {});

 private:
  struct Plan;
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, DType, DType, bool, int64_t,
                         int64_t, int64_t>;
  Plan& plan_for(const Key& key, const void* a, const void* b, const void* c, float alpha,
                float beta);

  cudaStream_t stream_;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  bool tune_log_ = false;  // SF_MATMUL_TUNE_LOG=1: each candidate's time on stderr
};

}  // namespace sf::cuda
