// bulk_copy.cuh — the bulk-copy engine's stages (sm_90): a shared-memory buffer filled by
// cp.async.bulk from global memory, its completion signalled by an mbarrier's transaction count.
// The protocol: one thread initialises each stage's barrier (barrier_init, then one
// barrier_init_fence before any use), announces a fill's bytes and starts its copy
// (copy_to_stage); every thread that reads the stage first waits for that fill's phase by
// parity (barrier_done: fill f of a stage completes phase f, parity f & 1). A stage is refilled
// only after every reader is done with it (a block barrier). Used by linear_stream.cu and by
// bench/cuda/stream_program_bench.cu.
#pragma once

#include <cstdint>

namespace sf::cuda {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(uint64_t* barrier) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(barrier)) : "memory");
}
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}
__device__ __forceinline__ void copy_to_stage(void* stage, const void* source, uint32_t bytes,
                                              uint64_t* barrier) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(barrier)),
               "r"(bytes)
               : "memory");
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          shared_address(stage)),
      "l"(source), "r"(bytes), "r"(shared_address(barrier))
      : "memory");
}
__device__ __forceinline__ bool barrier_done(uint64_t* barrier, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n"
      ".reg .pred complete;\n"
      "mbarrier.try_wait.parity.shared::cta.b64 complete, [%1], %2;\n"
      "selp.u32 %0, 1, 0, complete;\n"
      "}"
      : "=r"(done)
      : "r"(shared_address(barrier)), "r"(parity)
      : "memory");
  return done != 0;
}

}  // namespace sf::cuda
