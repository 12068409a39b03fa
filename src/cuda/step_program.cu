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
#include "cuda/linear_stream.cuh"
#include "cuda/product_inputs.cuh"
#include "cuda/step_program.h"

namespace sf::cuda {

namespace {

constexpr int kProgramThreads = small::kWarps * 32;
static_assert(kProgramThreads == 2 * step::kStepThreads, "two attention blocks per CUDA block");
constexpr int kProgramBlocksPerSm = small::kBlocksPerSm;

enum InstructionKind : int { kSmallProducts = 0, kAttentionStep = 1, kStreamProducts = 2 };

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
constexpr size_t max_of(size_t a, size_t b) { return a > b ? a : b; }
constexpr size_t kPayloadBytes = max_of(max_of(sizeof(small::ProductTable), sizeof(step::AttentionStepArgs)),
                                        sizeof(stream::StreamTable));
constexpr size_t kRecordBytes = (kHeaderBytes + kPayloadBytes + 15) / 16 * 16;

// Streamed products (linear_stream.cuh) in a program: every block keeps kStreamDepth weight
// tiles in flight through shared memory, across the instructions' boundaries, in the order it
// will use them: its share of the tiles of each streamed instruction in turn, whatever runs in
// between. Only the arithmetic waits for the instruction before; the weights never depend on
// the step's data. Its thread 0 walks the program's streamed products (StreamStep, StreamDesc,
// copied into shared memory at the start) to know the next tile. bench/cuda/
// stream_program_bench.cu measured the idea: the 1B model's products at 76% of the peak
// bandwidth as one program against 61% as kernels.
constexpr int kStreamDepth = 3;
constexpr int kMaxStreamSteps = 128;  // streamed instructions in one program
constexpr int kMaxStreamDescs = 256;  // their products
struct StreamDesc {
  const void* w;
  int64_t n, k;
  int first_tile;  // within its instruction's tiles
  int pad;
};
struct StreamStep {
  int first_desc, count, tiles, pad;
};

struct ProgramView {
  const unsigned char* records;  // count records
  unsigned* counters;            // count + 1 (the last one counts the blocks that left)
  int count;
  bool sc_fences;  // SF_STEP_PROGRAM_FENCE=sc: fence.sc (__threadfence) instead of fence.acq_rel
  const StreamStep* steps;  // the streamed instructions, in order
  const StreamDesc* descs;
  int stream_steps, stream_descs;
  unsigned stage_offset;  // the tiles' stages in the dynamic shared memory (after the inputs x')
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
template <class T, int M, int CPL, bool Streams>
__global__ void __launch_bounds__(kProgramThreads, Streams ? 1 : kProgramBlocksPerSm)
    step_program_kernel(const ProgramView program) {
  __shared__ step::AttentionStepShared attention_shared[2];
  __shared__ __align__(16) unsigned char records[2][kRecordBytes];
  constexpr int kVector = 16 / sizeof(T);
  fetch_record(program, 0, records[0]);
  // Streamed products: the schedule, the stages and their barriers, the producer's position.
  extern __shared__ __align__(128) unsigned char program_dynamic[];
  __shared__ __align__(8) uint64_t full[kStreamDepth];
  __shared__ float stream_rstd[M];
  __shared__ float stream_partial[stream::kWarps][M];
  constexpr int64_t kStageElements = stream::kStageBytes / sizeof(T);
  T* const stages = reinterpret_cast<T*>(program_dynamic + program.stage_offset);
  T* const stream_xs = reinterpret_cast<T*>(program_dynamic);
  // (the schedule after the stages: the static shared memory is full)
  StreamStep* const steps = reinterpret_cast<StreamStep*>(program_dynamic + program.stage_offset +
                                                          kStreamDepth * stream::kStageBytes);
  StreamDesc* const descs = reinterpret_cast<StreamDesc*>(steps + program.stream_steps);
  if (Streams) {
    for (int d = threadIdx.x; d < program.stream_descs; d += blockDim.x) descs[d] = program.descs[d];
    for (int d = threadIdx.x; d < program.stream_steps; d += blockDim.x) steps[d] = program.steps[d];
    __syncthreads();
  }
  auto share = [&](int64_t tiles, int64_t& begin, int64_t& end) {  // this block's tiles
    begin = blockIdx.x * tiles / gridDim.x;
    end = (blockIdx.x + 1) * tiles / gridDim.x;
  };
  // The producer (thread 0): the next tile to fetch is tile `next_tile` of streamed
  // instruction `fetch_step` (product `fetch_desc`), its share ending at `next_end`.
  int fetch_step = 0, fetch_desc = 0, fetched = 0;
  int64_t next_tile = 0, next_end = 0;
  auto fetch_next = [&]() {
    while (fetch_step < program.stream_steps && next_tile >= next_end) {
      if (++fetch_step == program.stream_steps) return;
      share(steps[fetch_step].tiles, next_tile, next_end);
      fetch_desc = steps[fetch_step].first_desc;
    }
    if (fetch_step >= program.stream_steps) return;
    const StreamStep& st = steps[fetch_step];
    while (fetch_desc + 1 < st.first_desc + st.count && next_tile >= descs[fetch_desc + 1].first_tile) ++fetch_desc;
    const StreamDesc& d = descs[fetch_desc];
    const int s = fetched % kStreamDepth;
    stream::fetch_tile(d.w, d.n, d.k, next_tile - d.first_tile, stages + s * kStageElements, &full[s]);
    ++fetched;
    ++next_tile;
  };
  if (Streams && threadIdx.x == 0 && program.stream_steps > 0) {
    for (int s = 0; s < kStreamDepth; ++s) barrier_init(&full[s]);
    barrier_init_fence();
    share(steps[0].tiles, next_tile, next_end);
    fetch_desc = steps[0].first_desc;
    for (int s = 0; s < kStreamDepth; ++s) fetch_next();
  }
  __syncthreads();  // (the barriers exist before anyone waits on them)
  int consumed = 0;  // streamed tiles this block has used
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
    if (Streams && in.kind == kStreamProducts) {
      const auto& table = *reinterpret_cast<const stream::StreamTable*>(record + kHeaderBytes);
      int64_t begin, end;
      share(table.first_tile[table.count], begin, end);
      if (begin < end) {
        ProgramBlock{&program, i}.wait();
        int staged = -1, t = 0;  // the product whose inputs stream_xs holds; the tile's product
        for (int64_t tile = begin; tile < end; ++tile, ++consumed) {
          while (t + 1 < table.count && tile >= table.first_tile[t + 1]) ++t;
          const SmallProduct& p = table.products[t];
          if (t != staged) {
            stage_inputs<T>(p, stream_xs, stream_rstd);
            __syncthreads();
            staged = t;
          }
          const int s = consumed % kStreamDepth;
          while (!barrier_done(&full[s], static_cast<uint32_t>((consumed / kStreamDepth) & 1))) {
          }
          stream::stream_tile<T, M>(p, tile - table.first_tile[t], stages + s * kStageElements, stream_xs,
                                    stream_partial);
          __syncthreads();  // the stage is free: its next tile, whichever instruction's it is
          if (threadIdx.x == 0) fetch_next();
        }
      }
    } else if (in.kind == kSmallProducts) {
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

// The kernel for a dtype, the products' rows, the attention's pieces per lane (1 when the
// program has none) and whether the program streams products (its kernel, one block per
// multiprocessor, may then take 255 registers: the stream's tile work beside the others spilled
// at 128). Programs take attention steps of 16-byte loads and one piece per lane in
// BF16 (head_dim up to 64), up to 2 in F32 (64): wider ones are launched on their own, as their
// registers (197 for 2 BF16 pieces) would spill in a program held to 128.
using ProgramKernel = void (*)(ProgramView);
int max_pieces(DType dtype) { return dtype == DType::bf16 ? 1 : 2; }
template <class T, int CPL, bool S>
ProgramKernel kernel_for_rows(int rows) {
  return rows <= 1   ? step_program_kernel<T, 1, CPL, S>
         : rows <= 2 ? step_program_kernel<T, 2, CPL, S>
         : rows <= 4 ? step_program_kernel<T, 4, CPL, S>
                     : step_program_kernel<T, 8, CPL, S>;
}
template <bool S>
ProgramKernel kernel_for_streams(DType dtype, int rows, int pieces) {
  if (dtype == DType::bf16) return kernel_for_rows<__nv_bfloat16, 1, S>(rows);
  return pieces <= 1 ? kernel_for_rows<float, 1, S>(rows) : kernel_for_rows<float, 2, S>(rows);
}
ProgramKernel kernel_for(DType dtype, int rows, int pieces, bool streams) {
  return streams ? kernel_for_streams<true>(dtype, rows, pieces) : kernel_for_streams<false>(dtype, rows, pieces);
}

// CUDA blocks of the program kernel that are resident at once (0: it does not fit).
// The dynamic shared memory a program kernel may take: what the multiprocessor's 227 kB leave
// beside its static shared memory.
size_t max_dynamic_shared(ProgramKernel kernel) {
  cudaFuncAttributes attributes{};
  SF_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  return (size_t(227) << 10) - attributes.sharedSizeBytes;
}

int resident_blocks(ProgramKernel kernel, size_t shared) {
  static const bool sized = [] {
    for (DType d : {DType::bf16, DType::f32})
      for (int rows : {1, 2, 4, 8})
        for (int pieces : {1, 2})
          for (bool streams : {false, true}) {
            const ProgramKernel k = kernel_for(d, rows, pieces, streams);
            SF_CUDA_CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                               static_cast<int>(max_dynamic_shared(k))));
          }
    return true;
  }();
  (void)sized;
  if (shared > max_dynamic_shared(kernel)) return 0;
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
  std::vector<stream::StreamTable> streams;
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
    streams.clear();
    shared_of.clear();
  }
  int stream_descs() const {  // the streamed instructions' products
    int count = 0;
    for (const stream::StreamTable& t : streams) count += t.count;
    return count;
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

bool StepProgram::add_stream(DType dtype, const SmallProduct* products, int count, cudaStream_t stream) {
  if (!collecting_) return false;
  Pending& p = *pending_;
  int rows = 1;
  const std::vector<stream::StreamTable> tables = stream::make_tables(dtype, products, count, &rows);
  const int bucket = small::row_bucket(rows);
  int descs = 0;
  for (const stream::StreamTable& t : tables) descs += t.count;
  if (!p.instructions.empty() &&
      (p.dtype != dtype || (p.program_rows != 0 && p.program_rows != bucket) ||
       p.streams.size() + tables.size() > static_cast<size_t>(kMaxStreamSteps) ||
       p.stream_descs() + descs > kMaxStreamDescs))
    flush(stream);
  if (tables.size() > static_cast<size_t>(kMaxStreamSteps) || descs > kMaxStreamDescs) return false;
  p.dtype = dtype;
  p.program_rows = bucket;
  for (const stream::StreamTable& t : tables) {
    p.instructions.push_back({kStreamProducts, 0, 0, 0, static_cast<int>(p.streams.size())});
    p.streams.push_back(t);
    p.shared_of.push_back(0);
  }
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
    else if (in.kind == kStreamProducts)
      linear_stream_many(p.dtype, p.streams[in.index].products, p.streams[in.index].count, stream);
    else
      step::launch_attention(p.dtype, p.attention[in.index], in.grid_x, in.grid_y, p.pieces,
                             /*vector=*/true, stream);
  };
  const ProgramKernel kernel =
      kernel_for(p.dtype, std::max(p.program_rows, 1), std::max(p.pieces, 1), !p.streams.empty());
  // Dynamic shared memory: the inputs x' of a product (the small products' staged rows, or a
  // streamed product's rows of up to 12 kB), then the streamed tiles' stages.
  size_t stage_offset = p.shared, dynamic = p.shared;
  if (!p.streams.empty()) {
    stage_offset = std::max<size_t>(p.shared, size_t(std::max(p.program_rows, 1)) * stream::kMaxRowBytes);
    stage_offset = (stage_offset + 127) / 128 * 128;
    dynamic = stage_offset + size_t(kStreamDepth) * stream::kStageBytes +
              p.streams.size() * sizeof(StreamStep) + size_t(p.stream_descs()) * sizeof(StreamDesc);
  }
  const int grid = p.instructions.size() > 1 ? resident_blocks(kernel, dynamic) : 0;
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
  // The streamed instructions' schedule for the producers (16-byte aligned after the counters).
  std::vector<StreamStep> steps;
  std::vector<StreamDesc> descs;
  for (const stream::StreamTable& t : p.streams) {
    steps.push_back({static_cast<int>(descs.size()), t.count, t.first_tile[t.count], 0});
    for (int j = 0; j < t.count; ++j)
      descs.push_back({t.products[j].w, t.products[j].n, t.products[j].k, t.first_tile[j], 0});
  }
  const size_t at_steps = (at_counters + (n + 1) * sizeof(unsigned) + 15) / 16 * 16;
  const size_t at_descs = at_steps + steps.size() * sizeof(StreamStep);
  const size_t bytes = at_descs + descs.size() * sizeof(StreamDesc);
  std::vector<unsigned char> host(bytes, 0);
  for (size_t i = 0; i < n; ++i) {
    unsigned char* record = host.data() + i * kRecordBytes;
    const Instruction& in = p.instructions[i];
    std::memcpy(record, &in, sizeof(Instruction));
    if (in.kind == kSmallProducts)
      std::memcpy(record + kHeaderBytes, &p.tables[in.index], sizeof(small::ProductTable));
    else if (in.kind == kStreamProducts)
      std::memcpy(record + kHeaderBytes, &p.streams[in.index], sizeof(stream::StreamTable));
    else
      std::memcpy(record + kHeaderBytes, &p.attention[in.index], sizeof(step::AttentionStepArgs));
  }
  if (!steps.empty()) std::memcpy(host.data() + at_steps, steps.data(), steps.size() * sizeof(StreamStep));
  if (!descs.empty()) std::memcpy(host.data() + at_descs, descs.data(), descs.size() * sizeof(StreamDesc));
  void* device = nullptr;
  SF_CUDA_CHECK(cudaMalloc(&device, bytes));
  buffers_.push_back(device);
  SF_CUDA_CHECK(cudaMemcpy(device, host.data(), bytes, cudaMemcpyHostToDevice));
  auto* base = static_cast<unsigned char*>(device);
  static const bool sc_fences = [] {
    const char* flag = std::getenv("SF_STEP_PROGRAM_FENCE");
    return flag && std::strcmp(flag, "sc") == 0;
  }();
  const ProgramView view{base,
                         reinterpret_cast<unsigned*>(base + at_counters),
                         static_cast<int>(n),
                         sc_fences,
                         reinterpret_cast<const StreamStep*>(base + at_steps),
                         reinterpret_cast<const StreamDesc*>(base + at_descs),
                         static_cast<int>(steps.size()),
                         static_cast<int>(descs.size()),
                         static_cast<unsigned>(stage_offset)};
  launch_dependent(kernel, dim3(static_cast<unsigned>(grid)), dim3(kProgramThreads), dynamic, stream,
                   view);
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
