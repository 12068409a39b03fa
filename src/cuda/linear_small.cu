// linear_small.cu — out = x @ W^T (+ addend) for a few rows (decoding: one row per sequence and
// stack), several independent products in one launch (Backend::linear_many; CudaBackend::matmul
// sends its small-row products here too). Batch-1 decoding is memory-bound: each weight is read
// once, with 16-byte loads, while the rows of x stay in L1/L2.
//
// Layout and conventions: W [N, K] row-major (a linear layer's PyTorch layout), x [M, K],
// out and addend [M, N]; one dtype (F32 or BF16) for x, W, out and addend; fp32 accumulation.
// A warp computes F outputs (features) for all M rows over its share of K: its lanes take
// 16-byte chunks (8 BF16 or 4 F32 values) of each weight row, 32 consecutive chunks at a time,
// then a warp sum; S warps of a block may share outputs (K split between them, their sums
// added in shared memory). S depends on the product's K only and F changes no sum
// (choose_splits), so a product sums in the same order in every launch. Input transforms, each rounded to the dtype as
// the unfused kernel would have stored its output (the gate agrees with swiglu_forward bit for
// bit; the norm to rounding, its rstd summed in another order than rmsnorm_forward's):
//   * norm (a decode step's RMSNorm fused into its projections): each block first computes the
//     rows' rstd from x (in L2) and forms the normalised values on the fly;
//   * gate (the MLP's SwiGLU fused into w2): x' = silu(gate) * x.
// Blocks of kWarps warps take groups of consecutive outputs of one product (a block several
// groups when the product has more than the resident blocks allotted to it); the products'
// blocks follow each other in the grid (first_block), and the product table travels as a
// kernel parameter (no upload; CUDA graphs keep it). Launched as a dependent launch
// (dependent_launch.cuh): the first kUnroll loads of each weight row are issued before the wait
// for the previous kernel.
#include <algorithm>
#include <vector>

#include "cuda/linear_small.cuh"
#include "cuda/step_program.h"

namespace sf::cuda {

using small::kBlocksPerSm;
using small::kMaxStagedBytes;
using small::kUnroll;
using small::kWarps;
using small::ProductTable;

namespace {

template <class T, int M, int F>
__global__ void __launch_bounds__(kWarps * 32, kBlocksPerSm) linear_small_kernel(const ProductTable table) {
  small::linear_small_block<T, M, F>(table, static_cast<int>(blockIdx.x), KernelDependency{});
}

template <class T, int M, int F>
void launch_with(const ProductTable& table, int blocks, size_t shared, cudaStream_t stream) {
  static const bool sized = [] {  // (dynamic shared memory beyond 48 kB is asked for once)
    SF_CUDA_CHECK(cudaFuncSetAttribute(linear_small_kernel<T, M, F>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(kMaxStagedBytes)));
    return true;
  }();
  (void)sized;
  launch_dependent(linear_small_kernel<T, M, F>, dim3(blocks), dim3(kWarps * 32), shared, stream, table);
}

template <class T, int M>
void launch(const ProductTable& table, int features, int blocks, size_t shared, cudaStream_t stream) {
  if constexpr (M == 1) {
    if (features == 2) return launch_with<T, M, 2>(table, blocks, shared, stream);
  }
  launch_with<T, M, 1>(table, blocks, shared, stream);
}

// How a launch's work is cut, so that each lane has all its loads in flight at once (at most
// kUnroll chunks of each of its rows) and the launch's blocks are all resident:
//   splits S (1..8) per product: warps sharing one output, each taking every S-th 32-chunk
//     stretch of K, for rows longer than 32 * kUnroll chunks. S changes the order of a sum, so
//     it depends on the product's K alone: a product sums alike in every launch it is part of
//     (staggered = sequential bit for bit);
//   features F (1..2) for the launch: outputs per warp, 2 (for one row) when its warps
//     would not fit in one wave (F changes no sum, only which warp computes it);
//   blocks: one per output group while they fit in one wave; beyond that (the output head)
//     each product gets a share of the resident blocks in proportion to its groups, and a
//     block loops over its groups, loading the next one's weights while it finishes one, so a
//     block computes its rows' rstd once and no wave waits for the one before.
// `chunks` = K / (values per 16-byte chunk), 0 when the product takes the scalar path.
int choose_splits(int64_t chunks) {
  int splits = 1;
  while (splits < kWarps && chunks >= 32 * 2 * splits &&
         (chunks + 32 * splits - 1) / (32 * splits) > kUnroll)
    splits *= 2;
  return splits;
}

}  // namespace

void linear_small_many(DType dtype, const SmallProduct* all_products, int all_count, cudaStream_t stream,
                       StepProgram* program) {
  // The large products stream (linear_stream.cu); the others stay here.
  std::vector<SmallProduct> streamed, kept;
  for (int i = 0; i < all_count; ++i)
    (linear_stream_suits(dtype, all_products[i]) ? streamed : kept).push_back(all_products[i]);
  if (!streamed.empty() &&
      !(program && program->add_stream(dtype, streamed.data(), static_cast<int>(streamed.size()), stream))) {
    if (program) program->flush(stream);  // (the stream keeps the order)
    linear_stream_many(dtype, streamed.data(), static_cast<int>(streamed.size()), stream);
  }
  const SmallProduct* products = kept.data();
  const int count = static_cast<int>(kept.size());
  const int64_t resident = static_cast<int64_t>(multiprocessor_count()) * kBlocksPerSm;  // blocks held at once
  for (int first = 0; first < count; first += kMaxSmallProducts) {
    ProductTable table{};
    table.count = std::min(kMaxSmallProducts, count - first);
    int rows = 1;
    int64_t warps = 0;  // with one output per warp
    for (int i = 0; i < table.count; ++i) {
      SmallProduct& p = table.products[i];
      p = products[first + i];
      const int64_t vector = 16 / static_cast<int64_t>(dtype_size(dtype));
      const auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
      p.vector_loads = p.k % vector == 0 && aligned(p.w) && aligned(p.x) &&
                       (p.norm == nullptr || aligned(p.norm)) && (p.gate == nullptr || aligned(p.gate));
      p.splits = p.vector_loads ? choose_splits(p.k / vector) : 1;
      warps += p.n * p.splits;
      rows = std::max<int>(rows, static_cast<int>(p.m));
    }
    // (A step program runs one output per warp: its kernel holds one product variant, see
    // step_program.cu. F changes no sum, so the results are the same.)
    const bool programmed = program && program->collecting();
    const int features = !programmed && rows == 1 && warps > resident * kWarps ? 2 : 1;
    int64_t groups[kMaxSmallProducts], total_groups = 0;
    for (int i = 0; i < table.count; ++i) {
      const int64_t outputs_per_group = kWarps / table.products[i].splits * features;
      groups[i] = (table.products[i].n + outputs_per_group - 1) / outputs_per_group;
      total_groups += groups[i];
    }
    int blocks = 0;
    for (int i = 0; i < table.count; ++i) {
      table.first_block[i] = blocks;
      blocks += static_cast<int>(total_groups <= resident
                                     ? groups[i]
                                     : std::clamp<int64_t>(groups[i] * resident / total_groups, 1, groups[i]));
    }
    table.first_block[table.count] = blocks;
    if (blocks == 0) continue;
    size_t shared = 0;  // the largest staged input
    for (int i = 0; i < table.count; ++i) {
      const SmallProduct& p = table.products[i];
      if (small::is_staged(p, dtype_size(dtype))) shared = std::max<size_t>(shared, p.m * p.k * dtype_size(dtype));
    }
    const int bucket = small::row_bucket(rows);
    if (program && program->add_small(dtype, table, bucket, features, blocks, shared, stream)) continue;
    small::launch_table(dtype, table, bucket, features, blocks, shared, stream);
  }
}

namespace small {

void launch_table(DType dtype, const ProductTable& table, int rows, int features, int blocks,
                  size_t shared, cudaStream_t stream) {
  SF_DISPATCH_FLOAT(dtype, T, {
    if (rows <= 1) launch<T, 1>(table, features, blocks, shared, stream);
    else if (rows <= 2) launch<T, 2>(table, features, blocks, shared, stream);
    else if (rows <= 4) launch<T, 4>(table, features, blocks, shared, stream);
    else launch<T, 8>(table, features, blocks, shared, stream);
  });
  SF_CUDA_LAUNCH_CHECK("linear_small");
}

}  // namespace small

}  // namespace sf::cuda
