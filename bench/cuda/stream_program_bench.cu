// stream_program_bench.cu — a prototype, measured before it is built into the decoder: a decode
// step's chain of matrix-vector products as ONE persistent kernel whose blocks stream their
// weights through shared memory without ever waiting for the chain.
//
// Why: at batch 1 a product's weights never depend on the step's data, only its input x does.
// Today every product is a launch (linear_small.cu, linear_stream.cu) and its weights are
// requested only once its launch runs, so each of the ~60 products of a 12-layer d768 step
// pays a launch's latency for 0.4-2 us of bytes (bench/results/gpu-decode-kernels-*.md). Here
// each block (one per multiprocessor) knows the whole sequence of weight tiles it will use, in
// every product of the chain, and keeps `stages` bulk copies (cp.async.bulk) in flight through
// the chain's boundaries; only the arithmetic waits, at a grid-wide count per product, for the
// previous product's output. If the weights' stream is never interrupted, a step costs
// max(bytes / bandwidth, products x the chain's latency per product) instead of their sum.
//
// What runs: the products of `layers` layers of a model of width d (q/k/v, out, w1/w3, w2, each
// reading the previous product's output, as a layer's chain does, attention left out) and the
// output head, at one row, BF16, fp32 sums. Three measurements per model, in one run:
//   * program: the chain as one persistent kernel (cooperative launch: all blocks resident);
//   * kernels: the same products as the decoder launches them today (cuda::linear_small_many,
//     one launch each, recorded in a CUDA graph, dependent launches);
//   * latency: a chain of tiny products (one row per block, K = 64) as one program: what a
//     product costs the program beyond its bytes (the count, the fence, x from L2).
// After the timed replays, one more pass runs over poisoned outputs (NaN) and each of its
// products is checked against a plain kernel run on the inputs it read (relative error < 1e-2
// of the output's norm): a block that read x before it was complete would fail it. Weights cycle through enough copies (>= 256 MB) to come from HBM.
//   .devbin/stream_program_bench [stages, default 6]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "cuda/bulk_copy.cuh"
#include "cuda/device_common.cuh"
#include "cuda/kernels.h"

namespace {

using bench::check;
using T = __nv_bfloat16;
using sf::cuda::barrier_done;
using sf::cuda::barrier_init;
using sf::cuda::barrier_init_fence;
using sf::cuda::copy_to_stage;
using sf::cuda::from_float;
using sf::cuda::to_float;
using sf::cuda::warp_sum;

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int kStageBytes = 32 << 10;
constexpr int kMaxK = 6144;           // x staged in shared memory (12 kB)
constexpr int kMaxInstructions = 256;

struct Instruction {
  const T* w;  // [n, k]
  const T* x;  // [k], written by an earlier instruction (or before the kernel)
  T* out;      // [n]
  int n, k, rows_per_tile, tiles;
};

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Block b's tiles of an instruction: a contiguous share of them.
__device__ __forceinline__ int tile_begin(const Instruction& in, int b) {
  return static_cast<int>(static_cast<int64_t>(b) * in.tiles / gridDim.x);
}

template <int Stages>
__global__ void __launch_bounds__(kThreads, 1)
    stream_program(const Instruction* instructions, int count, unsigned* counters, unsigned epoch) {
  extern __shared__ __align__(128) unsigned char shared[];
  T* const stages = reinterpret_cast<T*>(shared);
  __shared__ __align__(16) T xs[kMaxK];
  __shared__ __align__(8) uint64_t full[Stages];
  __shared__ Instruction program[kMaxInstructions];
  __shared__ float partial[kWarps];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, b = blockIdx.x;
  for (int i = threadIdx.x; i < count; i += blockDim.x) program[i] = instructions[i];
  // The producer (thread 0): the next tile to fetch, as (instruction, tile), across instructions.
  int fetch_i = 0, fetch_t = 0, fetched = 0;
  auto next_fetch = [&]() -> bool {  // moves fetch_i/fetch_t to a tile of this block, if any
    while (fetch_i < count) {
      const Instruction& in = program[fetch_i];
      if (fetch_t < tile_begin(in, b)) fetch_t = tile_begin(in, b);
      if (fetch_t < tile_begin(in, b + 1)) return true;
      ++fetch_i;
      fetch_t = 0;
    }
    return false;
  };
  auto fetch = [&]() {
    if (!next_fetch()) return;
    const Instruction& in = program[fetch_i];
    const int row0 = fetch_t * in.rows_per_tile, rows = min(in.rows_per_tile, in.n - row0);
    const int s = fetched % Stages;
    copy_to_stage(stages + s * (kStageBytes / sizeof(T)), in.w + static_cast<int64_t>(row0) * in.k,
                  static_cast<uint32_t>(rows * in.k * sizeof(T)), &full[s]);
    ++fetched;
    ++fetch_t;
  };
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int s = 0; s < Stages; ++s) barrier_init(&full[s]);
    barrier_init_fence();
    for (int s = 0; s < Stages; ++s) fetch();
  }
  __syncthreads();
  const unsigned target = epoch * gridDim.x;  // counts never reset: each launch adds gridDim.x
  int consumed = 0;
  for (int i = 0; i < count; ++i) {
    const Instruction& in = program[i];
    const int t0 = tile_begin(in, b), t1 = tile_begin(in, b + 1);
    if (t0 < t1) {
      if (i > 0) {  // x is the output of an earlier instruction: wait for every block's share
        if (threadIdx.x == 0)
          while (load_acquire(counters + i - 1) < target) {
          }
        __syncthreads();
      }
      for (int c = threadIdx.x; c < in.k / 8; c += blockDim.x)  // (L2, not a stale L1 line)
        reinterpret_cast<uint4*>(xs)[c] = __ldcg(reinterpret_cast<const uint4*>(in.x) + c);
      __syncthreads();
    }
    const int R = in.rows_per_tile;
    const int warps_per_row = R >= kWarps ? 1 : kWarps / R, rows_per_warp = R >= kWarps ? R / kWarps : 1;
    const int share = warp % warps_per_row, chunks = in.k / 8;
    for (int t = t0; t < t1; ++t, ++consumed) {
      const int s = consumed % Stages;
      while (!barrier_done(&full[s], static_cast<uint32_t>((consumed / Stages) & 1))) {
      }
      const T* stage = stages + s * (kStageBytes / sizeof(T));
      const int row0 = t * R;
      for (int r = 0; r < rows_per_warp; ++r) {
        const int row = R >= kWarps ? warp * rows_per_warp + r : warp / warps_per_row;
        const bool here = row0 + row < in.n;
        float acc = 0.f;
        if (here) {
#pragma unroll 4
          for (int c = lane + 32 * share; c < chunks; c += 32 * warps_per_row) {
            const uint4 wv = *reinterpret_cast<const uint4*>(stage + row * in.k + c * 8);
            const uint4 xv = *reinterpret_cast<const uint4*>(xs + c * 8);
            const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
            const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float2 wf = __bfloat1622float2(w2[e]), xf = __bfloat1622float2(x2[e]);
              acc = fmaf(wf.x, xf.x, acc);
              acc = fmaf(wf.y, xf.y, acc);
            }
          }
        }
        acc = warp_sum(acc);
        if (warps_per_row > 1) {
          if (lane == 0) partial[warp] = acc;
          __syncthreads();
          if (share == 0)
            for (int o = 1; o < warps_per_row; ++o) acc += partial[warp + o];
          __syncthreads();
        }
        if (here && lane == 0 && share == 0) in.out[row0 + row] = from_float<T>(acc);
      }
      __syncthreads();  // stage s is free
      if (threadIdx.x == 0) fetch();
    }
    if (threadIdx.x == 0) {
      __threadfence();  // this block's outputs, then its count
      atomicAdd(counters + i, 1u);
    }
  }
}

// One plain block per output: the reference each product of the program is checked against.
__global__ void plain_product(const T* w, const T* x, T* out, int n, int k) {
  const int row = blockIdx.x;
  float acc = 0.f;
  for (int c = threadIdx.x; c < k; c += blockDim.x)
    acc += to_float(w[static_cast<int64_t>(row) * k + c]) * to_float(x[c]);
  __shared__ float sums[32];
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) sums[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.f;
    for (int i = 0; i < static_cast<int>(blockDim.x) / 32; ++i) total += sums[i];
    out[row] = from_float<T>(total);
  }
}

struct Product {
  int n, k;
};

// The chain: per layer q/k/v (one product of q + 2 kv outputs), out, w1/w3, w2; then the head.
std::vector<Product> model_chain(int layers, int d, int kv, int f, int vocab) {
  std::vector<Product> chain;
  for (int l = 0; l < layers; ++l) {
    chain.push_back({d + 2 * kv, d});
    chain.push_back({d, d});
    chain.push_back({2 * f, d});
    chain.push_back({d, f});
  }
  chain.push_back({vocab, d});
  return chain;
}

// Rows per tile: the most (<= 16, a power of two) that fit a stage, fewer while the product
// would leave blocks without a tile.
int rows_per_tile(const Product& p, int blocks) {
  int r = 16;
  while (r > 1 && r * p.k * static_cast<int>(sizeof(T)) > kStageBytes) r /= 2;
  while (r > 1 && (p.n + r - 1) / r < blocks) r /= 2;
  return r;
}

struct Chain {
  std::vector<std::vector<Instruction>> copies;  // instructions per weight copy
  std::vector<void*> owned;
  int64_t bytes = 0;  // weight bytes of one pass
};

Chain make_chain(const std::vector<Product>& products, int blocks, std::mt19937& rng) {
  Chain c;
  for (const Product& p : products) c.bytes += int64_t(p.n) * p.k * sizeof(T);
  const int copies = static_cast<int>(std::clamp<int64_t>((int64_t(256) << 20) / c.bytes + 1, 2, 64));
  std::vector<T*> first;
  for (const Product& p : products) {
    T* w = bench::device_random(size_t(p.n) * p.k, rng, 1.f / std::sqrt(float(p.k)));
    first.push_back(w);
    c.owned.push_back(w);
  }
  // Activations: one buffer per product's output; the first product reads `input`.
  T* input = bench::device_random(size_t(kMaxK), rng, 1.f);
  c.owned.push_back(input);
  std::vector<T*> outs;
  for (const Product& p : products) {
    T* o = bench::device_random(size_t(p.n), rng, 1.f);
    outs.push_back(o);
    c.owned.push_back(o);
  }
  for (int copy = 0; copy < copies; ++copy) {
    std::vector<Instruction> program;
    for (size_t i = 0; i < products.size(); ++i) {
      const Product& p = products[i];
      T* w = first[i];
      if (copy > 0) {
        check(cudaMalloc(&w, size_t(p.n) * p.k * sizeof(T)), "malloc");
        check(cudaMemcpy(w, first[i], size_t(p.n) * p.k * sizeof(T), cudaMemcpyDeviceToDevice), "copy");
        c.owned.push_back(w);
      }
      Instruction in{};
      in.w = w;
      in.x = i == 0 ? input : outs[i - 1];
      in.out = outs[i];
      in.n = p.n;
      in.k = p.k;
      in.rows_per_tile = rows_per_tile(p, blocks);
      in.tiles = (p.n + in.rows_per_tile - 1) / in.rows_per_tile;
      program.push_back(in);
    }
    c.copies.push_back(program);
  }
  return c;
}

struct ProgramResult {
  double us;      // per pass (one launch), best of the replays
  double worst;   // the largest relative error of a product against plain_product
};

template <int Stages>
ProgramResult run_program(const Chain& c, int blocks, cudaStream_t stream) {
  const int count = static_cast<int>(c.copies[0].size());
  const size_t shared = size_t(Stages) * kStageBytes;
  check(cudaFuncSetAttribute(stream_program<Stages>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(shared)),
        "shared memory");
  std::vector<Instruction*> device_programs;
  for (const auto& program : c.copies) {
    Instruction* d;
    check(cudaMalloc(&d, program.size() * sizeof(Instruction)), "malloc");
    check(cudaMemcpy(d, program.data(), program.size() * sizeof(Instruction), cudaMemcpyHostToDevice), "upload");
    device_programs.push_back(d);
  }
  unsigned* counters;
  check(cudaMalloc(&counters, count * sizeof(unsigned)), "malloc");
  check(cudaMemset(counters, 0, count * sizeof(unsigned)), "memset");
  unsigned epoch = 0;
  auto launch = [&](size_t copy) {
    ++epoch;
    const Instruction* program = device_programs[copy];
    void* args[] = {(void*)&program, (void*)&count, (void*)&counters, (void*)&epoch};
    check(cudaLaunchCooperativeKernel(reinterpret_cast<void*>(stream_program<Stages>), dim3(blocks),
                                      dim3(kThreads), args, shared, stream),
          "cooperative launch");
  };
  const size_t copies = c.copies.size();
  for (size_t i = 0; i < copies; ++i) launch(i);  // warm-up
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "event");
  check(cudaEventCreate(&stop), "event");
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    check(cudaEventRecord(start, stream), "record");
    for (size_t i = 0; i < copies; ++i) launch(i);
    check(cudaEventRecord(stop, stream), "record");
    check(cudaEventSynchronize(stop), "sync");
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, start, stop), "elapsed");
    best = std::min(best, 1000.0 * ms / copies);
  }
  // The checked pass: every output first poisoned (all bits set: a bf16 NaN), so a block that
  // read an input before its producers wrote it shows (every pass computes the same values, so
  // a stale input of an earlier pass would not); then each product against the plain kernel on
  // what it read.
  const std::vector<Instruction>& last = c.copies[copies - 1];
  for (const Instruction& in : last)
    check(cudaMemsetAsync(in.out, 0xff, size_t(in.n) * sizeof(T), stream), "poison");
  launch(copies - 1);
  check(cudaStreamSynchronize(stream), "checked pass");
  double worst = 0.0;
  for (const Instruction& in : last) {
    T* want;
    check(cudaMalloc(&want, size_t(in.n) * sizeof(T)), "malloc");
    plain_product<<<in.n, 256, 0, stream>>>(in.w, in.x, want, in.n, in.k);
    // (the stream does not wait for the legacy default stream's copies, nor they for it)
    check(cudaStreamSynchronize(stream), "reference");
    std::vector<T> got_host(in.n), want_host(in.n);
    check(cudaMemcpy(got_host.data(), in.out, in.n * sizeof(T), cudaMemcpyDeviceToHost), "read");
    check(cudaMemcpy(want_host.data(), want, in.n * sizeof(T), cudaMemcpyDeviceToHost), "read");
    double diff = 0.0, norm = 0.0;
    for (int i = 0; i < in.n; ++i) {
      const double g = __bfloat162float(got_host[i]), w = __bfloat162float(want_host[i]);
      diff += (g - w) * (g - w);
      norm += w * w;
    }
    double error = std::sqrt(diff / std::max(norm, 1e-30));
    if (!std::isfinite(error)) error = 1e30;  // a NaN output: poison that was never overwritten
    if (error > 1e-2) {
      int zeros = 0, first_bad = -1;
      for (int i = 0; i < in.n; ++i) {
        const float g = __bfloat162float(got_host[i]), w = __bfloat162float(want_host[i]);
        zeros += g == 0.f;
        if (first_bad < 0 && std::fabs(g - w) > 0.05f * (std::fabs(w) + 0.1f)) first_bad = i;
      }
      std::fprintf(stderr, "product %zu (n %d, k %d, %d rows per tile, %d tiles): relative error %.3g, %d zeros, "
                   "first bad output %d (tile %d)\n", static_cast<size_t>(&in - last.data()), in.n, in.k,
                   in.rows_per_tile, in.tiles, error, zeros, first_bad,
                   first_bad < 0 ? -1 : first_bad / in.rows_per_tile);
    }
    worst = std::max(worst, error);
    cudaFree(want);
  }
  check(cudaGetLastError(), "check");
  for (Instruction* d : device_programs) cudaFree(d);
  cudaFree(counters);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return {best, worst};
}

ProgramResult run_program(int stages, const Chain& c, int blocks, cudaStream_t stream) {
  switch (stages) {
    case 3: return run_program<3>(c, blocks, stream);
    case 4: return run_program<4>(c, blocks, stream);
    default: return run_program<6>(c, blocks, stream);
  }
}

// The same products as the decoder runs them today: one linear_small_many launch each (it
// streams the large ones), recorded as a chain; microseconds per pass.
double run_kernels(const Chain& c, cudaStream_t stream) {
  const int count = static_cast<int>(c.copies[0].size());
  const int passes = static_cast<int>(c.copies.size());
  const double per_launch = bench::time_chain(stream, count * passes, [&](int i) {
    const Instruction& in = c.copies[size_t(i / count)][size_t(i % count)];
    sf::cuda::SmallProduct p{};
    p.x = in.x;
    p.w = in.w;
    p.out = in.out;
    p.m = 1;
    p.n = in.n;
    p.k = in.k;
    sf::cuda::linear_small_many(sf::DType::bf16, &p, 1, stream);
  });
  return per_launch * count;
}

}  // namespace

int main(int argc, char** argv) {
  const int stages = argc > 1 ? std::atoi(argv[1]) : 6;
  const bench::Setup setup = bench::begin("stream_program", 120);
  cudaStream_t stream = setup.stream;
  cudaDeviceProp prop;
  check(cudaGetDeviceProperties(&prop, 0), "device");
  const int blocks = prop.multiProcessorCount;
  int per_sm = 0;
  check(cudaFuncSetAttribute(stream_program<6>, cudaFuncAttributeMaxDynamicSharedMemorySize, 6 * kStageBytes),
        "shared memory");
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, stream_program<6>, kThreads,
                                                      size_t(6) * kStageBytes),
        "occupancy");
  std::printf("program: %d blocks of %d threads, %d stages of %d kB (resident per SM: %d)\n\n", blocks,
              kThreads, stages, kStageBytes >> 10, per_sm);
  std::printf("| chain | products | weight MB | floor us | kernels us | program us | program of peak bw | program us/product | worst rel. error |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::mt19937 rng(7);
  struct Model {
    std::string name;
    std::vector<Product> chain;
    bool kernels;
  };
  std::vector<Product> latency;
  for (int i = 0; i < 100; ++i) latency.push_back({blocks, 64});
  const std::vector<Model> models = {
      {"latency: 100 x (1 row per block, K 64)", latency, false},
      {"d768 x 12 layers + head", model_chain(12, 768, 768, 2048, 50304), true},
      {"d768 x 12 layers, no head", model_chain(12, 768, 768, 2048, 0), true},
      {"d2048 x 24 layers + head", model_chain(24, 2048, 2048, 5632, 50304), true},
  };
  bool ok = true;
  for (const Model& m : models) {
    std::vector<Product> chain;
    for (const Product& p : m.chain)
      if (p.n > 0) chain.push_back(p);
    Chain c = make_chain(chain, blocks, rng);
    const ProgramResult program = run_program(stages, c, blocks, stream);
    const double kernels = m.kernels ? run_kernels(c, stream) : 0.0;
    const double floor_us = 1e6 * double(c.bytes) / setup.bandwidth;
    std::printf("| %s | %zu | %.1f | %.1f | %s | %.1f | %.0f%% | %.2f | %.2g |\n", m.name.c_str(), chain.size(),
                c.bytes / 1e6, floor_us, m.kernels ? std::to_string(kernels).substr(0, 7).c_str() : "-",
                program.us, 100.0 * floor_us / program.us, program.us / chain.size(), program.worst);
    std::fflush(stdout);
    ok = ok && program.worst < 1e-2;
    for (void* p : c.owned) cudaFree(p);
  }
  if (!ok) std::printf("\nFAILED: a product of the program differs from the plain kernel's\n");
  return ok ? 0 : 1;
}
