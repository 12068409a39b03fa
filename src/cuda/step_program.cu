// step_program.cu — the persistent decode-step kernel and its host side (step_program.h says
// why and how it is used).
//
// The kernel: kProgramBlocksPerSm blocks of kProgramThreads threads per multiprocessor, all
// resident, run the program's instructions in order. Instruction i's virtual blocks (the blocks
// its own launch would have had) are dealt to the CUDA blocks in turn: a small product's block
// takes a whole CUDA block (linear_small_block), an attention step's block half of one
// (attention_step_block, 128 threads; the halves synchronise with named barriers 1 and 2).
// After its share of instruction i a block arrives at counter i (a fence, then an atomic add);
// a virtual block of instruction i waits, once its weights are requested, until counter i - 1
// has every block (thread 0 spins on relaxed loads, then a fence and the block's barrier). Instruction 0
// waits for the kernel before the program (a dependent launch) instead. The last block to
// leave resets the counters for the next replay.
//
// Deadlock freedom: a spinning block waits only for blocks that are resident (and a wait of
// more than 10 s traps: an error, never a hang). The grid is at
// most what the occupancy calculator says fits at once, the kernel before it (a dependent
// launch) finishes without waiting for the program, and the program lets the kernel after it
// start only in its last instruction, after every block has arrived at least once. The device
// is not shared with another process's kernels at the same time (separate processes time-slice,
// they do not share multiprocessors; MPS is not supported).
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "cuda/attention_step.cuh"
#include "cuda/cuda_check.h"
#include "cuda/linear_small.cuh"
#include "cuda/step_program.h"

namespace sf::cuda {

namespace {

constexpr int kProgramThreads = small::kWarps * 32;
static_assert(kProgramThreads == 2 * step::kStepThreads, "two attention blocks per CUDA block");
constexpr int kProgramBlocksPerSm = small::kBlocksPerSm;

enum InstructionKind : int { kSmallProducts = 0, kAttentionStep = 1 };

struct Instruction {
  int kind;
  int blocks;    // virtual blocks
  int grid_x;    // attention: blocks = grid_x * grid_y
  int grid_y;
  int index;     // into the tables or the attention arguments
};

// An instruction as the kernel reads it: its header, then its product table or attention
// arguments, kRecordBytes apart. A block copies the next record into shared memory (cp.async)
// while it works on the current one: read from global memory, its fields had been a chain of
// dependent loads (header, table, the block's product, then its weights) of an L2 or HBM
// latency each before any weight was requested, where a kernel's parameters are at hand.
constexpr size_t kHeaderBytes = (sizeof(Instruction) + 15) / 16 * 16;
constexpr size_t kPayloadBytes = sizeof(small::ProductTable) > sizeof(step::AttentionStepArgs)
                                     ? sizeof(small::ProductTable)
                                     : sizeof(step::AttentionStepArgs);
constexpr size_t kRecordBytes = (kHeaderBytes + kPayloadBytes + 15) / 16 * 16;

struct ProgramView {
  const unsigned char* records;  // count records
  unsigned* counters;            // count + 1 (the last one counts the blocks that left)
  int count;
  bool sc_fences;  // SF_STEP_PROGRAM_FENCE=sc: fence.sc (__threadfence) instead of fence.acq_rel
};

// The fence of the arrival (before the count's add: release) and of the wait (after the spin
// saw the count: acquire). fence.acq_rel is what PTX's release and acquire patterns need;
// fence.sc (__threadfence) is stronger and slower, kept as the A/B alternative.
__device__ __forceinline__ void program_fence(const ProgramView& program) {
  if (program.sc_fences) __threadfence();
  else asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

// Record i into shared memory, 16 bytes a thread, asynchronously (cp.async; waited for by
// records_ready()).
__device__ __forceinline__ void fetch_record(const ProgramView& program, int i, unsigned char* to) {
  const unsigned char* from = program.records + static_cast<size_t>(i) * kRecordBytes;
  for (size_t at = threadIdx.x * 16; at < kRecordBytes; at += blockDim.x * 16) {
    const unsigned shared = static_cast<unsigned>(__cvta_generic_to_shared(to + at));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared), "l"(from + at) : "memory");
  }
  asm volatile("cp.async.commit_group;" ::: "memory");
}
// Waits for the records fetched but the newest `pending` (0 or 1), then the block's barrier.
template <int pending>
__device__ __forceinline__ void records_ready() {
  asm volatile("cp.async.wait_group %0;" ::"n"(pending) : "memory");
  __syncthreads();
}

__device__ __forceinline__ unsigned load_relaxed(const unsigned* p) {
  unsigned value;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(value) : "l"(p) : "memory");
  return value;
}

// Spins (one thread) until counter `i - 1` holds every block: instruction i's inputs are
// written. Relaxed loads while spinning, then one fence: the acquire side of the arrivals'
// fence-then-add (the fence also keeps the block's later loads from reading stale lines).
// A wait longer than kMaxWaitNs means a block never arrives (a bug, or a block that could not
// become resident): the kernel traps, and the step fails with a launch error instead of hanging.
constexpr unsigned long long kMaxWaitNs = 10ull * 1000 * 1000 * 1000;

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void wait_for_instruction(const ProgramView& program, int i) {
  const unsigned* counter = program.counters + (i - 1);
  if (load_relaxed(counter) < gridDim.x) {
    const unsigned long long start = global_ns();
    while (load_relaxed(counter) < gridDim.x)
      if (global_ns() - start > kMaxWaitNs) __trap();
  }
  program_fence(program);
}

// The wait of a virtual block of instruction i on a whole CUDA block.
struct ProgramBlock {
  const ProgramView* program;
  int instruction;
  __device__ void wait() const {
    if (instruction == 0) return dependency_wait();
    if (threadIdx.x == 0) wait_for_instruction(*program, instruction);
    __syncthreads();
  }
};

// The same for an attention block on half a CUDA block.
struct ProgramHalfBlock {
  const ProgramView* program;
  int instruction;
  int half;
  __device__ int thread() const { return threadIdx.x - half * step::kStepThreads; }
  __device__ void sync() const {
    asm volatile("bar.sync %0, %1;" ::"r"(1 + half), "r"(step::kStepThreads) : "memory");
  }
  __device__ void wait() const {
    if (instruction == 0) return dependency_wait();
    if (thread() == 0) wait_for_instruction(*program, instruction);
    sync();
  }
};

// T: the dtype; M: the small products' rows (1, 2, 4 or 8: one per program); CPL: the attention
// steps' pieces per lane. One kernel per combination, with one product variant in it (one
// output per warp): each variant is a function of 104-125 registers alone, and a program holding
// all five spilled 920 bytes a thread at its limit of 128 (bench/results/gpu-step-program-...).
template <class T, int M, int CPL>
__global__ void __launch_bounds__(kProgramThreads, kProgramBlocksPerSm)
    step_program_kernel(const ProgramView program) {
  __shared__ step::AttentionStepShared attention_shared[2];
  __shared__ __align__(16) unsigned char records[2][kRecordBytes];
  constexpr int kVector = 16 / sizeof(T);
  fetch_record(program, 0, records[0]);
  for (int i = 0; i < program.count; ++i) {
    // Record i is in records[i % 2]; record i + 1 goes to the other buffer, which the block
    // finished reading with instruction i - 1 (the barrier at its end).
    unsigned char* const record = records[i % 2];
    if (i + 1 < program.count) {
      fetch_record(program, i + 1, records[(i + 1) % 2]);
      records_ready<1>();
    } else {
      records_ready<0>();
    }
    const Instruction in = *reinterpret_cast<const Instruction*>(record);
    if (i == program.count - 1 && i > 0) {
      // Every block has arrived at least once, so all are resident: the kernel after the
      // program may be scheduled now (it waits for the program's end itself).
      if (threadIdx.x == 0) wait_for_instruction(program, i);
      __syncthreads();
      dependents_may_start();
    }
    if (in.kind == kSmallProducts) {
      const auto& table = *reinterpret_cast<const small::ProductTable*>(record + kHeaderBytes);
      const ProgramBlock ctx{&program, i};
      for (int b = blockIdx.x; b < in.blocks; b += gridDim.x) {
        small::linear_small_block<T, M, 1>(table, b, ctx);
        __syncthreads();  // (the block's shared memory is reused by its next virtual block)
      }
    } else {
      const int half = threadIdx.x / step::kStepThreads;
      const ProgramHalfBlock ctx{&program, i, half};
      const auto& args = *reinterpret_cast<const step::AttentionStepArgs*>(record + kHeaderBytes);
      for (int b = 2 * blockIdx.x + half; b < in.blocks; b += 2 * gridDim.x) {
        step::attention_step_block<T, kVector, CPL>(args, b % in.grid_x, b / in.grid_x, in.grid_y,
                                                    attention_shared[half], ctx);
        ctx.sync();
      }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      program_fence(program);  // the block's writes (ordered before by the barrier), then the count
      atomicAdd(program.counters + i, 1u);
    }
  }
  if (threadIdx.x == 0 && atomicAdd(program.counters + program.count, 1u) == gridDim.x - 1) {
    for (int i = 0; i <= program.count; ++i) program.counters[i] = 0;  // every block has left
  }
}

// The kernel for a dtype, the products' rows and the attention's pieces per lane (1 when the
// program has none). Programs take attention steps of 16-byte loads and one piece per lane in
// BF16 (head_dim up to 64), up to 2 in F32 (64): wider ones are launched on their own, as their
// registers (197 for 2 BF16 pieces) would spill in a program held to 128.
using ProgramKernel = void (*)(ProgramView);
int max_pieces(DType dtype) { return dtype == DType::bf16 ? 1 : 2; }
template <class T, int CPL>
ProgramKernel kernel_for_rows(int rows) {
  return rows <= 1   ? step_program_kernel<T, 1, CPL>
         : rows <= 2 ? step_program_kernel<T, 2, CPL>
         : rows <= 4 ? step_program_kernel<T, 4, CPL>
                     : step_program_kernel<T, 8, CPL>;
}
ProgramKernel kernel_for(DType dtype, int rows, int pieces) {
  if (dtype == DType::bf16) return kernel_for_rows<__nv_bfloat16, 1>(rows);
  return pieces <= 1 ? kernel_for_rows<float, 1>(rows) : kernel_for_rows<float, 2>(rows);
}

// CUDA blocks of the program kernel that are resident at once (0: it does not fit).
int resident_blocks(ProgramKernel kernel, size_t shared) {
  static const bool sized = [] {
    for (DType d : {DType::bf16, DType::f32})
      for (int rows : {1, 2, 4, 8})
        for (int pieces : {1, 2})
          SF_CUDA_CHECK(cudaFuncSetAttribute(kernel_for(d, rows, pieces),
                                             cudaFuncAttributeMaxDynamicSharedMemorySize,
                                             static_cast<int>(small::kMaxStagedBytes)));
    return true;
  }();
  (void)sized;
  int per_sm = 0;
  SF_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kProgramThreads, shared));
  return std::min(per_sm, kProgramBlocksPerSm) * multiprocessor_count();
}

std::atomic<int64_t> programs_launched_total{0};

}  // namespace

int64_t step_programs_launched() { return programs_launched_total.load(); }

bool step_programs_enabled() {
  static const bool enabled = [] {
    const char* flag = std::getenv("SF_STEP_PROGRAM");
    return flag && std::strcmp(flag, "1") == 0;
  }();
  return enabled;
}

struct StepProgram::Pending {
  DType dtype = DType::f32;
  int pieces = 0;  // the attention steps' pieces per lane (0: none yet)
  int program_rows = 0;  // the small products' rows (0: none yet)
  size_t shared = 0;
  std::vector<Instruction> instructions;
  std::vector<small::ProductTable> tables;
  std::vector<step::AttentionStepArgs> attention;
  // A lone instruction is launched as it is, with its own shared memory (its rows are
  // program_rows, one output per warp, and an attention step's loads are 16 bytes wide).
  std::vector<size_t> shared_of;
  void clear() {
    pieces = 0;
    program_rows = 0;
    shared = 0;
    instructions.clear();
    tables.clear();
    attention.clear();
    shared_of.clear();
  }
};

StepProgram::StepProgram() : pending_(std::make_unique<Pending>()) {}

StepProgram::~StepProgram() {
  free_buffers(buffers_);
}

void StepProgram::set_collecting(bool on) { collecting_ = on && step_programs_enabled(); }
bool StepProgram::collecting() const { return collecting_; }

bool StepProgram::add_small(DType dtype, const small::ProductTable& table, int rows, int features,
                            int blocks, size_t shared, cudaStream_t stream) {
  if (!collecting_ || features != 1) return false;  // (the launcher asks for 1 while collecting)
  Pending& p = *pending_;
  if (!p.instructions.empty() &&
      (p.dtype != dtype || (p.program_rows != 0 && p.program_rows != rows)))
    flush(stream);
  p.dtype = dtype;
  p.program_rows = rows;
  p.shared = std::max(p.shared, shared);
  p.instructions.push_back({kSmallProducts, blocks, 0, 0, static_cast<int>(p.tables.size())});
  p.tables.push_back(table);
  p.shared_of.push_back(shared);
  return true;
}

bool StepProgram::add_attention(DType dtype, const step::AttentionStepArgs& args, int grid_x,
                                int grid_y, int pieces_per_lane, bool vector, cudaStream_t stream) {
  if (!collecting_) return false;
  Pending& p = *pending_;
  if (!vector || pieces_per_lane > max_pieces(dtype)) {
    flush(stream);
    return false;
  }
  if (!p.instructions.empty() && (p.dtype != dtype || (p.pieces != 0 && p.pieces != pieces_per_lane)))
    flush(stream);
  p.dtype = dtype;
  p.pieces = pieces_per_lane;
  p.instructions.push_back({kAttentionStep, grid_x * grid_y, grid_x, grid_y,
                            static_cast<int>(p.attention.size())});
  p.attention.push_back(args);
  p.shared_of.push_back(0);
  return true;
}

void StepProgram::flush(cudaStream_t stream) {
  Pending& p = *pending_;
  if (p.instructions.empty()) return;
  const auto launch_alone = [&](size_t i) {
    const Instruction& in = p.instructions[i];
    if (in.kind == kSmallProducts)
      small::launch_table(p.dtype, p.tables[in.index], p.program_rows, 1, in.blocks, p.shared_of[i],
                          stream);
    else
      step::launch_attention(p.dtype, p.attention[in.index], in.grid_x, in.grid_y, p.pieces,
                             /*vector=*/true, stream);
  };
  const ProgramKernel kernel = kernel_for(p.dtype, std::max(p.program_rows, 1), std::max(p.pieces, 1));
  const int grid = p.instructions.size() > 1 ? resident_blocks(kernel, p.shared) : 0;
  if (grid == 0) {
    for (size_t i = 0; i < p.instructions.size(); ++i) launch_alone(i);
    p.clear();
    return;
  }
  // One allocation: the records, then the counters (zero). Copied now, outside the stream (a
  // recording must not capture a copy from host memory that is gone at replay); the program
  // never changes once launched.
  const size_t n = p.instructions.size();
  const size_t at_counters = n * kRecordBytes;
  const size_t bytes = at_counters + (n + 1) * sizeof(unsigned);
  std::vector<unsigned char> host(bytes, 0);
  for (size_t i = 0; i < n; ++i) {
    unsigned char* record = host.data() + i * kRecordBytes;
    const Instruction& in = p.instructions[i];
    std::memcpy(record, &in, sizeof(Instruction));
    if (in.kind == kSmallProducts)
      std::memcpy(record + kHeaderBytes, &p.tables[in.index], sizeof(small::ProductTable));
    else
      std::memcpy(record + kHeaderBytes, &p.attention[in.index], sizeof(step::AttentionStepArgs));
  }
  void* device = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&device, bytes));
  buffers_.push_back(device);
  SF_CUDA_CHECK(cudaMemcpy(device, host.data(), bytes, cudaMemcpyHostToDevice));
  auto* base = static_cast<unsigned char*>(device);
  static const bool sc_fences = [] {
    const char* flag = std::getenv("SF_STEP_PROGRAM_FENCE");
    return flag && std::strcmp(flag, "sc") == 0;
  }();
  const ProgramView view{base, reinterpret_cast<unsigned*>(base + at_counters), static_cast<int>(n),
                         sc_fences};
  launch_dependent(kernel, dim3(static_cast<unsigned>(grid)), dim3(kProgramThreads), p.shared,
                   stream, view);
  SF_CUDA_LAUNCH_CHECK("step_program");
  ++programs_launched_total;
  p.clear();
}

void StepProgram::discard() { pending_->clear(); }

std::vector<void*> StepProgram::take_buffers() {
  std::vector<void*> taken;
  taken.swap(buffers_);
  return taken;
}

void StepProgram::free_buffers(std::vector<void*>& buffers) {
  for (void* b : buffers) cudaFree(b);
  buffers.clear();
}

}  // namespace sf::cuda
