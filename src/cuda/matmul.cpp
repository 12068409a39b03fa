// matmul.cpp — the cuBLASLt plans behind Matmul (see matmul.h).
//
// Row-major to column-major: a row-major [r, c] matrix is the column-major [c, r] matrix, so
// out = op(a) op(b) (row-major) is out^T = op(b)^T op(a)^T (column-major): cuBLASLt's A is our
// b and its B is our a, with the same transpose flags, m = N, n = M.
#include "cuda/matmul.h"

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace sf::cuda {

namespace {

void check_lt(cublasStatus_t status, const char* call) {
  // (cublasGetStatusString lives in libcublas, which we do not link: the number is enough to
  // look up in cublas_api.h.)
  SF_CHECK(status == CUBLAS_STATUS_SUCCESS, "cuBLASLt {} failed with cublasStatus_t {}", call,
           static_cast<int>(status));
}

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::f32: return CUDA_R_32F;
    case DType::bf16: return CUDA_R_16BF;
    default: fail(fmt::format("matmul: unsupported dtype {}", dtype_name(d)));
  }
}

constexpr size_t kWorkspaceBytes = 32u << 20;  // cuBLASLt's recommendation for Hopper

}  // namespace

struct Matmul::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

Matmul::Matmul(cudaStream_t stream) : stream_(stream) {
  check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
  SF_CUDA_CHECK(cudaMalloc(&workspace_, kWorkspaceBytes));
  workspace_bytes_ = kWorkspaceBytes;
  const char* log = std::getenv("SF_MATMUL_TUNE_LOG");
  tune_log_ = log && std::string(log) == "1";
}

Matmul::~Matmul() {
  plans_.clear();
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

Matmul::Plan& Matmul::plan_for(const Key& key, const void* a_ptr, const void* b_ptr,
                               const void* c_ptr, float alpha, float beta) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  const auto [m, n, k, ta, tb, in_dtype, out_dtype, accumulate, count, stride_a, stride_b] = key;
  // Tuning times candidates with events and waits for them, which a stream being recorded into
  // a CUDA graph does not allow: every product's plan must exist before a recording (the Model
  // runs each kind of step directly once first).
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  SF_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
  SF_CHECK(capturing == cudaStreamCaptureStatusNone,
           "matmul: a {}x{}x{} product met for the first time inside a recording (its algorithm "
           "is tuned by timing, which a recording cannot do)",
           std::get<0>(key), std::get<1>(key), std::get<2>(key));
  auto plan = std::make_unique<Plan>();
  check_lt(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "MatmulDescCreate");
  // Column-major view: A_lt = b (our), B_lt = a (our).
  const cublasOperation_t op_a = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
  check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a), "TRANSA");
  check_lt(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b), "TRANSB");
  // Column-major dims: C_lt is [N rows, M cols], ld N. A_lt = our b: stored col-major as
  // [b_cols, b_rows]; our b is [K, N] (tb false) or [N, K] (tb true).
  const int64_t lt_m = n, lt_n = m;
  const int64_t a_rows = tb ? k : lt_m, a_cols = tb ? lt_m : k;    // stored shape of A_lt
  const int64_t b_rows = ta ? lt_n : k, b_cols = ta ? k : lt_n;    // stored shape of B_lt
  check_lt(cublasLtMatrixLayoutCreate(&plan->a, cuda_type(in_dtype), a_rows, a_cols, a_rows), "layout A");
  check_lt(cublasLtMatrixLayoutCreate(&plan->b, cuda_type(in_dtype), b_rows, b_cols, b_rows), "layout B");
  check_lt(cublasLtMatrixLayoutCreate(&plan->c, cuda_type(out_dtype), lt_m, lt_n, lt_m), "layout C");
  if (count > 1) {
    const int32_t batch_count = static_cast<int32_t>(count);
    const int64_t strides[3] = {stride_b, stride_a, m * n};  // A_lt = our b, B_lt = our a, C
    cublasLtMatrixLayout_t layouts[3] = {plan->a, plan->b, plan->c};
    for (int i = 0; i < 3; ++i) {
      check_lt(cublasLtMatrixLayoutSetAttribute(layouts[i], CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                &batch_count, sizeof batch_count),
               "layout batch count");
      check_lt(cublasLtMatrixLayoutSetAttribute(layouts[i],
                                                CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                &strides[i], sizeof strides[i]),
               "layout batch stride");
    }
  }

  cublasLtMatmulPreference_t pref = nullptr;
  check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
  check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &workspace_bytes_, sizeof workspace_bytes_),
           "PreferenceSetAttribute");
  constexpr int kCandidates = 8;
  cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, kCandidates, results, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  check_lt(status, "AlgoGetHeuristic");
  SF_CHECK(found > 0, "cuBLASLt has no algorithm for a {}x{}x{} {} product (out {})", m, n, k,
           dtype_name(in_dtype), dtype_name(out_dtype));
  plan->algo = results[0].algo;
  (void)accumulate;
  if (found > 1) {
    // Time each candidate (3 runs after 1 warm-up) into a scratch output; C is read only.
    void* scratch = nullptr;
    const size_t out_bytes = static_cast<size_t>(count * m * n) * dtype_size(out_dtype);
    SF_CUDA_CHECK(cudaMalloc(&scratch, out_bytes));
    cudaEvent_t start, stop;
    SF_CUDA_CHECK(cudaEventCreate(&start));
    SF_CUDA_CHECK(cudaEventCreate(&stop));
    float best = 1e30f;
    for (int i = 0; i < found; ++i) {
      auto launch = [&] {
        return cublasLtMatmul(handle_, plan->desc, &alpha, b_ptr, plan->a, a_ptr, plan->b, &beta,
                              c_ptr, plan->c, scratch, plan->c, &results[i].algo, workspace_,
                              workspace_bytes_, stream_);
      };
      if (launch() != CUBLAS_STATUS_SUCCESS) continue;
      SF_CUDA_CHECK(cudaEventRecord(start, stream_));
      for (int r = 0; r < 3; ++r) launch();
      SF_CUDA_CHECK(cudaEventRecord(stop, stream_));
      SF_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      SF_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      if (tune_log_)
        fmt::print(stderr, "matmul tune {}x{}x{} {}{} {}->{} x{} beta {}: candidate {} {:.2f} us\n", m,
                   n, k, ta ? "T" : "N", tb ? "T" : "N", dtype_name(in_dtype),
                   dtype_name(out_dtype), count, beta, i, 1000.f * ms / 3);
      if (ms < best) {
        best = ms;
        plan->algo = results[i].algo;
      }
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    SF_CUDA_CHECK(cudaFree(scratch));
  }
  Plan& ref = *plan;
  plans_.emplace(key, std::move(plan));
  return ref;
}

void Matmul::run(void* out, DType out_dtype, const void* a, bool transpose_a, const void* b,
                 bool transpose_b, DType in_dtype, int64_t m, int64_t n, int64_t k, float alpha,
                 float beta, const void* addend, Batch batch) {
  if (m == 0 || n == 0 || batch.count == 0) return;
  if (batch.count == 1) batch = Batch{};  // one plan for a product, however it was asked for
  const void* c = addend ? addend : out;
  Plan& plan = plan_for(Key{m, n, k, transpose_a, transpose_b, in_dtype, out_dtype, beta != 0.f,
                            batch.count, batch.stride_a, batch.stride_b},
                        a, b, c, alpha, beta);
  check_lt(cublasLtMatmul(handle_, plan.desc, &alpha, b, plan.a, a, plan.b, &beta, c, plan.c,
                          out, plan.c, &plan.algo, workspace_, workspace_bytes_, stream_),
           "cublasLtMatmul");
}

}  // namespace sf::cuda
