// attention_step.cu — one decode step of attention, fused (Backend::attention_step): RoPE of the
// query and the new key at their positions, the new key and value into their cache slot, and
// the query's attention over the cache's visible keys [key_begin, key_end) (ring slot j % C).
//
// Memory-bound: at batch 1 a step reads every visible key and value once, a few hundred kB
// per layer, so the time is the latency of those loads unless many are in flight at once.
// Grid (rows * q_heads, splits): block (r, h, s) takes the keys of chunk s (kStepChunk keys) of
// row r's visible range for query head h. Its 128 threads form 16 groups of 8; a group takes
// keys group, group + 16, ... (kKeysPerGroup of them, their key and value rows loaded together
// before any is used), its 8 lanes splitting each row into N-element pieces (16-byte loads
// where head_dim allows; CPL pieces per lane). Each group keeps its own online softmax (running
// max m, sum l, accumulators rescaled when m grows); the block merges its 16 groups through
// shared memory; with one split it writes the output, else its (m, l, acc[head_dim]) go to the
// workspace's partials and the last split of (r, h) to finish (counted in the workspace's
// counters) merges the splits and writes the output, so one launch covers a step.
//
// The split count is fixed by the cache's capacity (not the current length), so a recorded step
// (CUDA graph) has one launch shape for every position; splits past the visible range find no
// key. Each block rotates the query and the new key itself; the new key and value are used from
// shared memory at their position, and block (r, first head of its kv group, split 0) writes
// them into the cache slot, which no block reads (it held a position the row no longer sees),
// so the blocks need no ordering among themselves. Launched as a dependent launch
// (dependent_launch.cuh): the cached rows a group reads are prefetched into L2 before the wait
// for the kernel that wrote q, k and v. fp32 scores, softmax and accumulation; the rotated
// query and key rounded to T as the unfused path stores them.
#include <algorithm>

#include "cuda/attention_step.cuh"
#include "cuda/step_program.h"

namespace sf::cuda {

using step::AttentionStepArgs;
using step::kGroupLanes;
using step::kStepChunk;
using step::kStepThreads;

namespace {

// The kernel's own block of kStepThreads threads.
struct KernelStepBlock : KernelDependency {
  __device__ int thread() const { return threadIdx.x; }
  __device__ void sync() const { __syncthreads(); }
};

template <class T, int N, int CPL>
__global__ void __launch_bounds__(kStepThreads) attention_step_kernel(const AttentionStepArgs args) {
  __shared__ step::AttentionStepShared shared;
  step::attention_step_block<T, N, CPL>(args, blockIdx.x, blockIdx.y, gridDim.y, shared,
                                        KernelStepBlock{});
}

// Pieces of N elements per lane: the smallest power of two that covers head_dim.
int pieces_per_lane(int64_t head_dim, int n) {
  const int64_t per_lane = (head_dim / n + kGroupLanes - 1) / kGroupLanes;
  return per_lane <= 1 ? 1 : per_lane <= 2 ? 2 : per_lane <= 4 ? 4 : 8;
}

template <class T, int N>
void launch_pieces(const AttentionStepArgs& args, int pieces, dim3 grid, cudaStream_t stream) {
  auto kernel = pieces <= 1   ? attention_step_kernel<T, N, 1>
                : pieces <= 2 ? attention_step_kernel<T, N, 2>
                : pieces <= 4 ? attention_step_kernel<T, N, 4>
                              : attention_step_kernel<T, N, 8>;
  launch_dependent(kernel, grid, dim3(kStepThreads), 0, stream, args);
}

}  // namespace

int64_t attention_step_max_head_dim(DType dtype, int64_t head_dim) {
  const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
  // 16-byte pieces: up to 8 per lane; pairs: up to 8 per lane, 128 dims.
  return head_dim % vector == 0 ? kAttentionStepMaxHeadDim
                                : std::min<int64_t>(kAttentionStepMaxHeadDim, kGroupLanes * 8 * 2);
}

void attention_step(DType dtype, void* out, const void* q, const void* k_new, const void* v_new,
                    void* k_cache, void* v_cache, const int32_t* position,
                    const int32_t* key_position, const int32_t* slot, const int32_t* key_begin,
                    const int32_t* key_end, int64_t rows, int64_t block_rows,
                    int64_t cache_block_rows, int64_t capacity, int64_t q_heads,
                    int64_t kv_heads, int64_t head_dim, double theta, bool rope_q, bool rope_k,
                    const AttentionStepWorkspace& workspace, cudaStream_t stream,
                    StepProgram* program) {
  if (rows == 0) return;  // (head_dim: checked by the backend against attention_step_max_head_dim)
  // As many splits of kStepChunk keys as the capacity needs and the workspace holds.
  const int64_t per_split = rows * q_heads * (head_dim + 2);
  int64_t splits = (capacity + kStepChunk - 1) / kStepChunk;
  const bool room = workspace.partials && workspace.counters &&
                    rows * q_heads <= workspace.counter_count;
  splits = std::max<int64_t>(1, std::min(splits, room ? workspace.partial_floats / per_split : 1));
  if (splits > 65535) splits = 65535;  // the grid's y limit
  const int64_t chunk = (capacity + splits - 1) / splits;
  const int64_t vector_width = 16 / static_cast<int64_t>(dtype_size(dtype));
  const bool vector = head_dim % vector_width == 0 && all_aligned(16, k_cache, v_cache);
  const int pieces = pieces_per_lane(head_dim, vector ? static_cast<int>(vector_width) : 2);
  const AttentionStepArgs args{out, workspace.partials, workspace.counters, q, k_new, v_new,
                               k_cache, v_cache, position, key_position, slot, key_begin,
                               key_end, capacity, q_heads, kv_heads, head_dim, chunk,
                               block_rows, cache_block_rows, log(theta), rope_q, rope_k};
  const int grid_x = static_cast<int>(rows * q_heads), grid_y = static_cast<int>(splits);
  if (program && program->add_attention(dtype, args, grid_x, grid_y, pieces, vector, stream)) return;
  step::launch_attention(dtype, args, grid_x, grid_y, pieces, vector, stream);
}

namespace step {

void launch_attention(DType dtype, const AttentionStepArgs& args, int grid_x, int grid_y,
                      int pieces_per_lane, bool vector, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  SF_DISPATCH_FLOAT(dtype, T, {
    constexpr int kVector = 16 / sizeof(T);
    if (vector) launch_pieces<T, kVector>(args, pieces_per_lane, grid, stream);
    else launch_pieces<T, 2>(args, pieces_per_lane, grid, stream);
  });
  SF_CUDA_LAUNCH_CHECK("attention_step");
}

}  // namespace step

}  // namespace sf::cuda
