// kernels.h — launchers of the CUDA backend's own kernels (everything but attention and the
// matrix product), called by the CUDA backend (cuda_backend*.cpp) after it has validated shapes
// and dtypes.
//
// Conventions: pointers are device pointers to contiguous data; `DType` arguments say what a
// `void*` holds (F32 or BF16); arithmetic is fp32 (fp64 for the dot/sum-of-squares totals);
// every launcher enqueues on `stream` and checks the launch. Free of fmt so nvcc stays fast.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "core/dtype.h"
#include "core/memory_bandwidth.h"

namespace sf::cuda {

class StepProgram;  // step_program.h

// ---- elementwise and reductions (n elements) ----------------------------------------------------
void fill(DType dtype, void* x, int64_t n, float value, cudaStream_t stream);
void scale(DType dtype, void* x, int64_t n, float alpha, cudaStream_t stream);
// y += alpha * x, y and x of any two floating dtypes.
void axpy(DType y_dtype, void* y, DType x_dtype, const void* x, int64_t n, float alpha,
          cudaStream_t stream);
// dst = src converted (round to nearest even into BF16).
void convert(DType dst_dtype, void* dst, DType src_dtype, const void* src, int64_t n,
             cudaStream_t stream);
// ---- many tensors in one launch ------------------------------------------------------------
// How the elements of `count` tensors are shared out (device arrays): tensor k has sizes[k]
// elements, cut into chunks of kManyChunk; chunk_first[k] (count + 1 prefix sums, from
// many_chunk_first) is the index of its first chunk, and blocks take the `chunks` chunks in turn.
// A large tensor (the embedding, a third of a GPT-2 small) is thus spread over the whole GPU:
// one grid row per tensor left it to a few blocks that finished last, and AdamW ran at ~65% of
// the memory bandwidth (H100).
constexpr int64_t kManyChunk = 8192;  // a multiple of 4: chunks keep 4-element vectors aligned
struct ManyLayout {
  const int64_t* sizes = nullptr;
  const int64_t* chunk_first = nullptr;
  int count = 0;
  int64_t chunks = 0;
};
// Host side: the count + 1 prefix sums of ceil(size / kManyChunk).
std::vector<uint64_t> many_chunk_first(const std::vector<uint64_t>& sizes);

// Many tensors of one dtype in one launch; pointers are device arrays of layout.count.
void fill_many(DType dtype, void* const* tensors, const ManyLayout& layout, float value,
               cudaStream_t stream);
void convert_many(DType dst_dtype, void* const* dst, DType src_dtype, const void* const* src,
                  const ManyLayout& layout, cudaStream_t stream);
// *result (device double) = alpha * sum(a * b), or += that with accumulate; b == nullptr means
// sum(a * a).
void dot(DType a_dtype, const void* a, DType b_dtype, const void* b, int64_t n, double* result,
         cudaStream_t stream, double alpha = 1.0, bool accumulate = false);
// results[k] (device doubles, overwritten) = sum of squares of tensor k, and *total (device
// double, overwritten) = their sum in tensor order: the global gradient norm, left on the device
// for the optimizer (no host round trip).
void sum_squares_many(const float* const* tensors, const ManyLayout& layout, double* results,
                      double* total, cudaStream_t stream);

// ---- layers --------------------------------------------------------------------------------------
// out[r, :] = table[tokens[r], :]; table and out of `dtype`.
void embedding_forward(DType dtype, void* out, const int32_t* tokens, const void* table,
                       int64_t rows, int64_t dim, cudaStream_t stream);
// dtable (F32) [tokens[r], :] += dout[r, :].
void embedding_backward(float* dtable, DType dout_dtype, const void* dout, const int32_t* tokens,
                        int64_t rows, int64_t dim, cudaStream_t stream);

// out, x of `dtype`; weight of `weight_dtype`; rstd F32 [rows].
void rmsnorm_forward(DType dtype, void* out, float* rstd, const void* x, DType weight_dtype,
                     const void* weight, int64_t rows, int64_t dim, float eps,
                     cudaStream_t stream);
// dx (of `dtype`, accumulates), dweight (F32, accumulates).
void rmsnorm_backward(DType dtype, void* dx, float* dweight, const void* dout, const void* x,
                      DType weight_dtype, const void* weight, const float* rstd, int64_t rows,
                      int64_t dim, cudaStream_t stream);

// table (F32 [positions, head_dim / 2, 2], overwritten) = (cos, sin) of every position's angle
// for every pair: built once per (theta, head_dim) and reused by rope().
void rope_table(float* table, int64_t positions, int64_t head_dim, double theta,
                cudaStream_t stream);
// x [rows = B*T, heads, head_dim] in place; position of row r = offset + r % seq (seq = T), whose
// angles `table` (from rope_table) must cover. inverse = true rotates by minus the angle (the
// backward). Row r starts at x + r * row_stride (0: heads * head_dim, rows back to back).
void rope(DType dtype, void* x, const float* table, int64_t rows, int64_t seq, int64_t heads,
          int64_t head_dim, int64_t position_offset, bool inverse, cudaStream_t stream,
          int64_t row_stride = 0);
// x [n, heads, head_dim] in place, row r at positions[r].
void rope_at(DType dtype, void* x, const int32_t* positions, int64_t n, int64_t heads,
             int64_t head_dim, double theta, cudaStream_t stream);

void swiglu_forward(DType dtype, void* out, const void* gate, const void* up, int64_t n,
                    cudaStream_t stream);
// gate, up, dout [rows, cols] contiguous; dgate and dup (overwritten) [rows, cols] with their
// rows out_stride elements apart (0: cols), e.g. the two halves of one [rows, 2 * cols] matrix.
void swiglu_backward(DType dtype, void* dgate, void* dup, const void* dout, const void* gate,
                     const void* up, int64_t rows, int64_t cols, cudaStream_t stream,
                     int64_t out_stride = 0);

// losses (F32, overwritten) per row; *counted (device int64, overwritten) = rows with target >= 0.
void cross_entropy_forward(DType dtype, float* losses, int64_t* counted, const void* logits,
                           const int32_t* targets, int64_t rows, int64_t vocab,
                           cudaStream_t stream);
void cross_entropy_backward(DType dtype, void* dlogits, const void* logits,
                            const int32_t* targets, int64_t rows, int64_t vocab, float scale,
                            cudaStream_t stream);
// Both in one pass over the logits: losses as the forward, dlogits (overwritten) as the backward
// with scale 1 (the caller counts the targets on the host).
void cross_entropy_forward_backward(DType dtype, float* losses, void* dlogits, const void* logits,
                                    const int32_t* targets, int64_t rows, int64_t vocab,
                                    cudaStream_t stream);

// ---- products of a few rows (linear_small.cu) ------------------------------------------------
// out [m, n] = x' [m, k] @ w [n, k]^T (+ addend [m, n], which may be out itself), m <= 8, where
// x' = x, or with `norm` (a [k] weight) x' = RMSNorm(x) * norm, or with `gate` (rows like x)
// x' = silu(gate) * x, each rounded to the dtype as the unfused kernel would have stored it.
constexpr int kMaxSmallRows = 8;
constexpr int kMaxSmallProducts = 32;  // per launch; more are launched in turns
struct SmallProduct {
  void* out;
  const void* x;
  const void* w;
  const void* addend;  // nullptr: none
  int64_t m, n, k;
  const void* norm = nullptr;  // nullptr: none
  float eps = 0.f;
  const void* gate = nullptr;  // nullptr: none (not with a norm)
  bool vector_loads = false;   // set by the launcher, as are:
  int splits = 1;              //   warps per output (K split between them)
};
// All products share `dtype` (F32 or BF16); one launch per kMaxSmallProducts. The products
// linear_stream_suits() accepts go to linear_stream_many (linear_stream.cu), the others to the
// warp-per-output kernel of linear_small.cu.
// With `program` (step_program.h), launches may go into its pending program instead.
void linear_small_many(DType dtype, const SmallProduct* products, int count, cudaStream_t stream,
                       StepProgram* program = nullptr);
// Whether a product's weights stream through shared memory (linear_stream.cu): large weights
// (>= 4 MB) with rows of at most 12 kB; decided by the product's own shape and pointers, never by
// the other products of a launch or its row count. SF_LINEAR_STREAM=0 turns it off (A/B switch).
bool linear_stream_suits(DType dtype, const SmallProduct& product);
// Products of 1..8 rows that linear_stream_suits() accepted.
void linear_stream_many(DType dtype, const SmallProduct* products, int count, cudaStream_t stream);

// ---- incremental decoding ----------------------------------------------------------------------
// cache [B, C, W] row slots[b] = rows[b, :].
void kv_cache_write(DType dtype, void* cache, const void* rows, const int32_t* slots,
                    int64_t batch, int64_t capacity, int64_t width, cudaStream_t stream);
// Rows [n, W] as positions first .. first + n - 1 of `sequence` into cache [B, C, W], slot j % C
// (the last C positions only); see Backend::kv_cache_write_range.
void kv_cache_write_range(DType dtype, void* cache, const void* rows, int64_t sequence,
                          int64_t first_position, int64_t n, int64_t capacity, int64_t width,
                          cudaStream_t stream);
// RoPE of q and the new key, the new key and value into the caches, attention over the caches:
// Backend::attention_step, its keys split over blocks (decode_ops.cu says how). The workspace
// holds the splits' partial results and one arrival count per (row, query head), zero between
// launches (the kernel leaves them so); without it, or when it is too small for the rows, one
// split. The number of splits depends only on the shapes and the workspace's sizes, so a
// recorded step keeps one launch shape. head_dim even and <= attention_step_max_head_dim.
// block_rows, cache_block_rows: which cache row a row uses (0, 0: its own; see
// AttentionStepRows in core/backend.h).
inline constexpr int64_t kAttentionStepMaxHeadDim = 256;
// The largest head_dim the kernel holds for this dtype and head_dim's divisibility: 256 when
// head_dim is a multiple of 16 bytes' worth of elements, else 128.
int64_t attention_step_max_head_dim(DType dtype, int64_t head_dim);
struct AttentionStepWorkspace {
  float* partials = nullptr;
  int64_t partial_floats = 0;
  unsigned* counters = nullptr;  // zero-filled once by its owner
  int64_t counter_count = 0;
};
void attention_step(DType dtype, void* out, const void* q, const void* k_new, const void* v_new,
                    void* k_cache, void* v_cache, const int32_t* position,
                    const int32_t* key_position, const int32_t* slot, const int32_t* key_begin,
                    const int32_t* key_end, int64_t rows, int64_t block_rows,
                    int64_t cache_block_rows, int64_t capacity, int64_t q_heads,
                    int64_t kv_heads, int64_t head_dim, double theta, bool rope_q, bool rope_k,
                    const AttentionStepWorkspace& workspace, cudaStream_t stream,
                    StepProgram* program = nullptr);
// One query per sequence over its cache; see Backend::attention_decode.
void attention_decode(DType dtype, void* out, const void* q, const void* k_cache,
                      const void* v_cache, const int32_t* key_begin, const int32_t* key_end,
                      int64_t batch, int64_t capacity, int64_t q_heads, int64_t kv_heads,
                      int64_t head_dim, cudaStream_t stream);

// ---- the GPU's memory bandwidth (memory_bandwidth.cu) ---------------------------------------
// copy_gb_s: a device-to-device copy, bytes read + written; read_gb_s: a streaming read kernel;
// threads 0 (a device measurement); triad not measured.
MemoryBandwidth measure_device_bandwidth(cudaStream_t stream);

// ---- optimizer ----------------------------------------------------------------------------------
// Per-step constants, computed in double on the host and rounded once (as the CPU kernel does).
struct AdamWArgs {
  float decay;                  // 1 - lr * weight_decay
  float step_size;              // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float beta1, one_minus_beta1, beta2, one_minus_beta2, eps, grad_scale;
};
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n,
                  const AdamWArgs& args, cudaStream_t stream);
// Every parameter in one launch: device arrays of layout.count pointers and decays
// (1 - lr * weight_decay of each parameter; args.decay is not used). working[k], where not
// null, receives the new value of parameter k rounded to working_dtype (F32 or BF16, one dtype
// per launch; round to nearest even as convert does): the mixed-precision working copies are
// refreshed in the same pass.
// Clipping decided on the device: with clip_sum_squares (a device double, the gradients' sum of
// squares from sum_squares_many), args.grad_scale is replaced by min(1, max_norm / (sqrt(sum) +
// 1e-6)) (1 when max_norm <= 0), computed in double as the host's clip_scale does; a non-finite
// sum skips the update (nothing is written).
struct AdamWTable {
  float* const* params;
  const float* const* grads;
  float* const* m;
  float* const* v;
  void* const* working;
  const float* decays;
  ManyLayout layout;
  DType working_dtype = DType::f32;  // on the host: picks the kernel
  const double* clip_sum_squares = nullptr;
  double max_norm = 0.0;
};
void adamw_update_many(const AdamWTable& table, const AdamWArgs& args, cudaStream_t stream);

}  // namespace sf::cuda
