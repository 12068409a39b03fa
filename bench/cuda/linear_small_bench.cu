// linear_small_bench.cu — times the decode step's matrix-vector products (cuda::linear_small_many)
// on their own, shape by shape, as a decode step issues them: q/k/v with the attention norm
// fused, the output projection with its residual add, w1/w3 with the MLP norm, w2 with the SwiGLU
// gate and the residual add, and the output head with the final norm; for the 12-layer d768 and
// the 24-layer d2048 models, at 1 and 8 rows. Each case is a recorded chain of launches (CUDA
// graph, dependent launches unless SF_PDL=0) that cycles through enough copies of the weights
// (at least 256 MB) that they come from HBM, not the 50 MB L2, as in a real step. Prints one
// markdown row per case: microseconds per launch, the weight bytes it reads, the bandwidth that
// gives and its fraction of the peak bandwidth measured in the same run, and the memory floor
// (bytes / peak bandwidth) next to the launch floor (an empty kernel's chain).
// With SF_STEP_PROGRAM=1 each case is also timed as one step program (cuda/step_program.h): the
// same chain recorded while a program collects, so its launches become the instructions of one
// persistent kernel (the products that stream, linear_stream.cu, are launched as kernels either
// way); a "barrier" case of a tiny product then shows what an instruction costs beyond its bytes.
//   .devbin/linear_small_bench [launches per chain, default 120]
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "core/dtype.h"
#include "cuda/kernels.h"
#include "cuda/step_program.h"

namespace {

using bench::check;
using T = __nv_bfloat16;

// One product of a launch: N outputs over K inputs, with what is fused into it.
struct Shape {
  int64_t n, k;
  bool norm = false, gate = false, addend = false;
};

struct Case {
  std::string name;
  std::vector<Shape> products;  // one launch
  int64_t rows = 1;
};

// The buffers of one copy of a case's products: weights and what each reads and writes.
struct Buffers {
  std::vector<sf::cuda::SmallProduct> products;
  std::vector<void*> owned;
};

Buffers make_buffers(const Case& c, std::mt19937& rng) {
  Buffers b;
  auto take = [&](size_t count, float scale) {
    T* p = bench::device_random(count, rng, scale);
    b.owned.push_back(p);
    return p;
  };
  for (const Shape& s : c.products) {
    const float w_scale = 1.f / std::sqrt(static_cast<float>(s.k));
    sf::cuda::SmallProduct p{};
    p.x = take(size_t(c.rows * s.k), 1.f);
    p.w = take(size_t(s.n * s.k), w_scale);
    p.out = take(size_t(c.rows * s.n), 1.f);
    p.addend = s.addend ? p.out : nullptr;  // the residual add writes in place, as in decoding
    p.m = c.rows;
    p.n = s.n;
    p.k = s.k;
    if (s.norm) {
      p.norm = take(size_t(s.k), 1.f);
      p.eps = 1e-5f;
    }
    if (s.gate) p.gate = take(size_t(c.rows * s.k), 1.f);
    b.products.push_back(p);
  }
  return b;
}

// A device copy of `b`, its pointers into the new buffers.
Buffers clone(const Buffers& b, const Case& c) {
  Buffers copy = b;
  copy.owned.clear();
  auto duplicate = [&](const void* p, size_t count) -> void* {
    if (!p) return nullptr;
    void* q;
    check(cudaMalloc(&q, count * sizeof(T)), "malloc");
    check(cudaMemcpy(q, p, count * sizeof(T), cudaMemcpyDeviceToDevice), "copy");
    copy.owned.push_back(q);
    return q;
  };
  for (size_t i = 0; i < b.products.size(); ++i) {
    const sf::cuda::SmallProduct& p = b.products[i];
    sf::cuda::SmallProduct& q = copy.products[i];
    q.x = duplicate(p.x, size_t(c.rows * p.k));
    q.w = duplicate(p.w, size_t(p.n * p.k));
    q.out = duplicate(p.out, size_t(c.rows * p.n));
    q.addend = p.addend ? q.out : nullptr;
    q.norm = duplicate(p.norm, size_t(p.k));
    q.gate = duplicate(p.gate, size_t(c.rows * p.k));
  }
  return copy;
}

int64_t weight_bytes(const Case& c) {
  int64_t bytes = 0;
  for (const Shape& s : c.products) bytes += s.n * s.k * int64_t(sizeof(T));
  return bytes;
}

// Microseconds per launch of the case, cycling through enough weight copies to miss the L2.
// `programmed`: recorded while a step program collects (one persistent kernel for the chain).
double run_case(const Case& c, cudaStream_t stream, int launches, std::mt19937& rng, bool programmed) {
  const int64_t bytes = weight_bytes(c);
  // (at most 1024: the barrier case's 8 kB would ask for 32768)
  const int copies = static_cast<int>(std::clamp<int64_t>((int64_t(256) << 20) / bytes + 1, 2, 1024));
  // Copy 0 drawn at random, the others device copies of it (drawing 256 MB on the host is slow).
  std::vector<Buffers> sets{make_buffers(c, rng)};
  for (int i = 1; i < copies; ++i) sets.push_back(clone(sets[0], c));
  sf::cuda::StepProgram program;
  program.set_collecting(programmed);
  const double us = bench::time_chain(stream, launches, [&](int i) {
    const Buffers& b = sets[size_t(i % copies)];
    sf::cuda::linear_small_many(sf::DType::bf16, b.products.data(), static_cast<int>(b.products.size()),
                                stream, programmed ? &program : nullptr);
    if (i == launches - 1) program.flush(stream);
  });
  check(cudaStreamSynchronize(stream), "run");
  std::vector<void*> program_buffers = program.take_buffers();
  sf::cuda::StepProgram::free_buffers(program_buffers);
  for (Buffers& b : sets)
    for (void* p : b.owned) cudaFree(p);
  return us;
}

// The products of one layer and of the head of a model of width d, MLP width f, vocabulary v.
std::vector<Case> model_cases(const std::string& model, int64_t d, int64_t kv, int64_t f, int64_t v,
                              int64_t rows) {
  const std::string at = model + (rows > 1 ? ", " + std::to_string(rows) + " rows" : "");
  return {
      {at + ": q, k, v (+ norm)", {{d, d, true}, {kv, d, true}, {kv, d, true}}, rows},
      {at + ": wo (+ residual)", {{d, d, false, false, true}}, rows},
      {at + ": w1, w3 (+ norm)", {{f, d, true}, {f, d, true}}, rows},
      {at + ": w2 (+ gate, residual)", {{d, f, false, true, true}}, rows},
      {at + ": head (+ norm)", {{v, d, true}}, rows},
  };
}

}  // namespace

int main(int argc, char** argv) {
  const int launches = argc > 1 ? std::max(1, std::atoi(argv[1])) : 120;
  const bench::Setup setup = bench::begin("linear_small_many", launches);
  const cudaStream_t stream = setup.stream;
  const double bandwidth = setup.bandwidth;
  const bool programs = sf::cuda::step_programs_enabled();
  std::printf("| case | weight MB | us/launch | GB/s | of peak bw | memory floor us |%s\n",
              programs ? " program us/launch | program of peak bw |" : "");
  std::printf("|---|---|---|---|---|---|%s\n", programs ? "---|---|" : "");
  std::vector<Case> cases;
  // An instruction's cost beyond its bytes: 64 outputs over 64 inputs (8 kB), one block.
  if (programs) cases.push_back({"barrier: 64 x 64", {{64, 64}}, 1});
  for (int64_t rows : {1, 8}) {
    for (Case& c : model_cases("d768", 768, 768, 2048, 50304, rows)) cases.push_back(c);
    for (Case& c : model_cases("d2048", 2048, 2048, 5632, 50304, rows)) cases.push_back(c);
  }
  std::mt19937 rng(11);
  for (const Case& c : cases) {
    const double us = run_case(c, stream, launches, rng, false);
    const double bytes = static_cast<double>(weight_bytes(c));
    std::printf("| %s | %.2f | %.2f | %.0f | %.0f%% | %.2f |", c.name.c_str(), bytes / 1e6, us,
                bytes / us / 1e3, 100.0 * bytes / (us * 1e-6) / bandwidth, 1e6 * bytes / bandwidth);
    if (programs) {
      const double program_us = run_case(c, stream, launches, rng, true);
      std::printf(" %.2f | %.0f%% |", program_us, 100.0 * bytes / (program_us * 1e-6) / bandwidth);
    }
    std::printf("\n");
    std::fflush(stdout);
  }
  return 0;
}
