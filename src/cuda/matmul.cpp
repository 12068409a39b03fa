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
#include <vector>

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

// One candidate algorithm's time per product, measured the way the training step runs it:
// inside a CUDA graph (the step is replayed as one, cuda_backend.cpp). Some cuBLASLt algorithms
// issue a memset of their own before the kernel; in a graph that is one more node, and the gap
// between two nodes (~1.5 us on an H100) costs as much as the memset itself. Timed as separate
// launches, such an algorithm looked as fast as one without (the step had ~100-140 such
// memsets). Falls back to timing separate launches where the stream cannot be captured (it is
// already being captured, or capture fails).
struct CandidateTime {
  bool ok = false;           // the candidate ran
  bool graph = false;        // timed as graph replays (else as separate launches)
  int extra_nodes = 0;       // graph nodes per product beyond its kernel (memsets, ...)
  float microseconds = 0.f;  // per product
};

class CandidateTimer {
 public:
  explicit CandidateTimer(cudaStream_t stream) : stream_(stream) {
    SF_CUDA_CHECK(cudaEventCreate(&start_));
    SF_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~CandidateTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  CandidateTimer(const CandidateTimer&) = delete;
  CandidateTimer& operator=(const CandidateTimer&) = delete;

  template <class Launch> CandidateTime time(Launch&& launch) {
    CandidateTime t;
    if (launch() != CUBLAS_STATUS_SUCCESS) {  // warm-up; an algorithm may refuse the operands
      cudaGetLastError();
      return t;
    }
    t.ok = true;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    SF_CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
    cudaGraphExec_t exec = capturing == cudaStreamCaptureStatusNone ? record(launch, t) : nullptr;
    if (exec) {
      t.graph = true;
      SF_CUDA_CHECK(cudaGraphLaunch(exec, stream_));  // the graph's own first run
      SF_CUDA_CHECK(cudaEventRecord(start_, stream_));
      for (int r = 0; r < kReplays; ++r) SF_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
      SF_CUDA_CHECK(cudaEventRecord(stop_, stream_));
      SF_CUDA_CHECK(cudaEventSynchronize(stop_));
      cudaGraphExecDestroy(exec);
    } else {
      SF_CUDA_CHECK(cudaEventRecord(start_, stream_));
      for (int r = 0; r < kReplays * kProductsPerGraph; ++r) launch();
      SF_CUDA_CHECK(cudaEventRecord(stop_, stream_));
      SF_CUDA_CHECK(cudaEventSynchronize(stop_));
    }
    float ms = 0.f;
    SF_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    t.microseconds = 1000.f * ms / (kReplays * kProductsPerGraph);
    return t;
  }

 private:
  static constexpr int kProductsPerGraph = 4, kReplays = 2;

  // kProductsPerGraph launches captured as one graph (null if the capture fails); counts the
  // nodes beyond one kernel per product into t.extra_nodes.
  template <class Launch> cudaGraphExec_t record(Launch& launch, CandidateTime& t) {
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    bool launched = true;
    for (int r = 0; r < kProductsPerGraph; ++r) launched = launched && launch() == CUBLAS_STATUS_SUCCESS;
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    cudaGraphExec_t exec = nullptr;
    if (launched && ended == cudaSuccess && graph) {
      size_t nodes = 0;
      if (cudaGraphGetNodes(graph, nullptr, &nodes) == cudaSuccess)
        t.extra_nodes = static_cast<int>(nodes / kProductsPerGraph) - 1;
      if (cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) exec = nullptr;
    }
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    return exec;
  }

  cudaStream_t stream_;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

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

  // Candidates: the heuristic's best with our workspace, and its best with none. Every BF16-output
  // algorithm it offers with a workspace asks for 4 bytes of it, which cuBLASLt zeroes with a
  // memset of its own before each product (a second graph node, ~2 us with its gap; the step has
  // over a hundred such products); those offered without a workspace cannot need that.
  std::vector<cublasLtMatmulHeuristicResult_t> results;
  for (size_t max_workspace : {workspace_bytes_, size_t{0}}) {
    cublasLtMatmulPreference_t pref = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&pref), "PreferenceCreate");
    check_lt(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                  &max_workspace, sizeof max_workspace),
             "PreferenceSetAttribute");
    constexpr int kCandidates = 12;
    cublasLtMatmulHeuristicResult_t found_here[kCandidates] = {};
    int found = 0;
    const cublasStatus_t status =
        cublasLtMatmulAlgoGetHeuristic(handle_, plan->desc, plan->a, plan->b, plan->c, plan->c,
                                       pref, kCandidates, found_here, &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) continue;  // none without a workspace
    check_lt(status, "AlgoGetHeuristic");
    results.insert(results.end(), found_here, found_here + found);
  }
  const int found = static_cast<int>(results.size());
  SF_CHECK(found > 0, "cuBLASLt has no algorithm for a {}x{}x{} {} product (out {})", m, n, k,
           dtype_name(in_dtype), dtype_name(out_dtype));
  plan->algo = results[0].algo;
  (void)accumulate;
  if (found > 1) {
    // Time each candidate on the real operands, into a scratch output (C is read only).
    void* scratch = nullptr;
    const size_t out_bytes = static_cast<size_t>(count * m * n) * dtype_size(out_dtype);
    SF_CUDA_CHECK(cudaMalloc(&scratch, out_bytes));
    CandidateTimer timer(stream_);
    float best = 1e30f;
    for (int i = 0; i < found; ++i) {
      const CandidateTime t = timer.time([&] {
        return cublasLtMatmul(handle_, plan->desc, &alpha, b_ptr, plan->a, a_ptr, plan->b, &beta,
                              c_ptr, plan->c, scratch, plan->c, &results[i].algo, workspace_,
                              workspace_bytes_, stream_);
      });
      if (tune_log_)
        fmt::print(stderr,
                   "matmul tune {}x{}x{} {}{} {}->{} x{}: candidate {} workspace {} B, {} extra "
                   "graph nodes, {}{:.2f} us\n",
                   m, n, k, ta ? "T" : "N", tb ? "T" : "N", dtype_name(in_dtype),
                   dtype_name(out_dtype), count, i, results[i].workspaceSize, t.extra_nodes,
                   t.graph ? "" : "(eager) ", t.ok ? t.microseconds : -1.f);
      if (t.ok && t.microseconds < best) {
        best = t.microseconds;
        plan->algo = results[i].algo;
      }
    }
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
