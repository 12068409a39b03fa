// wgmma.cuh — Hopper's asynchronous tensor-core and copy-engine primitives that the attention
// backward uses: warpgroup matrix products (wgmma, sm_90a only) with their shared-memory matrix
// descriptors, fences and waits, the m64nNk16 bf16 products (fp32 accumulators); and the bulk
// fp32 reduction from shared to global memory (sf::cuda::bulk).
//
// A warpgroup is 4 consecutive warps starting at a warp index divisible by 4. An m64nN product's
// fp32 accumulator is spread like mma.sync's m16n8 C fragments: warp w of the group holds rows
// 16w .. 16w + 15, and thread (g = lane / 4, c = lane % 4) holds, for each 8-column tile j,
// d[4j .. 4j + 3] = (row g, columns 8j + 2c, 8j + 2c + 1), (row g + 8, the same columns). The
// register A operand is the m16n8k16 A fragment of the warp's 16 rows (attention::accumulators_to_a
// turns two accumulator tiles into one).
//
// Shared-memory operands are tiles in the canonical swizzled layouts: rows of 128 bytes with
// their 16-byte chunks XOR-ed by (row % 8) (128-byte swizzle, attention::swizzled<64> for bf16),
// or rows of 64 bytes with chunks XOR-ed by ((row / 2) % 4) (64-byte swizzle); tiles start on
// 1024 bytes. "K-major" operands have the contraction index along the row (A: M rows, B: N
// rows), "MN-major" (transposed) ones have it across rows (rows of K, M or N along the row).
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace sf::cuda::wgmma {

enum class Swizzle : uint64_t { k128B = 1, k64B = 2 };

// The 64-bit shared-memory matrix descriptor: start address, leading- and stride-dimension byte
// offsets (16-byte units), swizzle mode; base offset 0 (tiles start on a swizzle-pattern
// boundary). Stride: bytes between groups of 8 rows. Leading: for MN-major operands the bytes
// between swizzle-width column blocks (unused while a product's M or N fits in one); ignored
// for swizzled K-major ones.
__device__ __forceinline__ uint64_t descriptor(uint32_t smem_address, uint32_t leading_bytes,
                                               uint32_t stride_bytes, Swizzle swizzle) {
  return static_cast<uint64_t>((smem_address & 0x3FFFF) >> 4) |
         static_cast<uint64_t>((leading_bytes >> 4) & 0x3FFF) << 16 |
         static_cast<uint64_t>((stride_bytes >> 4) & 0x3FFF) << 32 |
         static_cast<uint64_t>(swizzle) << 62;
}

// Descriptors of the tiles the attention kernels use: rows of 64 bf16 (128 bytes), 128-byte
// swizzled, 8-row groups 1024 bytes apart. K-major: a k-step of 16 elements is 32 bytes along
// the row. MN-major (the same tile read transposed): the contraction runs down the rows, a k-step
// is 16 rows (2048 bytes); the leading offset is set equal to the stride, as M or N is one swizzle
// width (64 elements) and it is not used.
__device__ __forceinline__ uint64_t k_major_rows64(uint32_t tile, int k_step) {
  return descriptor(tile + 32 * k_step, 0, 1024, Swizzle::k128B);
}
__device__ __forceinline__ uint64_t mn_major_rows64(uint32_t tile, int k_step) {
  return descriptor(tile + 2048 * k_step, 1024, 1024, Swizzle::k128B);
}

// Bytes from dynamic shared memory `smem` up to the 1024-byte boundary the 128-byte swizzle
// pattern repeats on (a kernel asks for kSharedAlign bytes more than its tiles need). Kernels
// add it to their own __shared__ array themselves: with the aligned pointer returned from a
// helper instead, nvcc 13.0 gave the backward kernel 24 bytes of spills.
constexpr int kSharedAlign = 1024;
__device__ __forceinline__ uint32_t shared_align_padding(const void* smem) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  return (kSharedAlign - (address & (kSharedAlign - 1))) & (kSharedAlign - 1);
}

// An m64n64 fp32 accumulator (keys or queries 0 .. 63 as its columns) as the bf16 register A
// operands of four k-steps: step kk covers columns 16 kk .. 16 kk + 15, its register r holds row
// g + 8 (r % 2), columns 16 kk + 8 (r / 2) + 2c, + 1 (the m16n8k16 A fragment).
__device__ __forceinline__ void a_fragments(uint32_t (&a)[4][4], const float (&d)[32]) {
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      __nv_bfloat162 v = __floats2bfloat162_rn(d[8 * kk + 2 * r], d[8 * kk + 2 * r + 1]);
      a[kk][r] = *reinterpret_cast<uint32_t*>(&v);
    }
}

// Before the first product of a sequence and whenever ordinary code touched registers that a
// product reads or writes.
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most kPending committed groups are still running.
template <int kPending>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Makes this thread's ordinary shared-memory writes (stores, cp.async) visible to the tensor
// cores' reads (the async proxy); a barrier must follow before another thread's product reads.
__device__ __forceinline__ void fence_shared_for_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Pins registers that an asynchronous product reads or writes: the compiler may neither move
// them across this point nor reuse them before it (call after the wait that completes it).
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// The 32 accumulator operands %0 .. %31 of an m64n64 product, as the asm text lists them.
#define SF_WGMMA_D32                                                                   \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, " \
  "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define SF_WGMMA_D32_OPERANDS(d)                                                       \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),      \
      "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),           \
      "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]),        \
      "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),        \
      "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]),        \
      "+f"(d[31])

// D (64 x 64) (+)= A (64 x 16, shared memory) * B (16 x 64, shared memory); kTranspose*: 1
// reads that operand MN-major.
template <int kTransposeA, int kTransposeB>
__device__ __forceinline__ void mma_m64n64k16_ss(float (&d)[32], uint64_t a, uint64_t b,
                                                 bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " SF_WGMMA_D32
      ", %32, %33, p, 1, 1, %35, %36;\n}\n"
      : SF_WGMMA_D32_OPERANDS(d)
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(kTransposeA), "n"(kTransposeB));
}

// D (64 x 64) (+)= A (64 x 16, registers: the m16n8k16 A fragment of the thread's warp rows)
// * B (16 x 64, shared memory).
template <int kTransposeB>
__device__ __forceinline__ void mma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4],
                                                 uint64_t b, bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " SF_WGMMA_D32
      ", {%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"
      : SF_WGMMA_D32_OPERANDS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)),
        "n"(kTransposeB));
}

#undef SF_WGMMA_D32
#undef SF_WGMMA_D32_OPERANDS

}  // namespace sf::cuda::wgmma

// The copy engine's bulk reduction (plain sm_90): adds `bytes` (a multiple of 16) of fp32 from
// shared memory to global memory, asynchronously, issued by one thread. Ordinary shared-memory
// writes of the source need wgmma::fence_shared_for_async() and a barrier first; the source may
// be overwritten once wait_reads() returned in the issuing thread.
namespace sf::cuda::bulk {

__device__ __forceinline__ void reduce_add_f32(float* global, uint32_t smem_address,
                                               uint32_t bytes) {
  asm volatile(
      "cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(global),
      "r"(smem_address), "r"(bytes)
      : "memory");
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
}
// Until this thread's bulk operations have read their sources.
__device__ __forceinline__ void wait_reads() {
  asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
}
// Until this thread's bulk operations are complete.
__device__ __forceinline__ void wait_all() {
  asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
}

}  // namespace sf::cuda::bulk
